//! The logical replication client: a `replication=database` connection
//! ([`ReplicationClient`]) for slot commands, which turns into a
//! [`ReplicationStream`] of pgoutput messages and keepalives.

mod client;
mod command;
mod stream;

pub use client::{CreatedSlot, ReplicationClient, SystemInfo};
pub use stream::{ReplicationMessage, ReplicationStream};
