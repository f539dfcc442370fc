//! Hands each batch to every sink through its own bounded queue, so a slow
//! sink slows the stream (backpressure) instead of growing memory.

use std::sync::Arc;

use courier_core::Batch;
use tokio::sync::{mpsc, oneshot};

/// What a sink task receives.
pub enum SinkMsg {
    Batch(Arc<Batch>),
    /// Answered once every message before it has been applied.
    Barrier(oneshot::Sender<()>),
}

/// The sending side of every sink's queue.
#[derive(Clone)]
pub struct Fanout {
    queues: Vec<mpsc::Sender<SinkMsg>>,
}

/// Every sink task has stopped (a fatal error or shutdown).
#[derive(Debug, thiserror::Error)]
#[error("a sink stopped; see its error above")]
pub struct SinkGone;

impl Fanout {
    pub fn new(queues: Vec<mpsc::Sender<SinkMsg>>) -> Self {
        Fanout { queues }
    }

    /// Queues the batch for every sink, waiting while a queue is full.
    ///
    /// Cancel-safe: if the future is dropped before it completes, no sink has
    /// received the batch... unless some queues already had; callers only
    /// cancel on shutdown, after which nothing is acknowledged past the
    /// watermark, so a partially sent batch is harmless.
    pub async fn send(&self, batch: Batch) -> Result<(), SinkGone> {
        let batch = Arc::new(batch);
        for q in &self.queues {
            q.send(SinkMsg::Batch(batch.clone()))
                .await
                .map_err(|_| SinkGone)?;
        }
        Ok(())
    }

    /// Waits until every sink has applied everything sent before this call.
    pub async fn barrier(&self) -> Result<(), SinkGone> {
        let mut waits = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            let (tx, rx) = oneshot::channel();
            q.send(SinkMsg::Barrier(tx)).await.map_err(|_| SinkGone)?;
            waits.push(rx);
        }
        for w in waits {
            w.await.map_err(|_| SinkGone)?;
        }
        Ok(())
    }
}
