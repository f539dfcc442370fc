//! Runs one sink: connects (retrying while the store is unreachable),
//! applies its queue in order, retries retriable errors with backoff, and
//! reports progress to the watermark.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{Batch, Grouping, Op, Sink, SinkError, Visibility};
use courier_sinks::BuildError;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::fanout::SinkMsg;
use crate::retry::{retry, Backoff};
use crate::status::{SinkState, Status};

/// Why a sink task ended.
pub enum SinkExit {
    /// The queue closed: the pipeline is shutting down.
    Drained,
    /// A fatal error: Courier must stop; nothing past it was acknowledged.
    Failed(SinkFailure),
}

/// A sink that stopped Courier, and why.
#[derive(Debug, thiserror::Error)]
pub enum SinkFailure {
    /// The sink could not be built: its settings are wrong, or the store
    /// refused it for a reason retrying cannot fix.
    #[error("start sink {sink}")]
    Build {
        sink: String,
        #[source]
        source: BuildError,
    },
    /// The store refused a batch for good (the error names table and LSN).
    #[error("sink {sink}")]
    Apply {
        sink: String,
        #[source]
        source: SinkError,
    },
}

/// Builds the sink with `build`, retrying while its store is unreachable
/// (the status shows it connecting), then applies batches from `rx` until the
/// queue closes or a fatal error, grouping consecutive batches as the sink
/// asks (see `Sink::grouping`).
pub async fn run_sink<F, Fut>(
    name: String,
    build: F,
    mut rx: mpsc::Receiver<SinkMsg>,
    status: Status,
) -> SinkExit
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Box<dyn Sink>, BuildError>>,
{
    let mut sink = match connect(&name, build, &status).await {
        Ok(sink) => sink,
        Err(source) => {
            status.sink_error(&name, &source.to_string(), SinkState::Failed);
            return SinkExit::Failed(SinkFailure::Build { sink: name, source });
        }
    };
    status.sink_applied(&name, None, 0, None);
    let window = status.windows.get(&name).cloned();
    // Ends with this task: nobody waits on a sink that stopped.
    let _refresher = match (sink.visibility(), &window) {
        (Visibility::AfterRefresh(refresh), Some(w)) => {
            w.needs_refresh();
            let task = tokio::spawn(crate::window::refresh_on_demand(
                name.clone(),
                w.clone(),
                refresh,
            ));
            Some(AbortOnDrop(task))
        }
        _ => None,
    };
    let grouping = sink.grouping();
    while let Some(group) = next_group(&mut rx, grouping).await {
        let batches: Vec<&Batch> = group
            .batches
            .iter()
            .map(|b| b.as_ref())
            .filter(|b| !b.is_empty())
            .collect();
        if !batches.is_empty() {
            if let Err(source) = apply_with_retry(&name, sink.as_mut(), &batches, &status).await {
                return SinkExit::Failed(SinkFailure::Apply { sink: name, source });
            }
        }
        let through = group.batches.iter().filter_map(|b| b.through).max();
        let events = group.batches.iter().map(|b| b.len() as u64).sum();
        let last_commit_time = group
            .batches
            .iter()
            .rev()
            .flat_map(|b| b.changes.iter().rev())
            .find(|c| c.op() != Op::Read)
            .map(|c| c.commit_time_us());
        status.sink_applied(&name, through, events, last_commit_time);
        if let Some(w) = &window {
            w.applied(through, &commit_times(&group.batches), !batches.is_empty());
        }
        if let Some(done) = group.barrier {
            let _ = done.send(());
        }
    }
    if let Err(e) = sink.close().await {
        tracing::warn!(sink = %name, error = %error_chain(&e), "closing sink");
    }
    SinkExit::Drained
}

