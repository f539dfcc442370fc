//! The consistency window: how far each sink's store is readable, and how
//! long a commit takes to get there.
//!
//! Each sink has two positions. *Applied*: the sink task's acknowledgement
//! (everything through it is durable in the store). *Visible*: everything
//! through it can be read by the store's readers. For most stores they
//! are the same; for a search index a document is searchable only after a
//! refresh, so the visible position follows the refreshes Courier makes
//! when someone waits (`refresher.rs`). The wait API (`GET /v1/wait`)
//! waits on the visible positions (`progress.rs`: a waiter is woken by the
//! advance that reaches it). Every transaction's commit → applied and
//! commit → visible latencies go to Prometheus histograms and to
//! last-minute quantiles for `/v1/status` (`latency.rs`).

mod latency;
mod progress;
mod refresher;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use courier_core::Position;
use serde::Serialize;

pub use latency::LastMinute;
pub use progress::Progress;
pub use refresher::refresh_on_demand;

/// The Prometheus histogram of commit → applied, per sink.
pub const APPLIED_SECONDS: &str = "courier_sink_applied_seconds";
/// The Prometheus histogram of commit → visible to the store's readers.
pub const VISIBLE_SECONDS: &str = "courier_sink_visible_seconds";
/// The Prometheus histogram of a wait's wake-up: from the acknowledgement
/// that made its LSN visible to its answer.
pub const WAKEUP_SECONDS: &str = "courier_wait_wakeup_seconds";
/// The buckets of the wake-up histogram, in seconds.
pub const WAKEUP_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1,
];
/// The buckets of the commit → applied and → visible histograms, in seconds.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Applied transactions a refreshed sink remembers until a refresh shows
/// them (their commit times, for the visible latency); older ones were made
/// searchable by the index's own refresh, at a time Courier does not see.
const UNSEEN_LIMIT: usize = 100_000;

/// One sink's place in the window.
pub struct SinkWindow {
    applied: Progress,
    visible: Progress,
    /// Whether visibility waits for a refresh (set once the sink is built).
    refreshed: AtomicBool,
    /// The applied position of the last group that wrote to the store.
    last_write: AtomicU64,
    /// Commit times (µs) of applied transactions a refresh has not shown yet.
    unseen: Mutex<VecDeque<(Position, i64)>>,
    applied_last_minute: LastMinute,
    visible_last_minute: LastMinute,
    applied_histogram: metrics::Histogram,
    visible_histogram: metrics::Histogram,
}

/// Every sink's window, by name.
#[derive(Clone)]
pub struct Windows {
    sinks: Arc<BTreeMap<String, Arc<SinkWindow>>>,
}

/// One sink's positions and last-minute latencies, for the API.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowReport {
    /// Readable by the store's readers through this position.
    pub visible: Position,
    /// Commit → applied over the last minute, p50, p95 and p99, in ms.
    pub applied_ms: Option<[f64; 3]>,
    /// Commit → visible over the last minute, p50, p95 and p99, in ms.
    pub visible_ms: Option<[f64; 3]>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl Windows {
    /// Windows for the named sinks, every one applied and visible at `start`.
    pub fn new<'a>(sinks: impl IntoIterator<Item = &'a str>, start: Position) -> Self {
        let sinks = sinks
            .into_iter()
            .map(|name| (name.to_string(), Arc::new(SinkWindow::new(name, start))))
            .collect();
        Windows {
            sinks: Arc::new(sinks),
        }
    }

    pub fn get(&self, sink: &str) -> Option<&Arc<SinkWindow>> {
        self.sinks.get(sink)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    /// Moves every sink to at least `position` (a new slot's start).
    pub fn advance_all(&self, position: Position) {
        for w in self.sinks.values() {
            w.applied.advance(position);
            w.visible.advance(position);
        }
    }
}

impl SinkWindow {
    fn new(name: &str, start: Position) -> Self {
        let label = [("sink", name.to_string())];
        SinkWindow {
            applied: Progress::new(start),
            visible: Progress::new(start),
            refreshed: AtomicBool::new(false),
            last_write: AtomicU64::new(start.0),
            unseen: Mutex::new(VecDeque::new()),
            applied_last_minute: LastMinute::default(),
            visible_last_minute: LastMinute::default(),
            applied_histogram: metrics::histogram!(APPLIED_SECONDS, &label),
            visible_histogram: metrics::histogram!(VISIBLE_SECONDS, &label),
        }
    }

    /// From now on the sink's changes are visible only after a refresh.
    pub fn needs_refresh(&self) {
        self.refreshed.store(true, Ordering::SeqCst);
    }

