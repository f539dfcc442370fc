//! Deciding what to snapshot and running it: the first run copies every
//! table under the new slot's exported snapshot; a resumed snapshot, or a
//! table added to the config later, is copied under a TEMPORARY slot's
//! exported snapshot (DESIGN §1.4). Progress lives in the state store.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use courier_core::{Batch, Lsn, Relation, StateStore};
use courier_postgres::catalog::Catalog;
use courier_postgres::setup::{GeneratedColumns, SourceTable};
use courier_postgres::snapshot::{
    copy_chunks, relation_from_catalog, Chunk, OutputError, SnapshotOutput, SnapshotPlan,
};
use courier_postgres::{PgConfig, ReplicationClient};

use super::fanout::Fanout;
use crate::status::Status;

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

/// What every snapshot copy needs: where rows come from and go, and where
/// its progress is kept.
pub struct Snapshotter {
    pub pg: PgConfig,
    pub tables: Vec<SourceTable>,
    pub parallelism: usize,
    pub fanout: Fanout,
    pub status: Status,
    pub state: Arc<dyn StateStore>,
    pub slot: String,
    /// The generated columns the publication publishes, which the copy
    /// copies too.
    pub generated_columns: GeneratedColumns,
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
    async fn send(&self, batch: Batch) -> Result<(), OutputError> {
        Ok(self.fanout.send(batch).await?)
    }

    async fn sync(&self) -> Result<(), OutputError> {
        Ok(self.fanout.barrier().await?)
    }

    async fn chunk_done(
        &self,
        relation: &Relation,
        chunk: Chunk,
        rows: u64,
    ) -> Result<(), OutputError> {
        let table = relation.id.to_string();
        let mut plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        plan.chunk_done(&table, chunk, rows);
        if !plan.tables.contains_key(&table) {
            let done = self.status.snapshot_done(&table);
            tracing::info!(table = %table, rows = done, "table snapshot complete");
        }
        Ok(self.state.put_json(&self.key, &*plan)?)
    }

    fn rows_read(&self, relation: &Relation, rows: u64) {
        self.status
            .snapshot_rows_added(&relation.id.to_string(), rows);
    }
}

impl Snapshotter {
    /// Copies every pending chunk of `plan` under `snapshot_name` (exported
    /// by a connection the caller keeps open), stamping rows with `version`.
    /// Reads the tables' columns through `catalog`.
    pub async fn copy(
        &self,
        catalog: &Catalog,
        snapshot_name: &str,
        version: Lsn,
        mut plan: SnapshotPlan,
    ) -> anyhow::Result<()> {
        plan.last_version = Some(version);
        let key = plan_key(&self.slot);
        self.state
            .put_json(&key, &plan)
            .context("save snapshot progress")?;
        let mut work = Vec::new();
        let mut catalog = catalog.clone();
        for (table, tp) in &plan.tables {
            let oid = self
                .tables
                .iter()
                .find(|t| t.id.to_string() == *table)
                .map(|t| t.oid)
                .with_context(|| {
                    format!("table {table} is in the snapshot plan but no longer in source.tables")
                })?;
            let relation = relation_from_catalog(&mut catalog, oid, self.generated_columns)
                .await
                .with_context(|| format!("read the columns of {table}"))?
                .with_context(|| format!("table {table} no longer exists"))?;
            self.status
                .snapshot_table(table, tp.rows_done, tp.rows_estimated, "copying");
            for c in &tp.pending {
                work.push((relation.clone(), *c));
            }
        }
        tracing::info!(tables = plan.tables.len(), chunks = work.len(), version = %version, "snapshot started");
        let out = Arc::new(Output {
            fanout: self.fanout.clone(),
            status: self.status.clone(),
            plan: Mutex::new(plan),
            state: self.state.clone(),
            key,
        });
        copy_chunks(
            &self.pg,
            snapshot_name,
            version,
            work,
            self.parallelism,
            out,
        )
        .await
        .context("snapshot")?;
        tracing::info!("snapshot complete");
        Ok(())
    }

    /// Copies the plan's remaining chunks under a TEMPORARY slot's exported
    /// snapshot: the rest of an interrupted snapshot, or tables added to the
    /// config since.
    pub async fn catch_up(&self, catalog: &Catalog, plan: SnapshotPlan) -> anyhow::Result<()> {
        if plan.is_complete() {
            return Ok(());
        }
        let mut repl = ReplicationClient::connect(&self.pg)
            .await
            .context("open replication connection for a snapshot")?;
        let temp_name = format!("{}_snap_{}", self.slot, std::process::id());
        let created = repl
            .create_logical_slot(&temp_name, true, true)
            .await
            .context("create a temporary slot for the snapshot")?;
        let snapshot_name = created
            .snapshot_name
            .context("temporary slot exported no snapshot")?;
        let result = self
            .copy(catalog, &snapshot_name, created.consistent_point, plan)
            .await;
        // The export lives while this connection stays open and idle.
        drop(repl);
        result
    }
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
