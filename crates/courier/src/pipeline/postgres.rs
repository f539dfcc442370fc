//! The PostgreSQL source: prepare the database (preflight, tables,
//! publication, state store, the slot's position), then capture: the first
//! snapshot when the slot is new, then the replication stream beside the
//! catch-up snapshot. Its positions are LSNs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use courier_core::{LocalStateStore, Lsn, StateStore};
use courier_postgres::catalog::Catalog;
use courier_postgres::setup::{
    drop_slot, ensure_publication, preflight, resolve_tables, slot_info, SetupError, SourceTable,
};
use courier_postgres::snapshot::SnapshotPlan;
use courier_postgres::{PgConfig, ReplicationClient};
use courier_sinks::envelope::SourceInfo;
use tokio::sync::watch;

use super::fanout::Fanout;
use super::snapshot::{self, Snapshotter};
use super::{errors, housekeeping, stream};
use crate::config::{Config, OnSlotLost, Origin, SnapshotMode, SourceConfig};
use crate::outbox::Outbox;
use crate::retry::{retry, Backoff};
use crate::status::Status;

/// A PostgreSQL source checked and ready to capture.
pub(super) struct PgSource {
    source: SourceConfig,
    pg: PgConfig,
    tables: Vec<SourceTable>,
    state: Arc<dyn StateStore>,
    outbox: Outbox,
    /// PostgreSQL had invalidated the slot and `on_slot_lost = "rebuild"`
    /// made a new one: the stores are repaired after the snapshot.
    slot_was_lost: bool,
    /// `source.streaming` resolved for this server.
    streaming: bool,
}

/// Checks PostgreSQL (privileges, tables, keys), creates the publication if
/// missing and opens the state store. Errors name what a person must fix.
pub(super) async fn prepare(
    config: &Config,
    sink_kinds: &[(String, String)],
) -> anyhow::Result<(PgSource, SourceInfo, Status)> {
    let source = config.source.postgres("courier run")?.clone();
    let pg = PgConfig::from_url(&source.url).context("source.url")?;
    let client = Arc::new(
        pg.connect()
            .await
            .with_context(|| format!("connect to {}", pg.redacted()))?,
    );
    let database = client
        .query_one("SELECT current_database()", &[])
        .await
        .context("query current database")?
        .get::<_, String>(0);
    preflight(&client).await?;
    let version = server_version_num(&client).await?;
    check_standby(&client, &source, version).await?;
    let outbox = Outbox::prepare(&mut Catalog::new(Arc::clone(&client)), &config.outbox).await?;
    let mut tables = resolve_tables(&client, &source.tables, &source.table_patterns).await?;
    outbox.leave_out(&mut tables);
    let published = [tables.as_slice(), outbox.tables()].concat();
    ensure_publication(
        &client,
        &source.publication,
        &published,
        source.generated_columns(),
    )
    .await?;
    let state: Arc<dyn StateStore> = Arc::new(LocalStateStore::open(&config.state_dir)?);

    let mut slot_was_lost = false;
    let existing = match slot_info(&client, &source.slot).await {
        Err(lost @ SetupError::SlotLost { .. }) if source.on_slot_lost == OnSlotLost::Rebuild => {
            tracing::error!(slot = %source.slot, "{lost}");
            tracing::warn!(slot = %source.slot,
                "on_slot_lost = \"rebuild\": dropping the lost slot, snapshotting every table under a new one, \
                 then repairing every store that can be read back");
            drop_slot(&client, &source.slot).await?;
            state
                .delete(&snapshot::plan_key(&source.slot))
                .context("forget the lost slot's snapshot progress")?;
            slot_was_lost = true;
            None
        }
        other => other?,
    };
    if let Some(pid) = existing.as_ref().and_then(|s| s.active_pid) {
        bail!(
            "replication slot {} is in use by PostgreSQL backend pid {pid}: is another Courier running with this slot? \
             Stop it, or use another source.slot",
            source.slot
        );
    }
    if source.origin == Origin::None && version < 160_000 {
        bail!(
            "source.origin = \"none\" needs PostgreSQL 16 or later; this server's version is {version}: \
             remove source.origin, or upgrade"
        );
    }
    let streaming = source
        .streaming
        .resolve(version)
        .map_err(anyhow::Error::msg)?;
    if source.failover {
        prepare_failover(&client, &pg, &source.slot, existing.is_some(), version).await?;
    }
    let start = existing.map(|s| s.confirmed_flush).unwrap_or(Lsn::ZERO);
    let status = Status::new(&source.slot, &source.publication, sink_kinds, start);
    let info = SourceInfo {
        name: source.slot.clone(),
        database,
    };
    Ok((
        PgSource {
            source,
            pg,
            tables,
            state,
            outbox,
            slot_was_lost,
            streaming,
        },
        info,
        status,
    ))
}

