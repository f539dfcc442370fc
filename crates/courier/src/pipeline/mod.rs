//! `courier run`: prepare PostgreSQL, snapshot what needs it, then stream
//! into every sink until SIGINT/SIGTERM, acknowledging only what every sink
//! applied (DESIGN §1.1, §2).

mod fanout;
mod housekeeping;
mod metrics;
mod sink_task;
mod snapshot;
pub mod status;
mod stream;

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
use tokio::task::JoinSet;

pub use fanout::Fanout;
pub use sink_task::error_chain;
use sink_task::{run_sink, SinkExit};
pub use status::Status;

use crate::backoff::Backoff;
use crate::config::{Config, SnapshotMode};

/// Runs Courier until shutdown is signalled; returns an error for a failure
/// a person must fix (the message says what).
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
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
    let start = existing
        .as_ref()
        .map(|s| s.confirmed_flush)
        .unwrap_or(Lsn::ZERO);

    let source = SourceInfo {
        name: config.source.slot.clone(),
        database,
    };
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

    let (fanout, mut sink_tasks) = start_sinks(&config, &source, &status).await?;
    let api = match config.api.listen {
        Some(addr) => {
            Some(crate::api::serve(addr, config.api.token.clone(), status.clone()).await?)
        }
        None => None,
    };
    let catalog = Catalog::new(Arc::new(client));

    // The first run creates the slot and copies every table under its
    // exported snapshot before streaming: the export lives only while the
    // connection that made it stays idle.
    let first_run = async {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            if slot_info(catalog.client(), &config.source.slot)
                .await?
                .is_some()
            {
                return Ok::<(), anyhow::Error>(());
            }
            let result = create_slot_and_snapshot(
                &config,
                &pg,
                &catalog,
                &tables,
                &fanout,
                &status,
                state.clone(),
            )
            .await;
            match result {
                Ok(()) => return Ok(()),
                // The slot exists now; the remaining chunks are copied below.
                Err(e) if snapshot_retriable(&e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64,
                        "snapshot interrupted; resuming the remaining chunks under a new snapshot");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    let mut first_run_shutdown = shutdown.clone();
    tokio::select! {
        r = first_run => r?,
        _ = first_run_shutdown.changed() => {
            tracing::info!("shutdown requested during the snapshot; progress is saved");
            return Ok(());
        }
        Some(exit) = sink_tasks.join_next() => return sink_failed(exit),
    }

    // Chunks left by an interrupted snapshot, and tables new to the config,
    // are copied under a temporary slot's snapshot while the stream runs:
    // their rows carry that snapshot's consistent point as version, so they
    // and the streamed changes meet in the sinks by version, in any order.
    snapshot::update_plan(
        state.as_ref(),
        &config.source.slot,
        &tables,
        config.source.snapshot_chunk_rows,
        config.source.snapshot_parallelism,
        config.source.snapshot == SnapshotMode::Initial,
    )?;
    let mut catch_up = tokio::spawn(catch_up_until_done(CatchUp {
        pg: pg.clone(),
        catalog: catalog.clone(),
        tables: tables.clone(),
        fanout: fanout.clone(),
        status: status.clone(),
        state: state.clone(),
        slot: config.source.slot.clone(),
        parallelism: config.source.snapshot_parallelism,
    }));
    let mut catch_up_running = true;

    let mut tasks = JoinSet::new();
    if let Some(every) = config.source.heartbeat {
        tasks.spawn(housekeeping::heartbeat(pg.clone(), every, shutdown.clone()));
    }
    tasks.spawn(housekeeping::poll_positions(
        pg.clone(),
        config.source.slot.clone(),
        status.clone(),
        shutdown.clone(),
    ));

    let ctx = stream::StreamContext {
        pg: pg.clone(),
        slot: config.source.slot.clone(),
        publication: config.source.publication.clone(),
        pipeline: config.pipeline.clone(),
        status_interval: config.source.status_interval,
        fanout: fanout.clone(),
        status: status.clone(),
    };
    let stream = stream::stream_until_shutdown(ctx, shutdown.clone());
    tokio::pin!(stream);
    let result = loop {
        tokio::select! {
            r = &mut stream => break r,
            Some(exit) = sink_tasks.join_next() => break sink_failed(exit),
            r = &mut catch_up, if catch_up_running => {
                catch_up_running = false;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(e),
                    Err(e) => break Err(anyhow::anyhow!("snapshot task ended abnormally: {e}")),
                }
            }
        }
    };
    catch_up.abort();
    drop(fanout);
    while let Some(exit) = sink_tasks.join_next().await {
        if let Err(e) = sink_failed(exit) {
            tracing::error!(error = %format!("{e:#}"), "sink");
        }
    }
    tasks.abort_all();
    drop(api);
    result
}

