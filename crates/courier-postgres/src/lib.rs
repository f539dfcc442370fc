//! PostgreSQL side of Courier.
pub mod catalog;
pub mod conn;
pub mod pgoutput;
pub mod replication;
pub mod setup;
pub mod types;

pub use conn::{HostAddr, PgConfig, PgError, Secret, ServerError, SslMode, TargetSessionAttrs};
pub use replication::{
    CreatedSlot, ReplicationClient, ReplicationMessage, ReplicationStream, SystemInfo,
};
pub mod snapshot;