    /// The sink applied everything through `through`; `commits` are the
    /// commit times (µs since the epoch) of the streamed transactions of
    /// the group (each once); `wrote` whether the group changed the store.
    pub fn applied(&self, through: Option<Position>, commits: &[i64], wrote: bool) {
        let now = now_us();
        self.record(
            commits,
            now,
            &self.applied_last_minute,
            &self.applied_histogram,
        );
        let Some(through) = through else { return };
        if !self.refreshed.load(Ordering::SeqCst) {
            self.applied.advance(through);
            self.record(
                commits,
                now,
                &self.visible_last_minute,
                &self.visible_histogram,
            );
            self.visible.advance(through);
            return;
        }
        if wrote {
            let mut unseen = self.unseen.lock().unwrap_or_else(|e| e.into_inner());
            unseen.extend(commits.iter().map(|t| (through, *t)));
            let extra = unseen.len().saturating_sub(UNSEEN_LIMIT);
            unseen.drain(..extra);
            self.last_write.fetch_max(through.0, Ordering::SeqCst);
        }
        self.applied.advance(through);
        // Positions that only carried keepalives or other sinks' tables
        // show nothing new: visible follows at once.
        if self.last_write.load(Ordering::SeqCst) <= self.visible.position().0 {
            self.visible.advance(through);
        }
    }

    /// A refresh that began with the sink applied through `through` ended.
    pub fn refreshed_through(&self, through: Position) {
        let now = now_us();
        let shown: Vec<i64> = {
            let mut unseen = self.unseen.lock().unwrap_or_else(|e| e.into_inner());
            let n = unseen.partition_point(|(p, _)| *p <= through);
            unseen.drain(..n).map(|(_, t)| t).collect()
        };
        self.record(
            &shown,
            now,
            &self.visible_last_minute,
            &self.visible_histogram,
        );
        self.visible.advance(through);
    }

    fn record(&self, commits: &[i64], now_us: i64, last: &LastMinute, h: &metrics::Histogram) {
        let now_s = (now_us / 1_000_000) as u64;
        for t in commits {
            let secs = (now_us - t).max(0) as f64 / 1e6;
            last.record(now_s, secs, 1);
            h.record(secs);
        }
    }

    pub fn applied_position(&self) -> Position {
        self.applied.position()
    }

    pub fn visible_position(&self) -> Position {
        self.visible.position()
    }

    /// Whether the store holds writes a refresh has not shown yet.
    fn has_unshown_writes(&self) -> bool {
        self.last_write.load(Ordering::SeqCst) > self.visible.position().0
    }

    /// Resolves once everything through `at` is visible, with the instant
    /// of the advance that showed it (`None`: it was visible already).
    pub fn visible_at(
        &self,
        at: Position,
    ) -> impl Future<Output = Option<tokio::time::Instant>> + Send + 'static {
        self.visible.reached(at)
    }

    /// The positions and last-minute latencies now.
    pub fn report(&self) -> WindowReport {
        let now_s = (now_us() / 1_000_000) as u64;
        let qs = [0.5, 0.95, 0.99];
        WindowReport {
            visible: self.visible.position(),
            applied_ms: (self.applied_last_minute.quantiles(now_s, qs)).map(|q| q.map(round_ms)),
            visible_ms: (self.visible_last_minute.quantiles(now_s, qs)).map(|q| q.map(round_ms)),
        }
    }
}

fn round_ms(secs: f64) -> f64 {
    (secs * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plain_sink_is_visible_when_applied() {
        let w = Windows::new(["cache"], Position(10));
        let cache = w.get("cache").unwrap().clone();
        let wait = tokio::spawn(cache.visible_at(Position(20)));
        cache.applied(Some(Position(20)), &[now_us() - 3_000], true);
        wait.await.unwrap();
        let r = cache.report();
        assert_eq!(r.visible, Position(20));
        let p50 = r.visible_ms.unwrap()[0];
        assert!((2.5..4.0).contains(&p50), "{p50}");
    }

    #[tokio::test]
    async fn a_refreshed_sink_is_visible_only_after_a_refresh() {
        let w = Windows::new(["search"], Position(10));
        let s = w.get("search").unwrap().clone();
        s.needs_refresh();
        s.applied(Some(Position(20)), &[now_us()], true);
        assert_eq!(
            (s.applied_position(), s.visible_position()),
            (Position(20), Position(10))
        );
        assert!(s.has_unshown_writes());
        // A keepalive past it shows nothing new while the write is unshown.
        s.applied(Some(Position(30)), &[], false);
        assert_eq!(s.visible_position(), Position(10));
        s.refreshed_through(Position(30));
        assert_eq!(s.visible_position(), Position(30));
        assert!(s.report().visible_ms.is_some());
        // Once shown, keepalives move visible at once.
        s.applied(Some(Position(40)), &[], false);
        assert_eq!(s.visible_position(), Position(40));
    }
}
