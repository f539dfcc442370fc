//! Which offsets a worker may commit: a partition's offset is committed only
//! once every sink applied every record before it.
//!
//! The pipeline acknowledges [`Position`]s (one per batch, in the order the
//! batches were sent); [`Progress`] remembers, per position, the offset each
//! partition reaches with that batch. When the watermark reaches a position,
//! every batch up to it is applied, so those offsets become committable.
//! Partitions the group takes away are forgotten at once: their batches
//! still in the queues are applied (harmless: versions decide, and the new
//! owner replays from the committed offset) but never committed from here.
//!
//! Beside the offsets, each batch remembers the record time of its first
//! record of each partition, so [`Progress::pending_since`] tells how old
//! the oldest record not yet applied by every sink is (the partition's lag
//! in time).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use courier_core::Position;

/// A topic's partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub topic: String,
    pub partition: i32,
}

impl Partition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Partition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// The records of one partition a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The record time (milliseconds since the epoch) of the first.
    pub first_ms: i64,
    /// The offset after the last (the next record to read).
    pub next: i64,
}

/// Offsets per batch position, and what is applied and committed.
#[derive(Debug, Default)]
pub struct Progress {
    /// The position of the newest batch sealed.
    sealed: Position,
    /// Batches sent and not yet applied by every sink: per position, the
    /// records of each partition the batch holds.
    in_flight: VecDeque<(Position, BTreeMap<Partition, Span>)>,
    /// Per owned partition: the next offset to read once everything applied
    /// is committed (Kafka's committed offset is the next record to read).
    applied: BTreeMap<Partition, i64>,
    /// Per owned partition: the offset last committed.
    committed: BTreeMap<Partition, i64>,
}

impl Progress {
    pub fn new() -> Self {
        Progress::default()
    }

    /// A batch holding, per partition, the records of its [`Span`]:
    /// returns the position the batch carries. A batch with no records
    /// still gets a position (it is acknowledged in order like any other).
    pub fn seal(&mut self, spans: BTreeMap<Partition, Span>) -> Position {
        self.sealed = Position(self.sealed.0 + 1);
        self.in_flight.push_back((self.sealed, spans));
        self.sealed
    }

    /// The record time of the oldest record of `partition` sent to the
    /// sinks and not yet applied by every one (`None` when there is none).
    pub fn pending_since(&self, partition: &Partition) -> Option<i64> {
        self.in_flight
            .iter()
            .find_map(|(_, spans)| spans.get(partition))
            .map(|s| s.first_ms)
    }

    /// The newest position sealed.
    pub fn sealed(&self) -> Position {
        self.sealed
    }

    /// Every sink applied every batch through `through`.
    pub fn acknowledge(&mut self, through: Position) {
        while self.in_flight.front().is_some_and(|(p, _)| *p <= through) {
            let Some((_, spans)) = self.in_flight.pop_front() else {
                break;
            };
            for (partition, span) in spans {
                // Only partitions still owned: `revoke` removed the others.
                if let Some(a) = self.applied.get_mut(&partition) {
                    *a = (*a).max(span.next);
                }
            }
        }
    }

