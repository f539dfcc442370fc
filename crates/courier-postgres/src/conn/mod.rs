//! Connecting to PostgreSQL: validated settings ([`PgConfig`]), TLS per
//! [`SslMode`], authentication, and the one error type ([`PgError`]).
//!
//! Regular queries and COPY use a tokio-postgres client from
//! [`PgConfig::connect`]; the replication client drives the protocol
//! itself on top of the same settings.

mod config;
mod connect;
mod error;
mod secret;
pub(crate) mod startup;
mod tls;
mod transport;
pub(crate) mod wire;

pub use config::{PgConfig, SslMode};
pub(crate) use connect::open_wire;
pub use connect::SESSION_OPTIONS;
pub use error::{PgError, ServerError};
pub use secret::Secret;