/// The server's `server_version_num` (e.g. 170006).
async fn server_version_num(client: &tokio_postgres::Client) -> anyhow::Result<u32> {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .context("query server_version_num")?
        .get(0);
    version
        .parse()
        .with_context(|| format!("server_version_num {version:?} is not a number"))
}

/// When `source.url` leads to a standby (logical decoding on a standby,
/// PostgreSQL 16+): refuses what a standby cannot do, and says what to
/// expect of it.
async fn check_standby(
    client: &tokio_postgres::Client,
    source: &SourceConfig,
    version: u32,
) -> anyhow::Result<()> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('hot_standby_feedback')",
            &[],
        )
        .await
        .context("query pg_is_in_recovery()")?;
    let (standby, feedback): (bool, String) = (row.get(0), row.get(1));
    if !standby {
        return Ok(());
    }
    if version < 160_000 {
        bail!(
            "source.url leads to a standby, and logical decoding on a standby needs PostgreSQL 16 or later; \
             this server's version is {version}: point source.url at the primary, or upgrade"
        );
    }
    if source.failover {
        bail!(
            "source.failover = true: a failover slot is created on the primary and copied to standbys, \
             and source.url leads to a standby: point source.url at the primary (see the README's Failover), \
             or remove source.failover"
        );
    }
    if source.heartbeat.is_some() {
        bail!(
            "source.heartbeat writes a WAL message, which a standby cannot do, and source.url leads to a \
             standby: remove source.heartbeat (the standby's slot moves with the primary's traffic)"
        );
    }
    if feedback != "on" {
        tracing::warn!(
            "source.url leads to a standby with hot_standby_feedback off: the primary may remove catalog \
             rows the slot still needs, and the standby then invalidates the slot; set hot_standby_feedback = on \
             on the standby (and give it a physical slot on the primary, primary_slot_name)"
        );
    }
    tracing::info!(
        "source.url leads to a standby: a new slot is created there once the primary logs its next \
         running-transactions record (within about 15 s while it is busy; SELECT pg_log_standby_snapshot() \
         on the primary logs one at once)"
    );
    Ok(())
}

