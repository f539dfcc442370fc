//! What the admin API shows: the source's position, each sink's progress,
//! and snapshot progress. The pipeline writes it; the API reads it through
//! [`Status::report`], which changes nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use courier_core::{Lsn, Position, Watermark};
use serde::Serialize;

use crate::window::{WindowReport, Windows};

/// Shared, cheap-to-clone pipeline status.
#[derive(Clone)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
    /// Per-sink applied positions (the ack watermark).
    pub watermark: Watermark,
    /// Per-sink applied and visible positions, for the wait API, and the
    /// commit → applied / visible latencies.
    pub windows: Windows,
}

#[derive(Default)]
struct Inner {
    source: SourceStatus,
    sinks: BTreeMap<String, SinkProgress>,
    snapshot: BTreeMap<String, TableSnapshotStatus>,
    streaming: bool,
    /// A PostgreSQL source's role among the Couriers of its slot.
    role: Option<Role>,
    /// The position and commit time of the newest change received
    /// (PostgreSQL: the newest transaction's commit LSN).
    newest_commit: (Position, i64),
    /// Whether positions are LSNs (a PostgreSQL source).
    positions_are_lsns: bool,
}

/// A PostgreSQL source's role among the `courier run` processes of its
/// slot (see `leadership`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Captures the slot (or prepares to).
    Leader,
    /// Waits for the leader to stop, to take over.
    Standby,
}

/// The source side of `/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SourceStatus {
    /// `postgres` or `kafka`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub slot: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub publication: String,
    pub confirmed_flush_lsn: Option<String>,
    pub server_wal_lsn: Option<String>,
    pub retained_wal_bytes: Option<u64>,
    /// The slot's `wal_status` (`reserved`, `extended`, `unreserved`, `lost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_wal_status: Option<String>,
    /// WAL that may still be written before the slot is in danger of being
    /// invalidated (`safe_wal_size`; absent when `max_slot_wal_keep_size` is -1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_safe_wal_bytes: Option<i64>,
    pub connected: bool,
    /// The newest position Courier reported to PostgreSQL as applied: a
    /// restart replays from here.
    pub acknowledged_lsn: Option<String>,
    /// A Kafka source's group and partitions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaStatus>,
}

/// A Kafka worker's place in its group.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KafkaStatus {
    pub group: String,
    /// Rebalances this worker went through since it started.
    pub rebalances: u64,
    /// Records this worker could not decode and wrote to
    /// `source.dead_letter_topic` since it started.
    pub dead_letters: u64,
    /// The partitions this worker owns now.
    pub partitions: Vec<PartitionStatus>,
}

/// One partition a Kafka worker owns.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (the next record a restart reads).
    pub committed_offset: Option<i64>,
    /// The next offset every sink has applied through.
    pub applied_offset: Option<i64>,
    /// The partition's end (the offset the next record gets).
    pub high_watermark: Option<i64>,
    /// Records in the partition not yet applied by every sink.
    pub lag_records: Option<i64>,
    /// How far behind the partition is in time: now minus the record time
    /// (the producer's timestamp; for Courier's topics the commit time)
    /// of the oldest record the worker read and not every sink applied;
    /// 0 when every record read is applied. Records not read yet count
    /// from when their first is read (their number is in `lag_records`).
    pub lag_ms: u64,
    /// The record time of that oldest record (what `lag_ms` is measured
    /// from when the report is made).
    #[serde(skip)]
    pub pending_since_ms: Option<i64>,
}

/// Where a sink is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkState {
    /// Not connected yet.
    #[default]
    Starting,
    /// The store could not be reached at start; Courier keeps trying.
    Connecting,
    /// Applying batches.
    Running,
    /// The last apply failed with an error that may pass; retrying.
    Retrying,
    /// A fatal error: Courier stops.
    Failed,
}

/// What the pipeline records of one sink.
#[derive(Clone, Default)]
struct SinkProgress {
    kind: String,
    events: u64,
    errors: u64,
    state: SinkState,
    last_error: Option<String>,
    /// Commit time of the newest streamed change applied.
    applied_commit_time_us: i64,
}

