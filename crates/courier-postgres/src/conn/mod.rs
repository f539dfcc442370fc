//! Connecting to PostgreSQL: validated settings ([`PgConfig`]), the host a
//! connection lands on ([`TargetSessionAttrs`]), TLS per [`SslMode`],
//! authentication, and the one error type ([`PgError`]).
//!
//! Regular queries and COPY use a tokio-postgres client from
//! [`PgConfig::connect`]; the replication client drives the protocol
//! itself on top of the same settings.

mod config;
mod connect;
mod error;
mod secret;
pub(crate) mod startup;
mod target;
mod tls;
mod transport;
pub(crate) mod wire;

pub use config::{HostAddr, PgConfig, SslMode};
pub(crate) use connect::open_wire;
pub use connect::SESSION_OPTIONS;
pub use error::{PgError, ServerError};
pub use secret::Secret;
pub(crate) use target::connect_first;
pub use target::{HostAttempt, HostRejection, ServerRole, TargetSessionAttrs};
