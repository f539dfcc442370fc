//! Logging (to standard error, never standard output) and the metrics recorder.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Sets up logging: `RUST_LOG` (or `COURIER_LOG`) filters, default `info`;
/// `COURIER_LOG_FORMAT=json` for JSON lines.
pub fn init_logging() {
    let filter = std::env::var("COURIER_LOG")
        .ok()
        .map(EnvFilter::new)
        .unwrap_or_else(|| {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var("COURIER_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The Prometheus recorder, installed on first use. The consistency
/// window's latencies are histograms (`_bucket`, `_sum`, `_count`).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for name in [
                crate::window::APPLIED_SECONDS,
                crate::window::VISIBLE_SECONDS,
            ] {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_string()), crate::window::BUCKETS)
                    .ok()?;
            }
            builder = builder
                .set_buckets_for_metric(
                    Matcher::Full(crate::window::WAKEUP_SECONDS.to_string()),
                    crate::window::WAKEUP_BUCKETS,
                )
                .ok()?;
            builder.install_recorder().ok()
        })
        .clone()
}