/// The commit time of each streamed transaction in the batches, once each
/// (a transaction's changes are consecutive and share its version).
fn commit_times(batches: &[Arc<Batch>]) -> Vec<i64> {
    let mut times = Vec::new();
    let mut last = None;
    for c in batches.iter().flat_map(|b| b.changes.iter()) {
        if c.op() == Op::Read || last == Some(c.version()) {
            continue;
        }
        last = Some(c.version());
        times.push(c.commit_time_us());
    }
    times
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Builds the sink, trying again while its store cannot be reached: a store
/// that is down when Courier starts is treated like one that goes away later.
async fn connect<F, Fut>(name: &str, build: F, status: &Status) -> Result<Box<dyn Sink>, BuildError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Box<dyn Sink>, BuildError>>,
{
    retry(
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
        BuildError::is_retriable,
        |e, wait| {
            let msg = error_chain(e);
            status.sink_error(name, &msg, SinkState::Connecting);
            tracing::warn!(sink = %name, error = %msg, retry_in_ms = wait.as_millis() as u64,
                "sink store unreachable; retrying");
        },
        build,
    )
    .await
}
/// Consecutive batches applied as one unit, and the barrier that ended the
/// group, answered once they are applied.
struct Group {
    batches: Vec<Arc<Batch>>,
    barrier: Option<oneshot::Sender<()>>,
}

/// Waits for the next message, then gathers what follows it per `grouping`;
/// `None` once the queue is closed and empty.
async fn next_group(rx: &mut mpsc::Receiver<SinkMsg>, grouping: Grouping) -> Option<Group> {
    let mut group = Group {
        batches: Vec::new(),
        barrier: None,
    };
    let (mut changes, mut bytes) = (0, 0);
    // The wait for more starts when the first batch arrives, not when the
    // previous group ended: after an idle spell a group still waits max_delay.
    let mut deadline = Instant::now();
    loop {
        let msg = if group.batches.is_empty() {
            let first = rx.recv().await?;
            deadline = Instant::now() + grouping.max_delay;
            first
        } else if changes >= grouping.max_changes || bytes >= grouping.max_bytes {
            break;
        } else {
            match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) if grouping.max_delay.is_zero() => break,
                Err(TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(m)) => m,
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        };
        match msg {
            SinkMsg::Batch(b) => {
                changes += b.len();
                if grouping.max_changes > 0 {
                    bytes += b.approx_bytes();
                }
                group.batches.push(b);
            }
            SinkMsg::Barrier(done) => {
                group.barrier = Some(done);
                break;
            }
        }
    }
    Some(group)
}

/// Applies the group, retrying errors that may pass. Its own loop rather
/// than `retry`: each attempt borrows the sink mutably.
async fn apply_with_retry(
    name: &str,
    sink: &mut dyn Sink,
    batches: &[&Batch],
    status: &Status,
) -> Result<(), SinkError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        let result = match batches {
            [one] => sink.apply(one).await,
            many => sink.apply_all(many).await,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retriable() => {
                let msg = error_chain(&e);
                status.sink_error(name, &msg, SinkState::Retrying);
                let wait = backoff.next_delay();
                tracing::warn!(sink = %name, error = %msg, retry_in_ms = wait.as_millis() as u64, "sink failed to apply a batch; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                status.sink_error(name, &error_chain(&e), SinkState::Failed);
                return Err(e);
            }
        }
    }
}

