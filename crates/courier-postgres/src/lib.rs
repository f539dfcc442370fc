//! PostgreSQL side of Courier.
pub mod setup;
pub mod catalog;
pub mod pgoutput;
pub mod types;
pub mod conn;
pub mod replication;

pub use conn::{PgConfig, PgError, Secret, ServerError, SslMode};
pub use replication::{
    CreatedSlot, ReplicationClient, ReplicationMessage, ReplicationStream, SystemInfo,
};
pub mod snapshot;
