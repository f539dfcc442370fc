//! Courier's sinks: one module per derived store, all built through
//! [`build_sink`] from the `[sinks.NAME]` tables of the configuration.

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
#[cfg(any(test, feature = "compliance"))]
pub mod compliance;
pub mod envelope;
pub mod file;
#[cfg(feature = "redis")]
pub mod redis;
mod registry;
#[cfg(feature = "search")]
pub mod search;
mod selection;
#[cfg(any(feature = "clickhouse", feature = "search", feature = "redis"))]
mod settings;
pub mod stdout;

use std::path::PathBuf;

pub use registry::{build_sink, SINK_TYPES};
pub use selection::{Segment, TableSelection};

/// A sink that cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("sinks.{sink}: {message}")]
    Config { sink: String, message: String },
    #[error("sinks.{sink}: unknown type {kind:?}; expected one of: {}", SINK_TYPES.join(", "))]
    UnknownType { sink: String, kind: String },
    #[error(transparent)]
    Tables(#[from] courier_core::TablePatternError),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("sinks.{sink}: {message}")]
    Connect {
        sink: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}
