//! Runs one sink: applies its queue in order, retries retriable errors with
//! backoff, and reports progress to the watermark.

use std::time::Duration;

use courier_core::{Batch, Op, Sink};
use tokio::sync::mpsc;

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

/// Applies batches from `rx` until the queue closes or a fatal error.
pub async fn run_sink(
    name: String,
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<SinkMsg>,
    status: Status,
) -> SinkExit {
    while let Some(msg) = rx.recv().await {
        let batch = match msg {
            SinkMsg::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
            SinkMsg::Batch(b) => b,
        };
        if !batch.is_empty() {
            if let Err(e) = apply_with_retry(&name, sink.as_mut(), &batch, &status).await {
                return SinkExit::Failed(e);
            }
        }
        let last_commit_time = batch
            .changes
            .iter()
            .rev()
            .find(|c| c.op != Op::Read)
            .map(|c| c.commit_time_us);
        status.sink_applied(&name, batch.through, batch.len() as u64, last_commit_time);
    }
    if let Err(e) = sink.close().await {
        tracing::warn!(sink = %name, error = %e, "closing sink");
    }
    SinkExit::Drained
}

async fn apply_with_retry(
    name: &str,
    sink: &mut dyn Sink,
    batch: &Batch,
    status: &Status,
) -> Result<(), String> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        match sink.apply(batch).await {
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
