use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use courier_core::Lsn;
use courier_postgres::PgConfig;
use tokio::sync::watch;

use crate::config::{Config, Source};
use crate::jobs::{schedule, Jobs};
use crate::leadership::{self, Outcome};
use crate::status::{Role, Status};

/// `courier run`: streams until SIGINT/SIGTERM, then drains, acknowledges
/// and exits 0 (non-zero when the stop did not finish in
/// `pipeline.shutdown_timeout`). With a PostgreSQL source it first takes
/// the lead of the slot, waiting as a standby while another process holds it
/// (see `leadership`).
pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let jobs = Jobs::new(Arc::new(config.clone()));
    crate::telemetry::prometheus();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining sinks (a second signal stops at once)");
        let _ = tx.send(true);
        // Someone who asks twice does not want to wait for the drain:
        // nothing is lost, the next start replays from the slot.
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: stopping without draining; the next start replays from the slot");
        std::process::exit(130);
    });
    let sink_kinds: Vec<(String, String)> = (config.sinks.iter())
        .map(|(n, (k, _))| (n.clone(), k.clone()))
        .collect();
    // The API answers from the start: a standby says so, a leader that
    // prepares its source says it is not streaming yet.
    let first_status = match &config.source {
        Source::Postgres(s) => Status::new(&s.slot, &s.publication, &sink_kinds, Lsn::ZERO),
        Source::Kafka(k) => Status::for_kafka(&k.group, &sink_kinds),
    };
    let (status_tx, status_rx) = watch::channel(first_status.clone());
    let api = match (config.api.listen, config.api.token.clone()) {
        (Some(addr), token) => {
            Some(crate::api::serve(addr, token, status_rx.clone(), jobs.clone()).await?)
        }
        (None, _) => None,
    };
    // Periodic verifications run only while this instance streams.
    let schedule = schedule::start(&jobs, status_rx);
    let lead = match &config.source {
        Source::Postgres(s) => {
            let pg = PgConfig::from_url(&s.url).context("source.url")?;
            let on_standby = || first_status.set_role(Role::Standby);
            match leadership::wait_for_lead(&pg, &s.slot, rx.clone(), on_standby)
                .await
                .context("courier run")?
            {
                Outcome::Leading(lead) => Some(lead),
                Outcome::Shutdown => {
                    tracing::info!("stopped while standby");
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Source::Kafka(_) => None,
    };
    first_status.set_role(Role::Leader);
    let prepared = crate::pipeline::prepare(config)
        .await
        .context("courier run")?;
    let _ = status_tx.send(prepared.status().clone());
    let result = match lead {
        // Dropping the lead, once the run is over, lets a standby take over.
        Some(lead) => tokio::select! {
            r = crate::pipeline::run(prepared, rx) => r,
            lost = lead.hold() => Err(lost),
        },
        None => crate::pipeline::run(prepared, rx).await,
    };
    drop(schedule);
    drop(api);
    result.context("courier run")?;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
