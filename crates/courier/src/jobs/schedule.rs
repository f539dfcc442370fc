//! `sinks.NAME.verify_every`: `courier run` verifies such a sink on that
//! period, as if asked through the admin API. A period comes while the
//! instance streams; one that finds the instance not streaming (a standby,
//! a run still preparing its source) or a job still running on the sink is
//! skipped, and the next one tries again.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use super::{Jobs, Request, StartError, Trigger, VERIFY_TIMEOUT};
use crate::status::Status;

/// The periodic verifications; dropping it stops them (a job already
/// started runs to its end).
pub struct Schedule(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Schedule {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Starts a verification of each sink with `verify_every` on its period,
/// the first one period from now; `status` tells whether the instance
/// streams.
pub fn start(jobs: &Jobs, status: watch::Receiver<Status>) -> Schedule {
    let tasks = (jobs.config().verify_every.iter())
        .map(|(sink, every)| {
            tokio::spawn(every_period(
                jobs.clone(),
                sink.clone(),
                *every,
                status.clone(),
            ))
        })
        .collect();
    Schedule(tasks)
}

async fn every_period(jobs: Jobs, sink: String, every: Duration, status: watch::Receiver<Status>) {
    let mut tick = interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !status.borrow().is_streaming() {
            tracing::debug!(sink = %sink, "periodic verify skipped: this Courier is not streaming");
            continue;
        }
        let request = Request::Verify {
            tables: Vec::new(),
            repair: false,
            // A sink that fell behind under load has up to a period to
            // catch up with the snapshot (and never less than the CLI gives).
            timeout: every.max(VERIFY_TIMEOUT),
        };
        match jobs.start(&sink, request, Trigger::Schedule) {
            Ok(_) => {}
            Err(StartError::Busy { id, .. }) => {
                tracing::info!(sink = %sink, job = id, "periodic verify skipped: a job still runs on the sink");
            }
            Err(e) => {
                // The configuration does not change while it runs: no later period would do better.
                tracing::error!(sink = %sink, error = %e, "periodic verify stopped");
                return;
            }
        }
    }
}
