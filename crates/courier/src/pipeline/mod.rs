//! `courier run`: prepare PostgreSQL, snapshot what needs it, then stream
//! into every sink until SIGINT/SIGTERM, acknowledging only what every sink
//! applied (DESIGN §1.1, §2).
//!
//! The stages, in the order a change meets them: [`prepare`] checks the
//! source and resolves what to capture; [`run`] starts one task per sink
//! behind the fan-out, then the source side ([`capture`]: the first
//! snapshot, then the stream beside the catch-up snapshot), and supervises
//! them all until shutdown or a failure (`supervise`).

mod batcher;
mod errors;
mod fanout;
mod housekeeping;
#[cfg(test)]
mod memory_sink;
mod metrics;
mod sink_task;
mod snapshot;
mod stream;
mod supervise;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use courier_core::{LocalStateStore, Lsn, StateStore};
use courier_postgres::catalog::Catalog;
use courier_postgres::setup::{
    ensure_publication, preflight, resolve_tables, slot_info, SourceTable,
};
use courier_postgres::snapshot::SnapshotPlan;
use courier_postgres::{PgConfig, ReplicationClient};
use courier_sinks::envelope::SourceInfo;
use tokio::sync::{mpsc, watch};

pub use fanout::Fanout;
pub use sink_task::error_chain;
use sink_task::run_sink;
use snapshot::Snapshotter;
use supervise::{supervise, SinkTasks};

use crate::config::{Config, SnapshotMode};
use crate::retry::{retry, Backoff};
use crate::status::Status;

/// A source checked and ready to capture: what [`run`] starts from.
pub struct Prepared {
    config: Config,
    pg: PgConfig,
    tables: Vec<SourceTable>,
    state: Arc<dyn StateStore>,
    source: SourceInfo,
    status: Status,
}

impl Prepared {
    /// The status the run updates (for the admin API).
    pub fn status(&self) -> &Status {
        &self.status
    }
}

/// Checks PostgreSQL (privileges, tables, keys), creates the publication if
/// missing and opens the state store. Errors name what a person must fix.
pub async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let pg = PgConfig::from_url(&config.source.url).context("source.url")?;
    let client = pg
        .connect()
        .await
        .with_context(|| format!("connect to {}", pg.redacted()))?;
    let database = client
        .query_one("SELECT current_database()", &[])
        .await
        .context("query current database")?
        .get::<_, String>(0);
    preflight(&client).await?;
    let tables = resolve_tables(
        &client,
        &config.source.tables,
        &config.source.table_patterns,
    )
    .await?;
    ensure_publication(&client, &config.source.publication, &tables).await?;
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::open(&config.state_dir)?);

    let existing = slot_info(&client, &config.source.slot).await?;
    if let Some(pid) = existing.as_ref().and_then(|s| s.active_pid) {
        bail!(
            "replication slot {} is in use by PostgreSQL backend pid {pid}: is another Courier running with this slot? \
             Stop it, or use another source.slot",
            config.source.slot
        );
    }
    let start = existing.map(|s| s.confirmed_flush).unwrap_or(Lsn::ZERO);
    let sink_kinds: Vec<(String, String)> = config
        .sinks
        .iter()
        .map(|(n, (k, _))| (n.clone(), k.clone()))
        .collect();
    let status = Status::new(
        &config.source.slot,
        &config.source.publication,
        &sink_kinds,
        start,
    );
    Ok(Prepared {
        source: SourceInfo {
            name: config.source.slot.clone(),
            database,
        },
        config,
        pg,
        tables,
        state,
        status,
    })
}

/// Runs Courier until shutdown is signalled; returns an error for a failure
/// a person must fix (the message says what).
pub async fn run(p: Prepared, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (fanout, sinks) = start_sinks(&p);
    let snapshotter = Snapshotter {
        pg: p.pg.clone(),
        tables: p.tables.clone(),
        parallelism: p.config.source.snapshot_parallelism,
        fanout: fanout.clone(),
        status: p.status.clone(),
        state: p.state.clone(),
        slot: p.config.source.slot.clone(),
    };
    supervise(
        capture(&p, snapshotter, shutdown.clone()),
        sinks,
        fanout,
        &p.status,
        shutdown,
        p.config.pipeline.shutdown_timeout,
    )
    .await
}

/// One task per sink, each behind its own bounded queue. A sink connects
/// inside its task, so a store that is down at start is retried like one
/// that goes away later.
fn start_sinks(p: &Prepared) -> (Fanout, SinkTasks) {
    let mut queues = Vec::new();
    let mut tasks = SinkTasks::new();
    for (name, (kind, settings)) in &p.config.sinks {
        let (tx, rx) = mpsc::channel(p.config.pipeline.queue_batches);
        queues.push(tx);
        let (name, kind, settings, source) = (
            name.clone(),
            kind.clone(),
            settings.clone(),
            p.source.clone(),
        );
        let build = {
            let name = name.clone();
            move || {
                let (name, kind, settings, source) =
                    (name.clone(), kind.clone(), settings.clone(), source.clone());
                async move { courier_sinks::build_sink(&name, &kind, settings, &source).await }
            }
        };
        tasks.spawn(name.clone(), run_sink(name, build, rx, p.status.clone()));
    }
    (Fanout::new(queues), tasks)
}

