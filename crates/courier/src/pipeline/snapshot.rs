//! Deciding what to snapshot and running it: the first run copies every
//! table under the new slot's exported snapshot; a resumed snapshot, or a
//! table added to the config later, is copied under a TEMPORARY slot's
//! exported snapshot (DESIGN §1.4). Progress lives in the state store.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use courier_core::{Batch, Lsn, Relation, StateStore};
use courier_postgres::catalog::Catalog;
use courier_postgres::setup::SourceTable;
use courier_postgres::snapshot::{
    copy_chunks, relation_from_catalog, Chunk, SnapshotOutput, SnapshotPlan,
};
use courier_postgres::{PgConfig, ReplicationClient};

use super::fanout::Fanout;
use super::status::Status;

/// The state-store key of the snapshot plan.
pub fn plan_key(slot: &str) -> String {
    format!("snapshot-{slot}")
}

/// Loads the plan, or `None` when this slot has none yet.
pub fn load_plan(state: &dyn StateStore, slot: &str) -> anyhow::Result<Option<SnapshotPlan>> {
    state
        .get_json(&plan_key(slot))
        .context("read snapshot progress")
}

struct Output {
    fanout: Fanout,
    status: Status,
    plan: Mutex<SnapshotPlan>,
    state: Arc<dyn StateStore>,
    key: String,
}

#[async_trait]
impl SnapshotOutput for Output {
    async fn send(&self, batch: Batch) -> Result<(), String> {
        self.fanout.send(batch).await.map_err(|e| e.to_string())
    }

    async fn sync(&self) -> Result<(), String> {
        self.fanout.barrier().await.map_err(|e| e.to_string())
    }

    async fn chunk_done(&self, relation: &Relation, chunk: Chunk, rows: u64) -> Result<(), String> {
        let table = relation.id.to_string();
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        plan.chunk_done(&table, chunk, rows);
        if !plan.tables.contains_key(&table) {
            let done = self.status.snapshot_done(&table);
            tracing::info!(table = %table, rows = done, "table snapshot complete");
        }
        self.state
            .put_json(&self.key, &*plan)
            .map_err(|e| e.to_string())
    }

    fn rows_read(&self, relation: &Relation, rows: u64) {
        self.status
            .snapshot_rows_added(&relation.id.to_string(), rows);
    }
}

/// Copies every pending chunk of `plan` under `snapshot_name` (exported by
/// a connection the caller keeps open), stamping rows with `version`.
#[allow(clippy::too_many_arguments)]
pub async fn run_snapshot(
    pg: &PgConfig,
    catalog: &Catalog,
    tables: &[SourceTable],
    snapshot_name: &str,
    version: Lsn,
    mut plan: SnapshotPlan,
    parallelism: usize,
    fanout: Fanout,
    status: Status,
    state: Arc<dyn StateStore>,
    slot: &str,
) -> anyhow::Result<()> {
    plan.last_version = Some(version);
    let key = plan_key(slot);
    state
        .put_json(&key, &plan)
        .context("save snapshot progress")?;
    let mut work = Vec::new();
    let mut catalog = catalog.clone();
    for (table, tp) in &plan.tables {
        let oid = tables
            .iter()
            .find(|t| t.id.to_string() == *table)
            .map(|t| t.oid)
            .with_context(|| {
                format!("table {table} is in the snapshot plan but no longer in source.tables")
            })?;
        let relation = relation_from_catalog(&mut catalog, oid)
            .await
            .with_context(|| format!("read the columns of {table}"))?
            .with_context(|| format!("table {table} no longer exists"))?;
        status.snapshot_table(table, tp.rows_done, tp.rows_estimated, "copying");
        for c in &tp.pending {
            work.push((relation.clone(), *c));
        }
    }
    tracing::info!(tables = plan.tables.len(), chunks = work.len(), version = %version, "snapshot started");
    let out = Arc::new(Output {
        fanout,
        status,
        plan: Mutex::new(plan),
        state,
        key,
    });
    copy_chunks(pg, snapshot_name, version, work, parallelism, out.clone())
        .await
        .context("snapshot")?;
    tracing::info!("snapshot complete");
    Ok(())
}

/// Brings the stored plan in line with the configured tables: a table new
/// to the config gets chunks to copy, a table removed from it is no longer
/// copied. A slot without a plan (made outside Courier, or the state
/// directory was lost) streams without a snapshot. Saves and returns the plan.
pub fn update_plan(
    state: &dyn StateStore,
    slot: &str,
    tables: &[SourceTable],
    chunk_rows: u64,
    parallelism: usize,
    warn_missing_plan: bool,
) -> anyhow::Result<SnapshotPlan> {
    let plan = match load_plan(state, slot)? {
        Some(mut plan) => {
            for t in tables {
                if !plan.knows(&t.id.to_string()) {
                    tracing::info!(table = %t.id, "table is new to this slot; it will be snapshotted");
                    plan.add_table(t, chunk_rows, parallelism);
                }
            }
            plan.tables
                .retain(|name, _| tables.iter().any(|t| t.id.to_string() == *name));
            plan
        }
        None => {
            if warn_missing_plan {
                tracing::warn!(slot = %slot,
                    "the slot exists but no snapshot progress was found; streaming without a snapshot \
                     (drop the slot to snapshot again)");
            }
            SnapshotPlan::nothing_to_copy(tables)
        }
    };
    state
        .put_json(&plan_key(slot), &plan)
        .context("save snapshot progress")?;
    Ok(plan)
}

/// Copies the plan's remaining chunks under a TEMPORARY slot's exported
/// snapshot: the rest of an interrupted snapshot, or tables added to the
/// config since.
#[allow(clippy::too_many_arguments)]
pub async fn catch_up(
    pg: &PgConfig,
    catalog: &Catalog,
    plan: SnapshotPlan,
    tables: &[SourceTable],
    parallelism: usize,
    fanout: Fanout,
    status: Status,
    state: Arc<dyn StateStore>,
    slot: &str,
) -> anyhow::Result<()> {
    if plan.is_complete() {
        return Ok(());
    }
    let mut repl = ReplicationClient::connect(pg)
        .await
        .context("open replication connection for a snapshot")?;
    let temp_name = format!("{}_snap_{}", slot, std::process::id());
    let created = repl
        .create_logical_slot(&temp_name, true, true)
        .await
        .context("create a temporary slot for the snapshot")?;
    let snapshot_name = created
        .snapshot_name
        .context("temporary slot exported no snapshot")?;
    let result = run_snapshot(
        pg,
        catalog,
        tables,
        &snapshot_name,
        created.consistent_point,
        plan,
        parallelism,
        fanout,
        status,
        state,
        slot,
    )
    .await;
    drop(repl);
    result
}
