//! Cutting the stream of changes into batches, and deciding how far each
//! batch lets the slot move (its `through`): only to the end of a commit
//! the batch completes, or to an idle keepalive's position between
//! transactions. Pure logic: the stream does the I/O.

use std::time::Duration;

use courier_core::{Batch, Change, Lsn, Position};
use courier_postgres::pgoutput::ToastGap;
use tokio::time::Instant;

use crate::config::PipelineConfig;

/// Collects changes into batches for the fan-out.
pub struct Batcher {
    changes: Vec<Change>,
    /// Updates among `changes` whose unchanged TOAST values are still to be
    /// read, by index: read together just before the batch goes out.
    gaps: Vec<(usize, ToastGap)>,
    /// Bytes of the changes' values, roughly (see `Change::approx_bytes`).
    bytes: usize,
    started: Option<Instant>,
    /// End LSN of the newest commit seen (or idle keepalive position).
    complete_through: Lsn,
    /// The newest `through` handed out.
    sent_through: Lsn,
    in_transaction: bool,
    max: usize,
    max_bytes: usize,
    delay: Duration,
}

/// A batch ready to go out once its TOAST gaps (by change index) are filled.
pub struct Pending {
    pub batch: Batch,
    pub gaps: Vec<(usize, ToastGap)>,
}

/// What an unchanged TOAST value counts for in a batch's size until it is
/// read: PostgreSQL moves values out of line from about 2 KB on.
const TOAST_VALUE_BYTES: usize = 2048;

impl Batcher {
    /// A batcher resuming at `start` (everything before it is acknowledged).
    pub fn new(start: Lsn, config: &PipelineConfig) -> Self {
        Batcher {
            changes: Vec::with_capacity(config.batch_changes),
            gaps: Vec::new(),
            bytes: 0,
            started: None,
            complete_through: start,
            sent_through: start,
            in_transaction: false,
            max: config.batch_changes,
            max_bytes: config.batch_bytes,
            delay: config.batch_delay,
        }
    }

    /// A transaction begins.
    pub fn begin(&mut self) {
        self.in_transaction = true;
    }

    /// Adds a whole change.
    pub fn push(&mut self, c: Change) {
        if self.changes.is_empty() {
            self.started = Some(Instant::now());
        }
        self.bytes += c.approx_bytes();
        self.changes.push(c);
    }

    /// Adds a change whose unchanged TOAST values are still to be read.
    pub fn push_partial(&mut self, c: Change, gap: ToastGap) {
        self.bytes += gap.columns() * TOAST_VALUE_BYTES;
        self.gaps.push((self.changes.len(), gap));
        self.push(c);
    }

    /// The transaction ended; the stream may resume from `end_lsn`.
    pub fn commit(&mut self, end_lsn: Lsn) {
        self.in_transaction = false;
        self.complete_through = self.complete_through.max(end_lsn);
    }

    /// The server's WAL end is `wal_end`. Between transactions everything
    /// up to it has been received, so once the sinks applied what is queued
    /// the slot may move there and an idle source retains no WAL. Returns
    /// whether an (empty) batch should go out now to carry it.
    pub fn keepalive(&mut self, wal_end: Lsn) -> bool {
        if self.in_transaction || wal_end <= self.complete_through {
            return false;
        }
        self.complete_through = wal_end;
        self.changes.is_empty()
    }

    /// The batch reached its size in changes or bytes.
    pub fn is_full(&self) -> bool {
        self.changes.len() >= self.max || self.bytes >= self.max_bytes
    }

    /// The oldest change has waited `batch_delay`.
    pub fn is_due(&self) -> bool {
        self.started.is_some_and(|s| s.elapsed() >= self.delay)
    }

    /// Between transactions, with a commit not yet handed out: a batch
    /// closed now carries whole transactions.
    pub fn has_unsent_commit(&self) -> bool {
        !self.in_transaction && self.complete_through > self.sent_through
    }

    /// There are changes, or a position, not yet handed out.
    pub fn has_unsent(&self) -> bool {
        !self.changes.is_empty() || self.complete_through > self.sent_through
    }

