//! The subcommands.

pub mod check;
#[cfg(feature = "kafka")]
mod check_kafka;
pub mod run;
pub mod tail;
pub mod wait;
