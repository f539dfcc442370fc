use std::sync::Arc;

use crate::{Lsn, Relation, Value};

/// A row's values, aligned with its relation's columns.
pub type Row = Vec<Value>;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read by a snapshot (envelope `r`).
    Read,
    /// `c`
    Insert,
    /// `u`
    Update,
    /// `d`
    Delete,
    /// The whole table was truncated (`t`); the change has no row.
    Truncate,
}

impl Op {
    /// The Debezium envelope's one-letter code.
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// One change to one row (or, for [`Op::Truncate`], to a whole table).
///
/// `version` is the commit LSN of the change's transaction, or the consistent
/// point of the snapshot that read it: sinks keep, per row, the change with
/// the greatest version, and later changes win ties.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub relation: Arc<Relation>,
    pub op: Op,
    /// The row before the change: the old row for updates and deletes when
    /// the table's replica identity provides it, else only its key columns
    /// (other columns `Null`), or `None` when PostgreSQL sent nothing.
    pub before: Option<Row>,
    /// The whole row after the change (inserts, updates, snapshot reads).
    pub after: Option<Row>,
    pub version: Lsn,
    /// The transaction id, or 0 for snapshot reads.
    pub xid: u32,
    /// Commit time in microseconds since the Unix epoch (snapshot reads:
    /// the time the snapshot was taken).
    pub commit_time_us: i64,
}

impl Change {
    /// Roughly the bytes of the change's values (see [`Value::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        let row = |r: &Option<Row>| r.iter().flatten().map(Value::approx_bytes).sum::<usize>();
        row(&self.before) + row(&self.after)
    }

    /// The row that identifies this change's key: `after` if present, else `before`.
    pub fn key_row(&self) -> Option<&Row> {
        self.after.as_ref().or(self.before.as_ref())
    }

    /// The key values, in key-column order.
    pub fn key_values(&self) -> Option<Vec<&Value>> {
        let row = self.key_row()?;
        Some(self.relation.key_indexes().map(|i| &row[i]).collect())
    }
}
