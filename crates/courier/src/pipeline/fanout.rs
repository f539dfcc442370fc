//! Hands each batch to every sink through its own bounded queue, so a slow
//! sink slows the stream (backpressure) instead of growing memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use courier_core::{Batch, Position};
use tokio::sync::{mpsc, oneshot};

/// What a sink task receives.
pub enum SinkMsg {
    Batch(Arc<Batch>),
    /// Answered once every message before it has been applied.
    Barrier(oneshot::Sender<()>),
}

/// The sending side of every sink's queue.
///
/// Clones share the queues; the queues close when the last clone is dropped,
/// which is how sink tasks learn that the pipeline is shutting down.
#[derive(Clone)]
pub struct Fanout {
    queues: Vec<mpsc::Sender<SinkMsg>>,
    /// The newest `through` queued for every sink.
    sent_through: Arc<AtomicU64>,
}

/// A sink task has stopped (a fatal error or shutdown).
#[derive(Debug, thiserror::Error)]
#[error("a sink stopped; see its error above")]
pub struct SinkGone;

impl Fanout {
    /// A fan-out over these queues, one per sink.
    pub fn new(queues: Vec<mpsc::Sender<SinkMsg>>) -> Self {
        Fanout {
            queues,
            sent_through: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues the batch for every sink, waiting while a queue is full.
    ///
    /// All or nothing: a slot is reserved in every queue before the batch
    /// enters any, so a cancelled call leaves no sink with a batch the others
    /// lack (a sink that received a `through` the others never saw could
    /// otherwise acknowledge past a batch it never applied).
    ///
    /// A batch that only carries a position (an idle keepalive's) goes to
    /// every queue with room and skips the full ones without waiting: each
    /// sink that gets it has every change before it, and a sink that
    /// misses it learns a later position with its next batch. So a stopped
    /// sink's queue fills with changes only, and the other sinks' positions
    /// (what the wait API waits on) keep up with an idle source meanwhile.
    pub async fn send(&self, batch: Batch) -> Result<(), SinkGone> {
        let through = batch.through;
        let batch = Arc::new(batch);
        if batch.is_empty() && through.is_some() {
            let mut everywhere = true;
            for q in &self.queues {
                match q.try_send(SinkMsg::Batch(batch.clone())) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => everywhere = false,
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err(SinkGone),
                }
            }
            if let (true, Some(t)) = (everywhere, through) {
                self.sent_through.fetch_max(t.0, Ordering::Relaxed);
            }
            return Ok(());
        }
        self.send_to_all(|| SinkMsg::Batch(batch.clone())).await?;
        if let Some(t) = through {
            self.sent_through.fetch_max(t.0, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Waits until every sink has applied everything sent before this call.
    pub async fn barrier(&self) -> Result<(), SinkGone> {
        let mut waits = Vec::with_capacity(self.queues.len());
        self.send_to_all(|| {
            let (tx, rx) = oneshot::channel();
            waits.push(rx);
            SinkMsg::Barrier(tx)
        })
        .await?;
        for w in waits {
            w.await.map_err(|_| SinkGone)?;
        }
        Ok(())
    }

    /// The newest `through` handed to every sink: once every sink's
    /// watermark reaches it, nothing sent is left unapplied.
    pub fn sent_through(&self) -> Position {
        Position(self.sent_through.load(Ordering::Relaxed))
    }

    /// Reserves a slot in every queue, then fills them all at once.
    /// Cancel-safe: dropping the future releases the reserved slots.
    async fn send_to_all(&self, mut msg: impl FnMut() -> SinkMsg) -> Result<(), SinkGone> {
        let mut permits = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            permits.push(q.reserve().await.map_err(|_| SinkGone)?);
        }
        for p in permits {
            p.send(msg());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A batch of one change through `through`.
    fn batch(through: u64) -> Batch {
        let relation = Arc::new(courier_core::Relation {
            oid: 1,
            id: courier_core::TableId::new("public", "t"),
            columns: vec![courier_core::Column {
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
                type_name: "int8".into(),
                pg_type: courier_core::PgType::Int8,
                nullable: false,
                is_key: true,
            }],
        });
        let change = courier_core::Change::new(
            relation,
            courier_core::Op::Insert,
            None,
            Some(vec![courier_core::Value::Int(1)]),
            courier_core::Lsn(through),
            1,
            0,
        )
        .expect("one value for the one column");
        Batch {
            changes: vec![change],
            through: Some(Position(through)),
        }
    }

    /// A batch that only carries a position (an idle keepalive's).
    fn position(through: u64) -> Batch {
        Batch {
            changes: Vec::new(),
            through: Some(Position(through)),
        }
    }

    fn received(rx: &mut mpsc::Receiver<SinkMsg>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let SinkMsg::Batch(b) = m {
                out.extend(b.through.map(|l| l.0));
            }
        }
        out
    }

    #[tokio::test]
    async fn every_queue_receives_every_batch_in_order() {
        let (a, mut ra) = mpsc::channel(4);
        let (b, mut rb) = mpsc::channel(4);
        let f = Fanout::new(vec![a, b]);
        for t in [1, 2, 3] {
            f.send(batch(t)).await.unwrap();
        }
        assert_eq!(received(&mut ra), [1, 2, 3]);
        assert_eq!(received(&mut rb), [1, 2, 3]);
        assert_eq!(f.sent_through(), Position(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_send_reaches_no_queue() {
        let (a, mut ra) = mpsc::channel(4);
        let (b, mut rb) = mpsc::channel(1);
        let f = Fanout::new(vec![a, b]);
        f.send(batch(1)).await.unwrap();
        // The second queue is full: the send waits, and is then given up.
        let gave_up = tokio::time::timeout(Duration::from_secs(1), f.send(batch(2))).await;
        assert!(gave_up.is_err());
        assert_eq!(
            received(&mut ra),
            [1],
            "the first sink must not get batch 2"
        );
        assert_eq!(received(&mut rb), [1]);
        assert_eq!(f.sent_through(), Position(1));
        // The reserved slot was released: the next send goes through.
        f.send(batch(3)).await.unwrap();
        assert_eq!(received(&mut ra), [3]);
        assert_eq!(received(&mut rb), [3]);
    }

    #[tokio::test]
    async fn a_position_skips_full_queues_without_waiting() {
        let (a, mut ra) = mpsc::channel(4);
        let (b, mut rb) = mpsc::channel(1);
        let f = Fanout::new(vec![a, b]);
        f.send(batch(1)).await.unwrap();
        f.send(position(2)).await.unwrap();
        assert_eq!(f.sent_through(), Position(1), "not every sink has 2");
        assert_eq!(received(&mut ra), [1, 2]);
        assert_eq!(received(&mut rb), [1]);
        f.send(position(3)).await.unwrap();
        assert_eq!(f.sent_through(), Position(3));
        assert_eq!(received(&mut rb), [3]);
    }

    #[tokio::test]
    async fn a_closed_queue_is_reported() {
        let (a, _ra) = mpsc::channel(4);
        let (b, rb) = mpsc::channel(4);
        drop(rb);
        let f = Fanout::new(vec![a, b]);
        assert!(f.send(batch(1)).await.is_err());
        assert!(f.barrier().await.is_err());
    }

    #[tokio::test]
    async fn a_barrier_returns_once_every_sink_answered() {
        let (a, mut ra) = mpsc::channel(4);
        let (b, mut rb) = mpsc::channel(4);
        let f = Fanout::new(vec![a, b]);
        let answer = |mut rx: mpsc::Receiver<SinkMsg>| async move {
            while let Some(m) = rx.recv().await {
                if let SinkMsg::Barrier(done) = m {
                    let _ = done.send(());
                }
            }
        };
        f.send(batch(1)).await.unwrap();
        assert_eq!(received(&mut ra), [1]);
        assert_eq!(received(&mut rb), [1]);
        tokio::spawn(answer(ra));
        tokio::spawn(answer(rb));
        f.barrier().await.unwrap();
    }
}
