//! What the admin API shows: the source's position, each sink's progress,
//! and snapshot progress. Updated by the pipeline, read by the API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use courier_core::{Lsn, Watermark};
use serde::Serialize;

/// Shared, cheap-to-clone pipeline status.
#[derive(Clone)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
    /// Per-sink applied positions (the ack watermark).
    pub watermark: Watermark,
}

#[derive(Default)]
struct Inner {
    source: SourceStatus,
    sinks: BTreeMap<String, SinkStatus>,
    snapshot: BTreeMap<String, TableSnapshotStatus>,
    streaming: bool,
    /// Commit LSN and time of the newest transaction received.
    newest_commit: (Lsn, i64),
}

/// The source side of `/v1/status`.
#[derive(Clone, Default, Serialize)]
pub struct SourceStatus {
    pub slot: String,
    pub publication: String,
    pub confirmed_flush_lsn: Option<String>,
    pub server_wal_lsn: Option<String>,
    pub retained_wal_bytes: Option<u64>,
    pub connected: bool,
}

/// One sink in `/v1/status`.
#[derive(Clone, Default, Serialize)]
pub struct SinkStatus {
    #[serde(rename = "type")]
    pub kind: String,
    pub applied_lsn: String,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    pub events: u64,
    pub errors: u64,
    pub state: String,
    pub last_error: Option<String>,
    #[serde(skip)]
    applied_commit_time_us: i64,
}

/// Snapshot progress of one table.
#[derive(Clone, Default, Serialize)]
pub struct TableSnapshotStatus {
    pub rows_done: u64,
    pub rows_estimated: u64,
    pub state: String,
}

impl Status {
    pub fn new(slot: &str, publication: &str, sinks: &[(String, String)], start: Lsn) -> Self {
        let inner = Inner {
            source: SourceStatus {
                slot: slot.into(),
                publication: publication.into(),
                ..Default::default()
            },
            sinks: sinks
                .iter()
                .map(|(n, k)| {
                    (
                        n.clone(),
                        SinkStatus {
                            kind: k.clone(),
                            state: "starting".into(),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        Status {
            inner: Arc::new(Mutex::new(inner)),
            watermark: Watermark::new(sinks.iter().map(|(n, _)| n.clone()), start),
        }
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

    pub fn set_source_positions(&self, confirmed: Option<Lsn>, server: Option<Lsn>) {
        self.with(|i| {
            i.source.confirmed_flush_lsn = confirmed.map(|l| l.to_string());
            i.source.server_wal_lsn = server.map(|l| l.to_string());
            i.source.retained_wal_bytes = match (confirmed, server) {
                (Some(c), Some(s)) => Some(s.0.saturating_sub(c.0)),
                _ => None,
            };
            if let Some(s) = server {
                metrics::gauge!("courier_source_wal_lsn").set(s.0 as f64);
            }
            if let Some(b) = i.source.retained_wal_bytes {
                metrics::gauge!("courier_retained_wal_bytes").set(b as f64);
            }
        });
    }

    pub fn note_commit_received(&self, lsn: Lsn, commit_time_us: i64) {
        self.with(|i| i.newest_commit = (lsn, commit_time_us));
    }

    pub fn sink_applied(
        &self,
        sink: &str,
        through: Option<Lsn>,
        events: u64,
        commit_time_us: Option<i64>,
    ) {
        if let Some(l) = through {
            self.watermark.advance(sink, l);
            metrics::gauge!("courier_sink_applied_lsn", "sink" => sink.to_string()).set(l.0 as f64);
        }
        self.with(|i| {
            if let Some(s) = i.sinks.get_mut(sink) {
                s.events += events;
                s.state = "running".into();
                s.last_error = None;
                if let Some(t) = commit_time_us {
                    s.applied_commit_time_us = s.applied_commit_time_us.max(t);
                }
            }
        });
    }

    pub fn sink_error(&self, sink: &str, error: &str, fatal: bool) {
        metrics::counter!("courier_sink_errors_total", "sink" => sink.to_string()).increment(1);
        self.with(|i| {
            if let Some(s) = i.sinks.get_mut(sink) {
                s.errors += 1;
                s.state = if fatal { "failed" } else { "retrying" }.into();
                s.last_error = Some(error.to_string());
            }
        });
    }

    pub fn snapshot_table(&self, table: &str, rows_done: u64, rows_estimated: u64, state: &str) {
        metrics::gauge!("courier_snapshot_rows_done", "table" => table.to_string())
            .set(rows_done as f64);
        metrics::gauge!("courier_snapshot_rows_estimated", "table" => table.to_string())
            .set(rows_estimated as f64);
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
        metrics::gauge!("courier_snapshot_rows_done", "table" => table.to_string())
            .increment(rows as f64);
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

    /// The `/v1/status` document.
    pub fn to_json(&self) -> serde_json::Value {
        let per_sink = self.watermark.per_sink();
        self.with(|i| {
            let server = i
                .source
                .server_wal_lsn
                .as_deref()
                .and_then(|s| s.parse::<Lsn>().ok());
            let now_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0);
            let mut sinks = serde_json::Map::new();
            for (name, lsn) in per_sink {
                let Some(s) = i.sinks.get_mut(&name) else {
                    continue;
                };
                s.applied_lsn = lsn.to_string();
                s.lag_bytes = server.map(|v| v.0.saturating_sub(lsn.0)).unwrap_or(0);
                let behind = i.newest_commit.0 > lsn;
                s.lag_ms = if behind && s.applied_commit_time_us > 0 {
                    (now_us - s.applied_commit_time_us).max(0) as u64 / 1000
                } else if behind {
                    (now_us - i.newest_commit.1).max(0) as u64 / 1000
                } else {
                    0
                };
                metrics::gauge!("courier_sink_lag_bytes", "sink" => name.clone())
                    .set(s.lag_bytes as f64);
                metrics::gauge!("courier_sink_lag_ms", "sink" => name.clone()).set(s.lag_ms as f64);
                sinks.insert(name, serde_json::to_value(&*s).unwrap_or_default());
            }
            serde_json::json!({
                "streaming": i.streaming,
                "source": i.source,
                "sinks": sinks,
                "snapshot": i.snapshot,
            })
        })
    }
}
