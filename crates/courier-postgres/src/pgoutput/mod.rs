//! pgoutput, PostgreSQL's logical replication output plugin: the message
//! formats ([`message`]) and the [`Decoder`] that turns messages into
//! Courier's typed changes.

mod decoder;
mod error;
pub mod message;
pub mod streamed;
mod toast;
mod tuple;

pub use decoder::{DecodedEvent, Decoder, OutboxSources};
pub use error::DecodeError;
pub use streamed::{Replay, Routed, Streamed};
pub use toast::ToastGap;
