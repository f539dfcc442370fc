//! What the decoder's tests share: the test PostgreSQL and Courier's own
//! capture of it, the broker, the Kafka Connect worker, and folding
//! changes into rows by the version rule.

#![allow(dead_code)] // Each test binary uses part of it.

pub mod connect;
pub mod kafka;
pub mod pg;
pub mod rows;
pub mod skip;

/// A name no earlier run used (topics and slots outlive a run).
pub fn unique(base: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{base}_{}", millis % 10_000_000_000)
}
