use crate::{Change, Position};

/// An ordered run of changes handed to every sink, and what applying it means
/// for progress.
///
/// Changes are in stream order. A batch may hold part of a transaction, one
/// transaction, or many; `through` says how far the stream is complete once
/// the batch is applied.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub changes: Vec<Change>,
    /// When `Some(p)`: once this batch and all before it are applied, the
    /// source's stream is complete through `p` (PostgreSQL: every change of
    /// every transaction that committed at or before the LSN `p`), so the
    /// source may acknowledge `p`. `None` for batches that end inside a
    /// transaction and for snapshot data.
    pub through: Option<Position>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Roughly the bytes of the batch's values (see [`Change::approx_bytes`]).
    pub fn approx_bytes(&self) -> usize {
        self.changes.iter().map(Change::approx_bytes).sum()
    }
}
