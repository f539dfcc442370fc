//! Courier's Kafka source: records of change topics (Courier's own and
//! Debezium's) turned back into [`courier_core::Change`]s, so a worker
//! applies them to its sinks exactly as a capture from PostgreSQL would.

pub mod decode;
pub mod progress;

pub use decode::{DecodeError, DecodeErrorKind, Decoder, Format, Record};