/// An error and its sources, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::memory_sink::{MemorySink, Then};
    use courier_core::{Lsn, Position, SinkErrorKind};

    fn batch(through: u64) -> SinkMsg {
        SinkMsg::Batch(Arc::new(Batch {
            changes: Vec::new(),
            through: Some(Position(through)),
        }))
    }

    /// A batch of one change whose row holds `bytes` bytes of text.
    fn wide_batch(through: u64, bytes: usize) -> SinkMsg {
        let relation = Arc::new(courier_core::Relation {
            oid: 1,
            id: courier_core::TableId::new("public", "wide"),
            columns: vec![courier_core::Column {
                name: "body".into(),
                type_oid: 25,
                type_modifier: -1,
                type_name: "text".into(),
                pg_type: courier_core::PgType::Text,
                nullable: true,
                is_key: false,
            }],
        });
        let change = courier_core::Change::new(
            relation,
            courier_core::Op::Insert,
            None,
            Some(vec![courier_core::Value::Text("x".repeat(bytes))]),
            Lsn(through),
            1,
            0,
        )
        .expect("one value for the one column");
        SinkMsg::Batch(Arc::new(Batch {
            changes: vec![change],
            through: Some(Position(through)),
        }))
    }

    fn throughs(g: &Group) -> Vec<u64> {
        g.batches
            .iter()
            .filter_map(|b| b.through)
            .map(|l| l.0)
            .collect()
    }

    #[tokio::test]
    async fn without_grouping_each_batch_is_its_own_group() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(batch(1)).await.unwrap();
        tx.send(batch(2)).await.unwrap();
        drop(tx);
        let g = next_group(&mut rx, Grouping::NONE).await.unwrap();
        assert_eq!(throughs(&g), [1]);
        let g = next_group(&mut rx, Grouping::NONE).await.unwrap();
        assert_eq!(throughs(&g), [2]);
        assert!(next_group(&mut rx, Grouping::NONE).await.is_none());
    }

    #[tokio::test]
    async fn a_group_takes_what_is_queued_and_ends_at_a_barrier() {
        let (tx, mut rx) = mpsc::channel(8);
        let (done, _answer) = oneshot::channel();
        for m in [batch(1), batch(2), SinkMsg::Barrier(done), batch(3)] {
            tx.send(m).await.unwrap();
        }
        let grouping = Grouping {
            max_changes: 1000,
            max_bytes: 1 << 20,
            max_delay: Duration::ZERO,
        };
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(throughs(&g), [1, 2]);
        assert!(
            g.barrier.is_some(),
            "the barrier ends the group and is answered after it"
        );
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(throughs(&g), [3]);
        assert!(g.barrier.is_none());
    }

    #[tokio::test]
    async fn wide_rows_end_a_group_at_max_bytes() {
        let (tx, mut rx) = mpsc::channel(8);
        for n in 1..=5 {
            tx.send(wide_batch(n, 400)).await.unwrap();
        }
        drop(tx);
        let grouping = Grouping {
            max_changes: 1000,
            max_bytes: 1000,
            max_delay: Duration::ZERO,
        };
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(
            throughs(&g),
            [1, 2, 3],
            "the batch that crosses the bound is the last"
        );
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(throughs(&g), [4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_waits_up_to_max_delay_for_more() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(batch(1)).await.unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            late.send(batch(2)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            late.send(batch(3)).await.unwrap();
        });
        let grouping = Grouping {
            max_changes: 1000,
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(400),
        };
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(throughs(&g), [1, 2], "batch 3 came after max_delay");
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(throughs(&g), [3]);
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_idle_spell_a_group_still_waits_max_delay() {
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(async move {
            // Idle for longer than max_delay, then two batches 50 ms apart.
            tokio::time::sleep(Duration::from_secs(5)).await;
            tx.send(batch(1)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(batch(2)).await.unwrap();
        });
        let grouping = Grouping {
            max_changes: 1000,
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(200),
        };
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(throughs(&g), [1, 2]);
    }

    fn status(sink: &str) -> Status {
        Status::new(
            "s",
            "p",
            &[(sink.to_string(), "memory".to_string())],
            Lsn(0),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retriable_errors_are_retried_and_progress_follows_the_applied() {
        let sink = MemorySink::new(
            vec![SinkError::new(SinkErrorKind::Overloaded, "server busy")],
            Then::Apply,
        );
        let applied = sink.applied.clone();
        let st = status("m");
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run_sink("m".into(), sink.builder(), rx, st.clone()));
        tx.send(wide_batch(10, 8)).await.unwrap();
        tx.send(wide_batch(20, 8)).await.unwrap();
        drop(tx);
        assert!(matches!(task.await.unwrap(), SinkExit::Drained));
        assert_eq!(*applied.lock().unwrap(), [10, 20]);
        assert_eq!(st.watermark.min(), Some(Position(20)));
        let report = st.report();
        assert_eq!(
            (report.sinks["m"].errors, report.sinks["m"].state),
            (1, SinkState::Running)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_error_stops_the_sink_with_its_table_and_lsn() {
        let table = courier_core::TableId::new("public", "t");
        let error = SinkError::new(SinkErrorKind::Rejected, "rejected")
            .with_table(&table)
            .with_lsn(Lsn(20));
        let sink = MemorySink::new(vec![error], Then::Apply);
        let applied = sink.applied.clone();
        let st = status("m");
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(run_sink("m".into(), sink.builder(), rx, st.clone()));
        tx.send(wide_batch(20, 8)).await.unwrap();
        let SinkExit::Failed(SinkFailure::Apply { sink, source }) = task.await.unwrap() else {
            panic!("the sink must fail");
        };
        assert_eq!(sink, "m");
        assert_eq!((source.table, source.lsn), (Some(table), Some(Lsn(20))));
        assert!(applied.lock().unwrap().is_empty());
        assert_eq!(
            st.watermark.min(),
            Some(Position(0)),
            "nothing acknowledged past it"
        );
        assert_eq!(st.report().sinks["m"].state, SinkState::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_store_at_start_is_retried_until_it_answers() {
        let sink = MemorySink::new(Vec::new(), Then::Apply);
        let applied = sink.applied.clone();
        let mut build = sink.builder();
        let st = status("m");
        let (tx, rx) = mpsc::channel(8);
        let mut attempts = 0;
        let task = tokio::spawn(run_sink(
            "m".into(),
            move || {
                attempts += 1;
                let unreachable = BuildError::Connect {
                    sink: "m".into(),
                    kind: SinkErrorKind::Unreachable,
                    message: "store unreachable (connection refused)".into(),
                    source: None,
                };
                if attempts < 4 {
                    std::future::ready(Err(unreachable))
                } else {
                    build()
                }
            },
            rx,
            st.clone(),
        ));
        tx.send(wide_batch(10, 8)).await.unwrap();
        // While it keeps trying, the status says so.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let report = st.report();
        assert_eq!(report.sinks["m"].state, SinkState::Connecting);
        let error = report.sinks["m"].last_error.clone().unwrap_or_default();
        assert!(error.contains("unreachable"), "{error}");
        drop(tx);
        assert!(matches!(task.await.unwrap(), SinkExit::Drained));
        assert_eq!(*applied.lock().unwrap(), [10]);
    }

    #[tokio::test]
    async fn a_bad_setting_fails_at_once() {
        let st = status("m");
        let (_tx, rx) = mpsc::channel(8);
        let exit = run_sink(
            "m".into(),
            || async {
                Err(BuildError::Config {
                    sink: "m".into(),
                    message: "unknown field `urll`".into(),
                })
            },
            rx,
            st.clone(),
        )
        .await;
        assert!(matches!(exit, SinkExit::Failed(SinkFailure::Build { .. })));
        assert_eq!(st.report().sinks["m"].state, SinkState::Failed);
    }
}