/// What the background snapshot needs.
struct CatchUp {
    pg: PgConfig,
    catalog: Catalog,
    tables: Vec<SourceTable>,
    fanout: Fanout,
    status: Status,
    state: Arc<dyn StateStore>,
    slot: String,
    parallelism: usize,
}

/// Copies what the snapshot plan still lacks (see `snapshot::catch_up`),
/// retrying after errors a new snapshot can get past.
async fn catch_up_until_done(c: CatchUp) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let plan = snapshot::load_plan(c.state.as_ref(), &c.slot)?.unwrap_or_default();
        let result = snapshot::catch_up(
            &c.pg,
            &c.catalog,
            plan,
            &c.tables,
            c.parallelism,
            c.fanout.clone(),
            c.status.clone(),
            c.state.clone(),
            &c.slot,
        )
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if snapshot_retriable(&e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64,
                    "snapshot interrupted; resuming the remaining chunks under a new snapshot");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a failed snapshot can be resumed by trying again: the server was
/// unreachable, or a table's columns changed while it was being copied.
fn snapshot_retriable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(p) = c.downcast_ref::<courier_postgres::PgError>() {
            return p.is_retriable() || matches!(p.code(), Some("42703" | "42P01" | "42804"));
        }
        if let Some(s) = c.downcast_ref::<courier_postgres::snapshot::SnapshotError>() {
            return s.is_retriable();
        }
        false
    })
}

fn sink_failed(exit: Result<SinkExit, tokio::task::JoinError>) -> anyhow::Result<()> {
    match exit {
        Ok(SinkExit::Drained) => Ok(()),
        Ok(SinkExit::Failed(msg)) => bail!("{msg}"),
        Err(e) => bail!("sink task ended abnormally: {e}"),
    }
}

async fn start_sinks(
    config: &Config,
    source: &SourceInfo,
    status: &Status,
) -> anyhow::Result<(Fanout, JoinSet<SinkExit>)> {
    let mut queues = Vec::new();
    let mut tasks = JoinSet::new();
    for (name, (kind, settings)) in &config.sinks {
        let sink = courier_sinks::build_sink(name, kind, settings.clone(), source)
            .await
            .with_context(|| format!("build sink {name}"))?;
        let (tx, rx) = mpsc::channel(config.pipeline.queue_batches);
        queues.push(tx);
        tasks.spawn(run_sink(name.clone(), sink, rx, status.clone()));
    }
    Ok((Fanout::new(queues), tasks))
}

async fn create_slot_and_snapshot(
    config: &Config,
    pg: &PgConfig,
    catalog: &Catalog,
    tables: &[courier_postgres::setup::SourceTable],
    fanout: &Fanout,
    status: &Status,
    state: Arc<dyn StateStore>,
) -> anyhow::Result<()> {
    let slot = &config.source.slot;
    let mut repl = ReplicationClient::connect(pg)
        .await
        .context("open replication connection")?;
    let export = config.source.snapshot == SnapshotMode::Initial;
    // Record the plan before the slot exists: if Courier dies between the two,
    // the next run finds a slot with a plan and resumes the snapshot.
    let mut plan = SnapshotPlan::default();
    if export {
        for t in tables {
            plan.add_table(
                t,
                config.source.snapshot_chunk_rows,
                config.source.snapshot_parallelism,
            );
        }
    } else {
        plan.done = tables.iter().map(|t| t.id.to_string()).collect();
    }
    state
        .put_json(&snapshot::plan_key(slot), &plan)
        .context("save snapshot plan")?;
    let created = repl
        .create_logical_slot(slot, false, export)
        .await
        .with_context(|| format!("create replication slot {slot}"))?;
    tracing::info!(slot = %slot, consistent_point = %created.consistent_point, "created replication slot");
    status.watermark.advance_all(created.consistent_point);
    if !export {
        return Ok(());
    }
    let snapshot_name = created
        .snapshot_name
        .context("the new slot exported no snapshot")?;
    let result = snapshot::run_snapshot(
        pg,
        catalog,
        tables,
        &snapshot_name,
        created.consistent_point,
        plan,
        config.source.snapshot_parallelism,
        fanout.clone(),
        status.clone(),
        state,
        slot,
    )
    .await;
    drop(repl);
    result
}
