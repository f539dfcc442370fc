//! Runs one sink: applies its queue in order, retries retriable errors with
//! backoff, and reports progress to the watermark.

use std::sync::Arc;
use std::time::Duration;

use courier_core::{Batch, Grouping, Op, Sink};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::fanout::SinkMsg;
use super::status::Status;
use crate::backoff::Backoff;

/// Why a sink task ended.
pub enum SinkExit {
    /// The queue closed: the pipeline is shutting down.
    Drained,
    /// A fatal error: Courier must stop; nothing past it was acknowledged.
    Failed(String),
}

/// Applies batches from `rx` until the queue closes or a fatal error,
/// grouping consecutive batches as the sink asks (see `Sink::grouping`).
pub async fn run_sink(
    name: String,
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<SinkMsg>,
    status: Status,
) -> SinkExit {
    let grouping = sink.grouping();
    while let Some(group) = next_group(&mut rx, grouping).await {
        let batches: Vec<&Batch> = group
            .batches
            .iter()
            .map(|b| b.as_ref())
            .filter(|b| !b.is_empty())
            .collect();
        if !batches.is_empty() {
            if let Err(e) = apply_with_retry(&name, sink.as_mut(), &batches, &status).await {
                return SinkExit::Failed(e);
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
        if let Some(done) = group.barrier {
            let _ = done.send(());
        }
    }
    if let Err(e) = sink.close().await {
        tracing::warn!(sink = %name, error = %e, "closing sink");
    }
    SinkExit::Drained
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
    let deadline = Instant::now() + grouping.max_delay;
    loop {
        let msg = if group.batches.is_empty() {
            rx.recv().await?
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

async fn apply_with_retry(
    name: &str,
    sink: &mut dyn Sink,
    batches: &[&Batch],
    status: &Status,
) -> Result<(), String> {
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
                status.sink_error(name, &msg, false);
                let wait = backoff.next_delay();
                tracing::warn!(sink = %name, error = %msg, retry_in_ms = wait.as_millis() as u64, "sink failed to apply a batch; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let msg = error_chain(&e);
                status.sink_error(name, &msg, true);
                return Err(format!("sink {name}: {msg}"));
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
    use courier_core::Lsn;

    fn batch(through: u64) -> SinkMsg {
        SinkMsg::Batch(Arc::new(Batch {
            changes: Vec::new(),
            through: Some(Lsn(through)),
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
            through: Some(Lsn(through)),
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

    #[tokio::test]
    async fn a_group_waits_up_to_max_delay_for_more() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.send(batch(1)).await.unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            late.send(batch(2)).await.unwrap();
        });
        let grouping = Grouping {
            max_changes: 1000,
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(400),
        };
        let started = Instant::now();
        let g = next_group(&mut rx, grouping).await.unwrap();
        assert_eq!(throughs(&g), [1, 2]);
        assert!(started.elapsed() >= Duration::from_millis(390));
    }
}
