//! Exactly-once positions: what a transaction of the Kafka sink covered,
//! written to the compacted offsets topic inside that same transaction, and
//! read back at start.
//!
//! The record's key is the sink's transactional id; its value is
//! `{"through": <u64>, "in_progress": [<u64 version>, <count>] | null}`:
//! every change of every transaction that committed before `through` (the
//! end LSN of the last commit the transaction completed) is in the topics,
//! and of the transaction at version `in_progress[0]`, its first
//! `in_progress[1]` changes.

use std::time::{Duration, Instant};

use courier_core::{Change, Lsn, Op, SinkErrorKind};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::client::{Failure, METADATA_TIMEOUT};
use super::config::Settings;

/// How far the committed transactions of a sink reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommittedPosition {
    /// Every change of every transaction whose commit ended at or before
    /// this LSN is committed to the topics (changes whose version is below
    /// it). A restart may resume replication from here.
    pub through: Option<Lsn>,
    /// A transaction only partly committed: its version and how many of
    /// its changes (in stream order) are in the topics.
    pub in_progress: Option<(Lsn, u64)>,
}

impl CommittedPosition {
    pub(crate) fn to_json(self) -> Vec<u8> {
        serde_json::json!({
            "through": self.through.map(Lsn::as_u64),
            "through_lsn": self.through.map(|l| l.to_string()),
            "in_progress": self.in_progress.map(|(v, n)| [v.as_u64(), n]),
        })
        .to_string()
        .into_bytes()
    }

    fn from_json(bytes: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let in_progress = match &v["in_progress"] {
            serde_json::Value::Array(a) if a.len() == 2 => {
                Some((Lsn(a[0].as_u64()?), a[1].as_u64()?))
            }
            _ => None,
        };
        Some(CommittedPosition {
            through: v["through"].as_u64().map(Lsn),
            in_progress,
        })
    }
}

/// Decides which replayed changes a restarted sink leaves out because a
/// committed transaction already holds them, and tracks the position the
/// next transaction covers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fence {
    /// What was committed when the sink started.
    committed: CommittedPosition,
    /// The position after everything applied so far.
    pub position: CommittedPosition,
    /// The version of the last change this process's stream delivered, and
    /// how many changes of that version it delivered: a restarted stream
    /// replays a transaction from its first change, whatever was committed.
    seen: Option<(Lsn, u64)>,
}

impl Fence {
    pub fn new(committed: CommittedPosition) -> Self {
        Fence {
            committed,
            position: committed,
            seen: None,
        }
    }

    /// Counts `change` into the position; `true` when it is already
    /// committed and must not be written again. Snapshot reads are never
    /// left out (a resumed snapshot may write rows again).
    pub fn already_committed(&mut self, change: &Change) -> bool {
        if change.op() == Op::Read {
            return false;
        }
        let v = change.version();
        let count = match self.seen {
            Some((cur, n)) if cur == v => n + 1,
            _ => 1,
        };
        self.seen = Some((v, count));
        if self.committed.through.is_some_and(|t| v < t) {
            return true;
        }
        let committed = match self.committed.in_progress {
            Some((cv, n)) if cv == v => n,
            _ => 0,
        };
        // A group of left-out changes only must not commit a smaller count.
        self.position.in_progress = Some((v, count.max(committed)));
        count <= committed
    }

    /// What was committed when the sink started: every transaction below
    /// this version, whole.
    pub fn committed_through(&self) -> Option<Lsn> {
        self.committed.through
    }

    /// Records that a batch completed every transaction ending at or
    /// before `through`.
    ///
    /// The position never moves back: a restarted stream replays from the
    /// slot, which may lag what Kafka already holds, and its first batches
    /// complete commits below the committed position. Writing their
    /// `through` would make the next restart write those changes again.
    pub fn through(&mut self, through: Lsn) {
        if self.position.through.is_some_and(|t| t >= through) {
            return;
        }
        self.position.through = Some(through);
        if self.position.in_progress.is_some_and(|(v, _)| v < through) {
            self.position.in_progress = None;
        }
    }
}

