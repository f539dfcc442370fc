use std::fmt;

use crate::Lsn;

/// How far a source's stream is complete: what a batch's `through` carries
/// and what the ack [`crate::Watermark`] holds per sink.
///
/// Positions only ever grow within a run, and each source gives them its own
/// meaning: for PostgreSQL it is the WAL position itself (the end of the
/// last commit a batch completes, which the slot is then told it may
/// forget), for the Kafka source it numbers the source's batches in the
/// order they were sent (the source keeps, per number, the offsets to
/// commit once every sink has applied it).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// Nothing applied yet.
    pub const ZERO: Position = Position(0);

    /// The position as a WAL position: meaningful only for a PostgreSQL source.
    pub fn as_lsn(self) -> Lsn {
        Lsn(self.0)
    }
}

impl From<Lsn> for Position {
    fn from(l: Lsn) -> Self {
        Position(l.0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