/// One sink in `/v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SinkStatus {
    #[serde(rename = "type")]
    pub kind: String,
    /// PostgreSQL source: the LSN through which the sink applied everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_lsn: Option<String>,
    /// Kafka source: the batch through which the sink applied everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_batch: Option<u64>,
    /// PostgreSQL source: WAL bytes between the server's position and the sink's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    pub lag_ms: u64,
    pub events: u64,
    pub errors: u64,
    pub state: SinkState,
    pub last_error: Option<String>,
    /// PostgreSQL source: the LSN through which the sink's readers see
    /// everything (a search index: refreshed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visible_lsn: Option<String>,
    /// Commit → applied and commit → visible over the last minute.
    pub window: WindowMs,
}

/// Latencies of the last minute, in ms (`null` without transactions):
/// within 10% (log-scale buckets).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WindowMs {
    pub applied_p50_ms: Option<f64>,
    pub applied_p95_ms: Option<f64>,
    pub applied_p99_ms: Option<f64>,
    pub visible_p50_ms: Option<f64>,
    pub visible_p95_ms: Option<f64>,
    pub visible_p99_ms: Option<f64>,
}

/// Snapshot progress of one table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TableSnapshotStatus {
    pub rows_done: u64,
    pub rows_estimated: u64,
    pub state: String,
}

/// The `/v1/status` document at one instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    pub streaming: bool,
    /// PostgreSQL source: `leader` or `standby`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub source: SourceStatus,
    pub sinks: BTreeMap<String, SinkStatus>,
    pub snapshot: BTreeMap<String, TableSnapshotStatus>,
}

impl Status {
    /// A PostgreSQL source's status for the named sinks `(name, type)`,
    /// every one at `start`.
    pub fn new(slot: &str, publication: &str, sinks: &[(String, String)], start: Lsn) -> Self {
        let source = SourceStatus {
            kind: "postgres",
            slot: slot.into(),
            publication: publication.into(),
            ..Default::default()
        };
        let status = Status::with_source(source, sinks, start.into(), true);
        status.set_role(Role::Leader);
        status
    }