/// The source side of a run: the first snapshot (when the slot is new),
/// then the replication stream while the catch-up snapshot copies what the
/// plan still lacks. Ends `Ok` once it stopped for shutdown.
async fn capture(
    p: &Prepared,
    snapshotter: Snapshotter,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tokio::select! {
        r = first_snapshot(p, &snapshotter) => r?,
        _ = shutdown.changed() => {
            tracing::info!("shutdown requested during the snapshot; progress is saved");
            return Ok(());
        }
    }

    // Chunks left by an interrupted snapshot, and tables new to the config,
    // are copied under a temporary slot's snapshot while the stream runs:
    // their rows carry that snapshot's consistent point as version, so they
    // and the streamed changes meet in the sinks by version, in any order.
    // Once the slot exists: its position is what the poller reports.
    let _housekeeping = housekeeping::spawn(&p.config.source, &p.pg, &p.status, &shutdown);
    let source = &p.config.source;
    snapshot::update_plan(
        p.state.as_ref(),
        &source.slot,
        &p.tables,
        source.snapshot_chunk_rows,
        source.snapshot_parallelism,
        source.snapshot == SnapshotMode::Initial,
    )?;
    let ctx = stream::StreamContext {
        pg: p.pg.clone(),
        slot: source.slot.clone(),
        publication: source.publication.clone(),
        pipeline: p.config.pipeline.clone(),
        status_interval: source.status_interval,
        fanout: snapshotter.fanout.clone(),
        status: p.status.clone(),
    };
    let mut catch_up_shutdown = shutdown.clone();
    let catch_up = async {
        tokio::select! {
            r = catch_up_until_done(&snapshotter) => r,
            // Progress is saved per chunk: the next run resumes.
            _ = catch_up_shutdown.changed() => Ok(()),
        }
    };
    tokio::try_join!(catch_up, stream::stream_until_shutdown(ctx, shutdown))?;
    Ok(())
}

/// Snapshot errors are retried from this delay up to the cap.
fn snapshot_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
}

fn log_snapshot_retry(e: &anyhow::Error, wait: Duration) {
    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64,
        "snapshot interrupted; resuming the remaining chunks under a new snapshot");
}

/// On the first run, creates the slot and copies every table under its
/// exported snapshot (the export lives only while the connection that made
/// it stays idle). Each attempt opens its own connections: PostgreSQL may
/// have restarted since the last one.
async fn first_snapshot(p: &Prepared, snapshotter: &Snapshotter) -> anyhow::Result<()> {
    retry(
        snapshot_backoff(),
        errors::snapshot_can_resume,
        log_snapshot_retry,
        || async {
            let catalog = connect_catalog(&p.pg).await?;
            if slot_info(catalog.client(), &p.config.source.slot)
                .await?
                .is_some()
            {
                // The slot exists: what is left is copied by the catch-up.
                return Ok(());
            }
            create_slot_and_snapshot(p, snapshotter, &catalog).await
        },
    )
    .await
}

/// Copies what the snapshot plan still lacks (see `Snapshotter::catch_up`),
/// retrying after errors a new snapshot can get past, on new connections.
async fn catch_up_until_done(s: &Snapshotter) -> anyhow::Result<()> {
    retry(
        snapshot_backoff(),
        errors::snapshot_can_resume,
        log_snapshot_retry,
        || async {
            let plan = snapshot::load_plan(s.state.as_ref(), &s.slot)?.unwrap_or_default();
            if plan.is_complete() {
                return Ok(());
            }
            let catalog = connect_catalog(&s.pg).await?;
            s.catch_up(&catalog, plan).await
        },
    )
    .await
}

/// A new connection for catalog look-ups.
async fn connect_catalog(pg: &PgConfig) -> anyhow::Result<Catalog> {
    let client = pg
        .connect()
        .await
        .with_context(|| format!("connect to {}", pg.redacted()))?;
    Ok(Catalog::new(Arc::new(client)))
}

async fn create_slot_and_snapshot(
    p: &Prepared,
    snapshotter: &Snapshotter,
    catalog: &Catalog,
) -> anyhow::Result<()> {
    let source = &p.config.source;
    let slot = &source.slot;
    let mut repl = ReplicationClient::connect(&p.pg)
        .await
        .context("open replication connection")?;
    let export = source.snapshot == SnapshotMode::Initial;
    // Record the plan before the slot exists: if Courier dies between the two,
    // the next run finds a slot with a plan and resumes the snapshot.
    let mut plan = SnapshotPlan::default();
    if export {
        for t in &p.tables {
            plan.add_table(t, source.snapshot_chunk_rows, source.snapshot_parallelism);
        }
    } else {
        plan.done = p.tables.iter().map(|t| t.id.to_string()).collect();
    }
    p.state
        .put_json(&snapshot::plan_key(slot), &plan)
        .context("save snapshot plan")?;
    let created = repl
        .create_logical_slot(slot, false, export)
        .await
        .with_context(|| format!("create replication slot {slot}"))?;
    tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "created replication slot");
    p.status
        .watermark
        .advance_all(created.consistent_point.into());
    if !export {
        return Ok(());
    }
    let snapshot_name = created
        .snapshot_name
        .context("the new slot exported no snapshot")?;
    let result = snapshotter
        .copy(catalog, &snapshot_name, created.consistent_point, plan)
        .await;
    drop(repl);
    result
}
