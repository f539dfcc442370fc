//! The initial snapshot: copies tables under a replication slot's exported
//! snapshot, so every row read carries the slot's consistent point as its
//! version (DESIGN §1.4), on several connections in parallel.
//!
//! Tables are split into chunks of heap pages (ctid ranges), the unit of
//! parallelism and of resuming: a chunk is recorded done only after every
//! sink applied its rows, so a crash resumes the remaining chunks.

mod binary_rows;
mod copy;
mod plan;
mod relation;

pub use copy::{copy_chunks, OutputError, SnapshotError, SnapshotOutput};
pub use plan::{Chunk, SnapshotPlan, TablePlan};
pub use relation::relation_from_catalog;