    /// A Kafka worker's status (group `group`) for the named sinks.
    pub fn for_kafka(group: &str, sinks: &[(String, String)]) -> Self {
        let source = SourceStatus {
            kind: "kafka",
            kafka: Some(KafkaStatus {
                group: group.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Status::with_source(source, sinks, Position::ZERO, false)
    }

    fn with_source(
        source: SourceStatus,
        sinks: &[(String, String)],
        start: Position,
        positions_are_lsns: bool,
    ) -> Self {
        let inner = Inner {
            source,
            positions_are_lsns,
            sinks: sinks
                .iter()
                .map(|(n, k)| {
                    let progress = SinkProgress {
                        kind: k.clone(),
                        ..Default::default()
                    };
                    (n.clone(), progress)
                })
                .collect(),
            ..Default::default()
        };
        Status {
            inner: Arc::new(Mutex::new(inner)),
            watermark: Watermark::new(sinks.iter().map(|(n, _)| n.clone()), start),
            windows: Windows::new(sinks.iter().map(|(n, _)| n.as_str()), start),
        }
    }

    /// Whether positions are WAL positions (a PostgreSQL source), so that
    /// an application can wait for its own commit.
    pub fn positions_are_lsns(&self) -> bool {
        self.with(|i| i.positions_are_lsns)
    }

    /// Moves every sink to at least `position` (a new slot's consistent point).
    pub fn advance_all(&self, position: Position) {
        self.watermark.advance_all(position);
        self.windows.advance_all(position);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_streaming(&self, on: bool) {
        self.with(|i| {
            i.streaming = on;
            i.source.connected = on;
        });
    }

    pub fn is_streaming(&self) -> bool {
        self.with(|i| i.streaming)
    }

    pub fn set_role(&self, role: Role) {
        self.with(|i| i.role = Some(role));
    }

    /// Whether this process waits for another to stop (a standby).
    pub fn is_standby(&self) -> bool {
        self.with(|i| i.role == Some(Role::Standby))
    }

    pub fn set_source_positions(&self, confirmed: Option<Lsn>, server: Option<Lsn>) {
        self.with(|i| {
            i.source.confirmed_flush_lsn = confirmed.map(|l| l.to_string());
            i.source.server_wal_lsn = server.map(|l| l.to_string());
            i.source.retained_wal_bytes = match (confirmed, server) {
                (Some(c), Some(s)) => Some(s.0.saturating_sub(c.0)),
                _ => None,
            };
        });
    }

    /// Records how close PostgreSQL is to invalidating the slot.
    pub fn set_slot_safety(&self, wal_status: Option<String>, safe_wal_bytes: Option<i64>) {
        self.with(|i| {
            i.source.slot_wal_status = wal_status;
            i.source.slot_safe_wal_bytes = safe_wal_bytes;
        });
    }

    /// Records the position last reported to PostgreSQL as applied.
    pub fn set_acknowledged(&self, lsn: Lsn) {
        self.with(|i| i.source.acknowledged_lsn = Some(lsn.to_string()));
    }

    /// The position last reported to PostgreSQL as applied, if any.
    pub fn acknowledged(&self) -> Option<Lsn> {
        self.with(|i| i.source.acknowledged_lsn.as_deref()?.parse().ok())
    }

    /// The newest change received: its position (PostgreSQL: its
    /// transaction's commit LSN) and commit time.
    pub fn note_commit_received(&self, position: Position, commit_time_us: i64) {
        self.with(|i| i.newest_commit = (position, commit_time_us));
    }

    /// A Kafka worker's partitions now, and the rebalances so far.
    pub fn set_kafka_partitions(&self, partitions: Vec<PartitionStatus>, rebalances: u64) {
        self.with(|i| {
            if let Some(k) = i.source.kafka.as_mut() {
                k.partitions = partitions;
                k.rebalances = rebalances;
            }
        });
    }

    /// A Kafka worker wrote a record of `topic` it could not decode to its
    /// dead-letter topic.
    pub fn kafka_dead_letter(&self, topic: &str) {
        metrics::counter!("courier_kafka_dead_letters_total", "topic" => topic.to_string())
            .increment(1);
        self.with(|i| {
            if let Some(k) = i.source.kafka.as_mut() {
                k.dead_letters += 1;
            }
        });
    }

    /// `sink` applied `events` changes and everything through `through`;
    /// `commit_time_us` is the commit time of the newest streamed change.
    pub fn sink_applied(
        &self,
        sink: &str,
        through: Option<Position>,
        events: u64,
        commit_time_us: Option<i64>,
    ) {
        if let Some(l) = through {
            self.watermark.advance(sink, l);
        }
        self.with(|i| {
            if let Some(s) = i.sinks.get_mut(sink) {
                s.events += events;
                s.state = SinkState::Running;
                s.last_error = None;
                if let Some(t) = commit_time_us {
                    s.applied_commit_time_us = s.applied_commit_time_us.max(t);
                }
            }
        });
    }

    /// `sink` failed; `state` says what Courier does about it.
    pub fn sink_error(&self, sink: &str, error: &str, state: SinkState) {
        metrics::counter!("courier_sink_errors_total", "sink" => sink.to_string()).increment(1);
        self.with(|i| {
            if let Some(s) = i.sinks.get_mut(sink) {
                s.errors += 1;
                s.state = state;
                s.last_error = Some(error.to_string());
            }
        });
    }

    pub fn snapshot_table(&self, table: &str, rows_done: u64, rows_estimated: u64, state: &str) {
        self.with(|i| {
            i.snapshot.insert(
                table.to_string(),
                TableSnapshotStatus {
                    rows_done,
                    rows_estimated,
                    state: state.to_string(),
                },
            );
        });
    }

    pub fn snapshot_rows_added(&self, table: &str, rows: u64) {
        self.with(|i| {
            if let Some(t) = i.snapshot.get_mut(table) {
                t.rows_done += rows;
            }
        });
    }

    /// Marks a table's snapshot complete; returns its rows.
    pub fn snapshot_done(&self, table: &str) -> u64 {
        self.with(|i| {
            let t = i.snapshot.entry(table.to_string()).or_default();
            t.state = "done".into();
            t.rows_done
        })
    }

    /// The status now: lag is measured against the server's WAL position
    /// (bytes) and against the newest commit received (time).
    pub fn report(&self) -> StatusReport {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        self.report_at(now_us)
    }

    fn report_at(&self, now_us: i64) -> StatusReport {
        let per_sink = self.watermark.per_sink();
        self.with(|i| {
            let server = i
                .source
                .server_wal_lsn
                .as_deref()
                .and_then(|s| s.parse::<Lsn>().ok());
            let sinks = per_sink
                .into_iter()
                .filter_map(|(name, position)| {
                    let s = i.sinks.get(&name)?;
                    let lsn = i.positions_are_lsns.then(|| position.as_lsn());
                    let behind = i.newest_commit.0 > position;
                    let since = |t: i64| (now_us - t).max(0) as u64 / 1000;
                    let lag_ms = match (behind, s.applied_commit_time_us) {
                        (false, _) => 0,
                        (true, 0) => since(i.newest_commit.1),
                        (true, t) => since(t),
                    };
                    let window = self.windows.get(&name).map(|w| w.report());
                    let status = SinkStatus {
                        kind: s.kind.clone(),
                        applied_lsn: lsn.map(|l| l.to_string()),
                        applied_batch: (!i.positions_are_lsns).then_some(position.0),
                        lag_bytes: lsn.map(|l| server.map_or(0, |v| v.0.saturating_sub(l.0))),
                        lag_ms,
                        events: s.events,
                        errors: s.errors,
                        state: s.state,
                        last_error: s.last_error.clone(),
                        visible_lsn: window
                            .as_ref()
                            .filter(|_| i.positions_are_lsns)
                            .map(|w| w.visible.as_lsn().to_string()),
                        window: window.map(WindowMs::from).unwrap_or_default(),
                    };
                    Some((name, status))
                })
                .collect();
            let mut source = i.source.clone();
            for p in source.kafka.iter_mut().flat_map(|k| &mut k.partitions) {
                p.lag_ms = p
                    .pending_since_ms
                    .map_or(0, |t| (now_us / 1000 - t).max(0) as u64);
            }
            StatusReport {
                streaming: i.streaming,
                role: i.role,
                source,
                sinks,
                snapshot: i.snapshot.clone(),
            }
        })
    }
}

impl From<WindowReport> for WindowMs {
    fn from(w: WindowReport) -> Self {
        let [a50, a95, a99] = w.applied_ms.map_or([None; 3], |q| q.map(Some));
        let [v50, v95, v99] = w.visible_ms.map_or([None; 3], |q| q.map(Some));
        WindowMs {
            applied_p50_ms: a50,
            applied_p95_ms: a95,
            applied_p99_ms: a99,
            visible_p50_ms: v50,
            visible_p95_ms: v95,
            visible_p99_ms: v99,
        }
    }
}

impl StatusReport {
    /// Sets the Prometheus gauges that mirror this report.
    pub fn publish_gauges(&self) {
        let parse = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<Lsn>().ok());
        if let Some(l) = parse(&self.source.server_wal_lsn) {
            metrics::gauge!("courier_source_wal_lsn").set(l.0 as f64);
        }
        if let Some(b) = self.source.retained_wal_bytes {
            metrics::gauge!("courier_retained_wal_bytes").set(b as f64);
        }
        if let Some(b) = self.source.slot_safe_wal_bytes {
            metrics::gauge!("courier_slot_safe_wal_bytes").set(b as f64);
        }
        for (name, s) in &self.sinks {
            if let Some(l) = s.applied_lsn.as_deref().and_then(|l| l.parse::<Lsn>().ok()) {
                metrics::gauge!("courier_sink_applied_lsn", "sink" => name.clone()).set(l.0 as f64);
            }
            if let Some(b) = s.lag_bytes {
                metrics::gauge!("courier_sink_lag_bytes", "sink" => name.clone()).set(b as f64);
            }
            metrics::gauge!("courier_sink_lag_ms", "sink" => name.clone()).set(s.lag_ms as f64);
        }
        for p in self.source.kafka.iter().flat_map(|k| &k.partitions) {
            let labels = [
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ];
            if let Some(lag) = p.lag_records {
                metrics::gauge!("courier_kafka_lag_records", &labels).set(lag as f64);
            }
            metrics::gauge!("courier_kafka_lag_ms", &labels).set(p.lag_ms as f64);
            if let Some(c) = p.committed_offset {
                metrics::gauge!("courier_kafka_committed_offset", &labels).set(c as f64);
            }
        }
        for (table, t) in &self.snapshot {
            metrics::gauge!("courier_snapshot_rows_done", "table" => table.clone())
                .set(t.rows_done as f64);
            metrics::gauge!("courier_snapshot_rows_estimated", "table" => table.clone())
                .set(t.rows_estimated as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        let sinks = [
            ("cache".to_string(), "redis".to_string()),
            ("log".into(), "file".into()),
        ];
        Status::new("slot", "pub", &sinks, Lsn(100))
    }

    #[test]
    fn a_sink_behind_the_newest_commit_shows_lag() {
        let s = status();
        s.set_source_positions(Some(Lsn(100)), Some(Lsn(500)));
        s.note_commit_received(Position(400), 1_000_000);
        s.sink_applied("log", Some(Position(400)), 7, Some(1_000_000));
        s.sink_applied("cache", Some(Position(200)), 3, Some(400_000));
        let r = s.report_at(1_500_000);
        let (cache, log) = (&r.sinks["cache"], &r.sinks["log"]);
        assert_eq!(
            (log.applied_lsn.as_deref(), log.lag_bytes, log.lag_ms),
            (Some("0/190"), Some(100), 0)
        );
        assert_eq!(
            (cache.applied_lsn.as_deref(), cache.lag_bytes, cache.lag_ms),
            (Some("0/C8"), Some(300), 1100)
        );
        assert_eq!((log.events, cache.events), (7, 3));
        assert_eq!(r.source.retained_wal_bytes, Some(400));
    }

    #[test]
    fn a_partition_lags_by_the_age_of_its_oldest_record_not_applied() {
        let s = Status::for_kafka("g", &[("cache".into(), "redis".into())]);
        let partition = |n, pending_since_ms| PartitionStatus {
            topic: "t".into(),
            partition: n,
            pending_since_ms,
            ..Default::default()
        };
        s.set_kafka_partitions(
            vec![
                partition(0, Some(1_000)),
                partition(1, None),
                // A producer's clock ahead of ours: not behind.
                partition(2, Some(9_000)),
            ],
            1,
        );
        let lag = |now_ms: i64| -> Vec<u64> {
            let r = s.report_at(now_ms * 1000);
            let k = r.source.kafka.unwrap();
            k.partitions.iter().map(|p| p.lag_ms).collect()
        };
        assert_eq!(lag(4_500), [3_500, 0, 0]);
        assert_eq!(lag(5_000), [4_000, 0, 0], "it grows until applied");
    }

    #[test]
    fn reading_the_report_changes_nothing() {
        let s = status();
        s.note_commit_received(Position(400), 1_000_000);
        assert_eq!(s.report_at(2_000_000), s.report_at(2_000_000));
    }

    #[test]
    fn errors_and_recovery_show_in_the_sink_state() {
        let s = status();
        assert_eq!(s.report().sinks["cache"].state, SinkState::Starting);
        s.sink_error(
            "cache",
            "redis 127.0.0.1:1 unreachable",
            SinkState::Connecting,
        );
        let cache = &s.report().sinks["cache"];
        assert_eq!((cache.state, cache.errors), (SinkState::Connecting, 1));
        assert!(cache.last_error.as_deref().unwrap().contains("unreachable"));
        s.sink_applied("cache", None, 0, None);
        let cache = &s.report().sinks["cache"];
        assert_eq!(
            (cache.state, cache.last_error.as_deref()),
            (SinkState::Running, None)
        );
        s.sink_error("cache", "rejected", SinkState::Failed);
        assert_eq!(s.report().sinks["cache"].state, SinkState::Failed);
    }

    #[test]
    fn the_acknowledged_position_is_kept() {
        let s = status();
        assert_eq!(s.acknowledged(), None);
        s.set_acknowledged(Lsn(0x1_0000_0010));
        assert_eq!(s.acknowledged(), Some(Lsn(0x1_0000_0010)));
        assert_eq!(s.report().source.acknowledged_lsn.as_deref(), Some("1/10"));
    }

    #[test]
    fn snapshot_progress_adds_up() {
        let s = status();
        s.snapshot_table("public.t", 0, 10, "copying");
        s.snapshot_rows_added("public.t", 4);
        s.snapshot_rows_added("public.t", 6);
        assert_eq!(s.snapshot_done("public.t"), 10);
        assert_eq!(s.report().snapshot["public.t"].state, "done");
    }
}
