//! Watching a running pipeline: the source (snapshot and stream), every
//! sink task, and the shutdown signal. The first of them to end decides how
//! the run ends; the shutdown deadline bounds how long a stop may take.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use courier_core::Lsn;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fanout::{Fanout, SinkGone};
use super::sink_task::{SinkExit, SinkFailure};
use crate::status::Status;

/// The running sink tasks, each returning its name with its exit.
pub struct SinkTasks {
    tasks: JoinSet<(String, SinkExit)>,
}

impl SinkTasks {
    pub fn new() -> Self {
        SinkTasks {
            tasks: JoinSet::new(),
        }
    }

    /// Runs `task`, the sink `name`, until it ends.
    pub fn spawn(&mut self, name: String, task: impl Future<Output = SinkExit> + Send + 'static) {
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// The next task to end: `Err` when it ended with a failure.
    async fn next(&mut self) -> Option<Result<String, Ended>> {
        Some(match self.tasks.join_next().await? {
            Ok((name, SinkExit::Drained)) => Ok(name),
            Ok((_, SinkExit::Failed(f))) => Err(Ended::SinkFailed(f)),
            Err(e) => Err(Ended::Abnormal(e.to_string())),
        })
    }

    /// Stops every task still running and waits until they are gone.
    async fn stop(&mut self) {
        self.tasks.shutdown().await;
    }
}

/// How the run ended, when not cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sink(#[from] SinkFailure),
    #[error("a sink task ended abnormally: {0}")]
    SinkAbnormal(String),
    #[error(
        "shutdown did not finish within shutdown_timeout ({timeout:?}): {} did not apply everything \
         (see the sinks' errors above); the next start replays from {}. Raise pipeline.shutdown_timeout \
         to wait longer",
        sinks_text(.sinks), replay_text(.replay_from)
    )]
    ShutdownTimedOut {
        timeout: Duration,
        sinks: Vec<String>,
        replay_from: Option<Lsn>,
    },
}

fn sinks_text(sinks: &[String]) -> String {
    match sinks {
        [] => "the replication stream".into(),
        [one] => format!("sink {one}"),
        many => format!("sinks {}", many.join(", ")),
    }
}

fn replay_text(lsn: &Option<Lsn>) -> String {
    match lsn {
        Some(l) => format!("LSN {l}"),
        None => "the slot's confirmed_flush_lsn".into(),
    }
}

enum Ended {
    Source(anyhow::Result<()>),
    SinkFailed(SinkFailure),
    Abnormal(String),
    Deadline,
}

/// Runs `source` (which owns the other `Fanout` clones) beside the sink
/// tasks until one of them ends, then stops the rest:
///
/// * the source returned `Ok` (it stopped for shutdown, after its final
///   barrier): the queues close and every sink drains what is left;
/// * the source or a sink failed: everything stops at once, the failure is
///   returned (nothing more is acknowledged, so draining would be wasted);
/// * `shutdown_timeout` after shutdown was requested, whatever is still
///   running is stopped, and the error names the sinks that did not apply
///   everything and the LSN the next start replays from.
pub async fn supervise(
    source: impl Future<Output = anyhow::Result<()>>,
    mut sinks: SinkTasks,
    fanout: Fanout,
    status: &Status,
    mut shutdown: watch::Receiver<bool>,
    shutdown_timeout: Duration,
) -> anyhow::Result<()> {
    let mut source = Box::pin(source);
    let mut deadline = shutdown.borrow().then(|| Instant::now() + shutdown_timeout);
    let ended = loop {
        tokio::select! {
            r = &mut source => break Ended::Source(r),
            Some(exit) = sinks.next() => match exit {
                // A queue closes only once the source is gone.
                Ok(_) => {}
                Err(e) => break e,
            },
            changed = shutdown.changed(), if deadline.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    deadline = Some(Instant::now() + shutdown_timeout);
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => break Ended::Deadline,
        }
    };
    // Dropping the source releases its fan-out clones; with ours gone too,
    // the queues close and a sink that drained everything ends.
    drop(source);
    let sent_through = fanout.sent_through();
    drop(fanout);

    let ended = match ended {
        Ended::Source(Ok(())) => {
            let deadline = deadline.unwrap_or_else(|| Instant::now() + shutdown_timeout);
            drain(&mut sinks, deadline).await
        }
        // A sink that stopped makes the source fail to send: its own error
        // says more.
        Ended::Source(Err(e)) if e.chain().any(|c| c.is::<SinkGone>()) => {
            let grace = Instant::now() + Duration::from_secs(1);
            match drain(&mut sinks, grace).await {
                Ended::SinkFailed(f) => Ended::SinkFailed(f),
                _ => Ended::Source(Err(e)),
            }
        }
        other => other,
    };
    let unfinished = || {
        status
            .watermark
            .per_sink()
            .into_iter()
            .filter(|(_, applied)| *applied < sent_through)
            .map(|(name, _)| name)
            .collect::<BTreeSet<_>>()
    };
    let result = match ended {
        Ended::Source(r) => r,
        Ended::SinkFailed(f) => Err(RunError::Sink(f).into()),
        Ended::Abnormal(e) => Err(RunError::SinkAbnormal(e).into()),
        Ended::Deadline => Err(RunError::ShutdownTimedOut {
            timeout: shutdown_timeout,
            sinks: unfinished().into_iter().collect(),
            replay_from: status.acknowledged(),
        }
        .into()),
    };
    sinks.stop().await;
    result
}

/// Waits until every sink task ended or `deadline`; a failure ends it early.
async fn drain(sinks: &mut SinkTasks, deadline: Instant) -> Ended {
    loop {
        tokio::select! {
            exit = sinks.next() => match exit {
                None => return Ended::Source(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return e,
            },
            _ = tokio::time::sleep_until(deadline) => return Ended::Deadline,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
