//! The subcommands.

pub mod check;
mod check_failover;
#[cfg(feature = "kafka")]
mod check_kafka;
mod progress_line;
pub mod rebuild;
pub mod run;
pub mod tail;
pub mod verify;
pub mod wait;
