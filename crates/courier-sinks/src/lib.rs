//! Courier's sinks: one module per derived store, all built through
//! [`build_sink`] from the `[sinks.NAME]` tables of the configuration.

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
#[cfg(any(test, feature = "compliance"))]
pub mod compliance;
mod connect;
pub mod envelope;
mod failure;
pub mod file;
pub mod inspect;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(test)]
mod outage;
pub mod outbox;
pub mod preflight;
#[cfg(feature = "redis")]
pub mod redis;
mod registry;
#[cfg(feature = "search")]
pub mod search;
mod selection;
#[cfg(any(
    feature = "clickhouse",
    feature = "search",
    feature = "redis",
    feature = "kafka"
))]
mod settings;
#[cfg(test)]
mod skips;
pub mod stdout;

use std::path::PathBuf;

use courier_core::SinkErrorKind;

pub use registry::{build_inspector, build_sink, check_sink, OUTBOX_SINK_TYPES, SINK_TYPES};
pub use selection::{Segment, TableSelection};

/// A sink that cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting is wrong; the message names it and the fix.
    #[error("sinks.{sink}: {message}")]
    Config { sink: String, message: String },
    /// The sink's `type` is not one this build of Courier knows.
    #[error("sinks.{sink}: unknown type {kind:?}; expected one of: {}", SINK_TYPES.join(", "))]
    UnknownType { sink: String, kind: String },
    /// A pattern of the sink's `tables` setting is invalid.
    #[error(transparent)]
    Tables(#[from] courier_core::TablePatternError),
    /// A local file or directory the sink needs cannot be created or opened.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The store could not be reached or set up at start; `kind` says why
    /// (unreachable, timed out, ... as for [`courier_core::SinkError`]).
    #[error("sinks.{sink}: {message}")]
    Connect {
        sink: String,
        kind: SinkErrorKind,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl BuildError {
    /// Whether building the sink again later can succeed: a store that was
    /// unreachable, timed out, overloaded or unavailable at start, or a
    /// local I/O failure; never a configuration error.
    pub fn is_retriable(&self) -> bool {
        match self {
            BuildError::Connect { kind, .. } => kind.is_retriable(),
            BuildError::Io(_, e) => failure::of_io(e).0.is_retriable(),
            BuildError::Config { .. } | BuildError::UnknownType { .. } | BuildError::Tables(_) => {
                false
            }
        }
    }
}