    /// The batch so far; its `through` is set when it completes a commit
    /// (or carries an idle position) not handed out before.
    pub fn take(&mut self) -> Pending {
        self.started = None;
        self.bytes = 0;
        let through = (self.complete_through > self.sent_through).then_some(self.complete_through);
        if let Some(t) = through {
            self.sent_through = t;
        }
        Pending {
            batch: Batch {
                changes: std::mem::replace(&mut self.changes, Vec::with_capacity(self.max)),
                through: through.map(Position::from),
            },
            gaps: std::mem::take(&mut self.gaps),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use courier_core::{Column, Op, PgType, Relation, TableId, Value};

    use super::*;

    fn config(max: usize, max_bytes: usize) -> PipelineConfig {
        PipelineConfig {
            batch_changes: max,
            batch_bytes: max_bytes,
            batch_delay: Duration::from_millis(20),
            queue_batches: 8,
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    fn change(version: u64, text: &str) -> Change {
        let relation = Arc::new(Relation {
            oid: 1,
            id: TableId::new("public", "t"),
            columns: vec![Column {
                name: "body".into(),
                type_oid: 25,
                type_modifier: -1,
                type_name: "text".into(),
                pg_type: PgType::Text,
                nullable: true,
                is_key: false,
            }],
        });
        let after = Some(vec![Value::Text(text.into())]);
        Change::new(relation, Op::Insert, None, after, Lsn(version), 1, 0)
            .expect("one value for one column")
    }

    fn through(p: &Pending) -> Option<u64> {
        p.batch.through.map(|p| p.0)
    }

    #[test]
    fn a_batch_inside_a_transaction_acknowledges_nothing() {
        let mut b = Batcher::new(Lsn(100), &config(2, 1 << 20));
        b.begin();
        b.push(change(200, "a"));
        b.push(change(200, "b"));
        assert!(b.is_full());
        let first = b.take();
        assert_eq!((first.batch.len(), through(&first)), (2, None));
        b.push(change(200, "c"));
        b.commit(Lsn(210));
        let second = b.take();
        assert_eq!((second.batch.len(), through(&second)), (1, Some(210)));
        assert!(!b.has_unsent());
    }

    #[test]
    fn many_transactions_in_one_batch_acknowledge_the_last_commit() {
        let mut b = Batcher::new(Lsn(0), &config(100, 1 << 20));
        for (v, end) in [(10, 15), (20, 25), (30, 35)] {
            b.begin();
            b.push(change(v, "x"));
            b.commit(Lsn(end));
        }
        assert_eq!(through(&b.take()), Some(35));
    }

    #[test]
    fn an_idle_keepalive_moves_the_position_between_transactions_only() {
        let mut b = Batcher::new(Lsn(100), &config(100, 1 << 20));
        assert!(b.keepalive(Lsn(150)), "idle and empty: send a position now");
        assert_eq!(through(&b.take()), Some(150));
        assert!(!b.keepalive(Lsn(140)), "never backwards");
        b.begin();
        b.push(change(300, "x"));
        assert!(!b.keepalive(Lsn(400)), "inside a transaction");
        assert_eq!(through(&b.take()), None);
        b.commit(Lsn(310));
        // Changes are waiting: the position rides with them.
        b.push(change(320, "y"));
        b.commit(Lsn(330));
        assert!(!b.keepalive(Lsn(500)));
        let p = b.take();
        assert_eq!((p.batch.len(), through(&p)), (1, Some(500)));
    }

    #[test]
    fn only_whole_transactions_close_a_batch_early() {
        let mut b = Batcher::new(Lsn(100), &config(100, 1 << 20));
        assert!(!b.has_unsent_commit());
        b.begin();
        b.push(change(200, "a"));
        assert!(!b.has_unsent_commit(), "inside a transaction");
        b.commit(Lsn(210));
        assert!(b.has_unsent_commit());
        b.begin();
        assert!(!b.has_unsent_commit(), "the next one began");
        b.push(change(220, "b"));
        b.commit(Lsn(230));
        assert_eq!(through(&b.take()), Some(230));
        assert!(!b.has_unsent_commit());
    }

    #[test]
    fn wide_rows_fill_a_batch_by_bytes() {
        let mut b = Batcher::new(Lsn(0), &config(1000, 1000));
        b.push(change(1, &"x".repeat(600)));
        assert!(!b.is_full());
        b.push(change(1, &"x".repeat(600)));
        assert!(b.is_full());
        b.take();
        assert!(!b.is_full(), "bytes are counted per batch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_due_batch_delay_after_its_first_change() {
        let mut b = Batcher::new(Lsn(0), &config(1000, 1 << 20));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!b.is_due(), "an empty batch is never due");
        b.push(change(1, "x"));
        assert!(!b.is_due());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(b.is_due());
        b.take();
        assert!(!b.is_due());
    }
}