/// `source.failover`: checks that the server has failover slots
/// (PostgreSQL 17+) and makes an existing slot one; a new slot is created as
/// one.
async fn prepare_failover(
    client: &tokio_postgres::Client,
    pg: &PgConfig,
    slot: &str,
    exists: bool,
    version: u32,
) -> anyhow::Result<()> {
    if version < 170_000 {
        bail!(
            "source.failover = true needs PostgreSQL 17 or later (failover slots); this server's version is {version}: \
             remove source.failover, or upgrade"
        );
    }
    if !exists {
        return Ok(());
    }
    let failover: bool = client
        .query_one(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .with_context(|| format!("look up replication slot {slot}"))?
        .get(0);
    if !failover {
        let mut repl = ReplicationClient::connect(pg)
            .await
            .context("open replication connection")?;
        repl.make_failover_slot(slot)
            .await
            .with_context(|| format!("make replication slot {slot} a failover slot"))?;
        tracing::info!(slot, "made the replication slot a failover slot");
    }
    Ok(())
}

/// The source side of a run: the first snapshot (when the slot is new),
/// then the replication stream while the catch-up snapshot copies what the
/// plan still lacks. Ends `Ok` once it stopped for shutdown.
pub(super) async fn capture(
    config: &Config,
    p: &PgSource,
    fanout: Fanout,
    status: &Status,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let snapshotter = Snapshotter {
        pg: p.pg.clone(),
        tables: p.tables.clone(),
        parallelism: p.source.snapshot_parallelism,
        fanout,
        status: status.clone(),
        state: p.state.clone(),
        slot: p.source.slot.clone(),
        generated_columns: p.source.generated_columns(),
    };
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
    let _housekeeping = housekeeping::spawn(&p.source, &p.pg, status, &shutdown);
    let source = &p.source;
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
        origin_none: source.origin == Origin::None,
        streaming: p.streaming.then(|| config.state_dir.join("streamed")),
        pipeline: config.pipeline.clone(),
        status_interval: source.status_interval,
        fanout: snapshotter.fanout.clone(),
        status: status.clone(),
        outbox: p.outbox.sources(),
    };
    let mut catch_up_shutdown = shutdown.clone();
    let catch_up = async {
        tokio::select! {
            r = catch_up_until_done(&snapshotter) => r,
            // Progress is saved per chunk: the next run resumes.
            _ = catch_up_shutdown.changed() => Ok(()),
        }
    };
    let mut repair_shutdown = shutdown.clone();
    let repair = async {
        if p.slot_was_lost {
            tokio::select! {
                _ = repair_after_lost_slot(config) => {}
                _ = repair_shutdown.changed() => {}
            }
        }
        Ok(())
    };
    tokio::try_join!(
        catch_up,
        stream::stream_until_shutdown(ctx, shutdown),
        repair
    )?;
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
async fn first_snapshot(p: &PgSource, snapshotter: &Snapshotter) -> anyhow::Result<()> {
    retry(
        snapshot_backoff(),
        errors::snapshot_can_resume,
        log_snapshot_retry,
        || async {
            let catalog = connect_catalog(&p.pg).await?;
            if slot_info(catalog.client(), &p.source.slot).await?.is_some() {
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
    p: &PgSource,
    snapshotter: &Snapshotter,
    catalog: &Catalog,
) -> anyhow::Result<()> {
    let source = &p.source;
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
    let created = if source.failover {
        repl.create_failover_slot(slot, export).await
    } else {
        repl.create_logical_slot(slot, false, export).await
    }
    .with_context(|| format!("create replication slot {slot}"))?;
    tracing::info!(slot = %slot, consistent_point = %created.consistent_point, failover = source.failover, "created replication slot");
    snapshotter
        .status
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

/// After a new slot replaced a lost one and its snapshot rewrote every row:
/// rows deleted in PostgreSQL while the slot was lost are still in the
/// stores; `verify --repair` removes them from every store it can read back.
async fn repair_after_lost_slot(config: &Config) {
    let opts = crate::verify::Options {
        sink: None,
        tables: Vec::new(),
        repair: true,
        timeout: Duration::from_secs(600),
        progress: crate::verify::Progress::default(),
    };
    match crate::verify::verify(config, &opts).await {
        Ok(report) => {
            for t in &report.tables {
                tracing::info!(sink = %t.sink, table = %t.table, repaired = t.repaired,
                    "store repaired after the lost slot");
            }
            for (sink, why) in &report.skipped {
                tracing::warn!(sink = %sink, reason = %why,
                    "this store was not repaired after the lost slot: rows deleted meanwhile may remain");
            }
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"),
            "repairing the stores after the lost slot failed; run `courier verify --repair`"),
    }
}