    /// The group assigned these partitions to this worker.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = Partition>) {
        for p in partitions {
            self.applied.entry(p).or_insert(-1);
        }
    }

    /// The group took these partitions away: what was applied of them is
    /// returned (to commit now, before the new owner reads), and they are
    /// forgotten, including their records still in flight.
    pub fn revoke(&mut self, partitions: &[Partition]) -> Vec<(Partition, i64)> {
        let mut commit = Vec::new();
        for p in partitions {
            if let Some(next) = self.applied.remove(p) {
                if next >= 0 && self.committed.get(p).is_none_or(|c| *c < next) {
                    commit.push((p.clone(), next));
                }
            }
            self.committed.remove(p);
            for (_, offsets) in self.in_flight.iter_mut() {
                offsets.remove(p);
            }
        }
        commit
    }

    /// Offsets applied but not committed yet, for owned partitions.
    pub fn to_commit(&self) -> Vec<(Partition, i64)> {
        self.applied
            .iter()
            .filter(|(p, next)| **next >= 0 && self.committed.get(*p).is_none_or(|c| c < *next))
            .map(|(p, next)| (p.clone(), *next))
            .collect()
    }

    /// The broker accepted these commits.
    pub fn committed(&mut self, offsets: &[(Partition, i64)]) {
        for (p, next) in offsets {
            if self.applied.contains_key(p) {
                let c = self.committed.entry(p.clone()).or_insert(*next);
                *c = (*c).max(*next);
            }
        }
    }

    /// The broker refused these commits: they are to be committed again.
    pub fn commit_failed(&mut self, offsets: &[(Partition, i64)]) {
        for (p, next) in offsets {
            if self.committed.get(p).is_some_and(|c| c == next) {
                self.committed.remove(p);
            }
        }
    }

    /// The partitions owned now, each with the offset last committed from
    /// here (if any) and the next offset applied by every sink (if any).
    pub fn owned(&self) -> Vec<(Partition, Option<i64>, Option<i64>)> {
        self.applied
            .iter()
            .map(|(p, a)| {
                let applied = (*a >= 0).then_some(*a);
                (p.clone(), self.committed.get(p).copied(), applied)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        Partition::new("t", n)
    }

    fn offsets(v: &[(i32, i64)]) -> BTreeMap<Partition, Span> {
        v.iter()
            .map(|(n, o)| {
                let span = Span {
                    first_ms: 0,
                    next: *o,
                };
                (p(*n), span)
            })
            .collect()
    }

    #[test]
    fn offsets_become_committable_only_when_their_batch_is_applied() {
        let mut g = Progress::new();
        g.assign([p(0), p(1)]);
        let a = g.seal(offsets(&[(0, 10)]));
        let b = g.seal(offsets(&[(0, 20), (1, 5)]));
        assert_eq!(g.to_commit(), vec![]);
        g.acknowledge(a);
        assert_eq!(g.to_commit(), vec![(p(0), 10)]);
        g.committed(&[(p(0), 10)]);
        assert_eq!(g.to_commit(), vec![]);
        g.commit_failed(&[(p(0), 10)]);
        assert_eq!(
            g.to_commit(),
            vec![(p(0), 10)],
            "a refused commit is made again"
        );
        g.committed(&[(p(0), 10)]);
        g.acknowledge(b);
        assert_eq!(g.to_commit(), vec![(p(0), 20), (p(1), 5)]);
    }

    #[test]
    fn a_revoked_partition_commits_what_was_applied_and_nothing_after() {
        let mut g = Progress::new();
        g.assign([p(0), p(1)]);
        let a = g.seal(offsets(&[(0, 10), (1, 3)]));
        g.acknowledge(a);
        let b = g.seal(offsets(&[(0, 20), (1, 9)]));
        // Partition 1 moves to another worker while batch b is in flight.
        assert_eq!(g.revoke(&[p(1)]), vec![(p(1), 3)]);
        g.acknowledge(b);
        assert_eq!(
            g.to_commit(),
            vec![(p(0), 20)],
            "never a partition owned elsewhere"
        );
        // It comes back: only what is read from now on counts.
        g.assign([p(1)]);
        assert_eq!(g.to_commit(), vec![(p(0), 20)]);
        let c = g.seal(offsets(&[(1, 12)]));
        g.acknowledge(c);
        assert_eq!(g.to_commit(), vec![(p(0), 20), (p(1), 12)]);
    }

    #[test]
    fn positions_grow_and_empty_batches_are_acknowledged_in_order() {
        let mut g = Progress::new();
        g.assign([p(0)]);
        let a = g.seal(BTreeMap::new());
        let b = g.seal(offsets(&[(0, 4)]));
        assert!(b > a);
        g.acknowledge(a);
        assert_eq!(g.to_commit(), vec![]);
        g.acknowledge(b);
        assert_eq!(g.to_commit(), vec![(p(0), 4)]);
        assert_eq!(g.sealed(), b);
    }

    #[test]
    fn the_oldest_pending_record_is_the_first_of_the_oldest_batch_not_applied() {
        let mut g = Progress::new();
        g.assign([p(0), p(1)]);
        let span = |first_ms, next| Span { first_ms, next };
        let a = g.seal(BTreeMap::from([(p(0), span(1_000, 10))]));
        let b = g.seal(BTreeMap::from([
            (p(0), span(2_000, 20)),
            (p(1), span(2_500, 3)),
        ]));
        assert_eq!(g.pending_since(&p(0)), Some(1_000));
        assert_eq!(g.pending_since(&p(1)), Some(2_500));
        g.acknowledge(a);
        assert_eq!(g.pending_since(&p(0)), Some(2_000), "batch a is applied");
        g.revoke(&[p(1)]);
        assert_eq!(g.pending_since(&p(1)), None, "owned elsewhere now");
        g.acknowledge(b);
        assert_eq!(g.pending_since(&p(0)), None, "everything read is applied");
    }
}