/// Reads the sink's last committed position from the offsets topic, with a
/// `read_committed` consumer, so an aborted or still-open transaction's
/// position never counts. `None` when nothing was committed yet.
pub(crate) async fn read(settings: &Settings) -> Result<Option<CommittedPosition>, Failure> {
    let Some((id, topic)) = settings.exactly_once.clone() else {
        return Ok(None);
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{id}-offsets-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    for (k, v) in &settings.client {
        config.set(k, v);
    }
    let deadline = settings.delivery_timeout + METADATA_TIMEOUT;
    super::client::blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let md = consumer.fetch_metadata(Some(&topic), METADATA_TIMEOUT)?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut list = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, p, METADATA_TIMEOUT)?;
            if high > low {
                list.add_partition_offset(&topic, p, Offset::Beginning)?;
                ends.push((p, high));
            }
        }
        if ends.is_empty() {
            return Ok(None);
        }
        consumer.assign(&list)?;
        let mut last = None;
        let started = Instant::now();
        loop {
            let position = consumer.position()?;
            let done = ends.iter().all(|(p, high)| {
                position
                    .find_partition(&topic, *p)
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= *high)
            });
            if done || started.elapsed() > deadline {
                break;
            }
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m?;
                if m.key() == Some(id.as_bytes()) {
                    last = m.payload().and_then(CommittedPosition::from_json);
                }
            }
        }
        Ok(last)
    })
    .await
    .map_err(|f| Failure {
        kind: if f.kind.is_retriable() {
            f.kind
        } else {
            SinkErrorKind::Config
        },
        message: format!("read the exactly-once position: {}", f.message),
        code: f.code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::fixtures::{change, table};

    #[test]
    fn a_restart_leaves_out_exactly_what_was_committed() {
        let rel = table("public", "t");
        let c = |id, lsn| change(&rel, Op::Insert, id, "x", lsn);
        let committed = CommittedPosition {
            through: Some(Lsn(20)),
            in_progress: Some((Lsn(30), 2)),
        };
        let mut fence = Fence::new(committed);
        let replay = [
            c(1, 10),
            c(2, 19),
            c(3, 20),
            c(4, 30),
            c(5, 30),
            c(6, 30),
            c(7, 40),
        ];
        let sent: Vec<bool> = replay.iter().map(|c| !fence.already_committed(c)).collect();
        // A transaction whose commit LSN equals `through` began after it.
        assert_eq!(sent, [false, false, true, false, false, true, true]);
        fence.through(Lsn(45));
        assert_eq!(fence.position.through, Some(Lsn(45)));
        assert_eq!(fence.position.in_progress, None);
        let round = CommittedPosition::from_json(&committed.to_json());
        assert_eq!(round, Some(committed));
    }

    #[test]
    fn a_replay_from_behind_the_committed_position_never_commits_a_smaller_one() {
        let rel = table("public", "t");
        let committed = CommittedPosition {
            through: Some(Lsn(50)),
            in_progress: None,
        };
        let mut fence = Fence::new(committed);
        // The slot lagged: the stream replays commits ending at 20 and 40,
        // all left out, then a new one.
        assert!(fence.already_committed(&change(&rel, Op::Insert, 1, "x", 10)));
        fence.through(Lsn(20));
        assert!(fence.already_committed(&change(&rel, Op::Insert, 2, "x", 30)));
        fence.through(Lsn(40));
        assert_eq!(
            fence.position, committed,
            "a group of replayed changes commits the position it found"
        );
        assert!(!fence.already_committed(&change(&rel, Op::Insert, 3, "x", 60)));
        assert_eq!(fence.position.in_progress, Some((Lsn(60), 1)));
        fence.through(Lsn(70));
        assert_eq!(fence.position.through, Some(Lsn(70)));
        assert_eq!(fence.position.in_progress, None);
    }

    #[test]
    fn a_replay_that_starts_with_the_partly_committed_transaction_skips_its_committed_part() {
        let rel = table("public", "t");
        let c = |id| change(&rel, Op::Insert, id, "x", 30);
        let committed = CommittedPosition {
            through: Some(Lsn(20)),
            in_progress: Some((Lsn(30), 2)),
        };
        let mut fence = Fence::new(committed);
        assert!(fence.already_committed(&c(4)));
        // A group holding only left-out changes keeps the committed count.
        assert_eq!(fence.position.in_progress, Some((Lsn(30), 2)));
        assert!(fence.already_committed(&c(5)));
        assert!(!fence.already_committed(&c(6)));
        assert_eq!(fence.position.in_progress, Some((Lsn(30), 3)));
    }
}
