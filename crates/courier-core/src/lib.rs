//! The vocabulary every part of Courier shares: positions in the WAL ([`Lsn`]),
//! how far a source's stream is complete ([`Position`]),
//! tables and their columns ([`Relation`]), typed values ([`Value`]), row
//! changes ([`Change`]) grouped into [`Batch`]es, the [`Sink`] contract that
//! every derived store implements, the ack [`Watermark`], and the
//! [`StateStore`] where Courier keeps its own progress, and the [`version`]
//! rule that decides which change to a row a store keeps.

mod batch;
mod change;
mod filter;
mod lsn;
mod position;
mod relation;
mod sink;
pub mod state;
mod value;
pub mod version;
mod watermark;

pub use batch::Batch;
pub use change::{Change, Op, OutboxSource, Row, RowShapeError};
pub use filter::{TableFilter, TablePatternError};
pub use lsn::{Lsn, ParseLsnError};
pub use position::Position;
pub use relation::{quote_ident, Column, PgType, Relation, TableId, MESSAGE_SCHEMA};
pub use sink::{Grouping, Refresh, Sink, SinkError, SinkErrorKind, Visibility};
pub use state::{LocalStateStore, StateError, StateStore};
pub use value::{write_json_string, Value};
pub use watermark::Watermark;
