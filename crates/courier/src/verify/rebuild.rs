//! `courier rebuild`: reprints a store from an exact snapshot of
//! PostgreSQL while the stream keeps writing to it.
//!
//! A Redis cache is rebuilt in place: every row of the snapshot at `L` is
//! written at version `L` through the sink itself (a row the stream wrote
//! since, with a newer version, wins), then every key of the table that the
//! rebuild did not write and that is older than `L` holds a row PostgreSQL
//! no longer has, and is deleted at version `L`. Readers never see the
//! table empty or going backwards: a key only ever moves to a version at
//! least as new as the one it had.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use courier_core::{Batch, Change, Op};
use courier_postgres::PgConfig;
use courier_sinks::envelope::SourceInfo;

use super::{copy_table, keys, relations, Progress, Snapshot};
use crate::config::Config;

/// One table rebuilt.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableRebuild {
    pub table: String,
    /// Rows of the snapshot written.
    pub written: u64,
    /// Keys of rows PostgreSQL no longer has, deleted.
    pub removed: u64,
    /// Such keys whose key columns could not be read back (left as they are).
    pub unremovable: u64,
    /// The index now behind the table's alias (search sinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    pub seconds: f64,
}

/// A rebuild of one sink.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RebuildReport {
    pub sink: String,
    /// The snapshot the store was reprinted from.
    pub snapshot: String,
    pub tables: Vec<TableRebuild>,
}

/// Changes deleted per apply.
const DELETES_PER_BATCH: usize = 1000;

/// Rebuilds the sink `name` (its tables, or only `only`); a search sink's
/// old indexes are deleted `grace` after the alias moved. The rows copied
/// are counted in `progress`.
pub async fn rebuild(
    config: &Config,
    name: &str,
    only: &[String],
    grace: Duration,
    progress: &Progress,
) -> anyhow::Result<RebuildReport> {
    let source = config.source.postgres("courier rebuild")?;
    let Some((kind, settings)) = config.sinks.get(name) else {
        let names: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
        bail!(
            "there is no sink {name:?} in the configuration (sinks: {})",
            names.join(", ")
        );
    };
    match kind.as_str() {
        "redis" => {}
        "elasticsearch" | "opensearch" => {
            return rebuild_search(config, source, name, settings.clone(), only, grace, progress)
                .await
        }
        "clickhouse" => bail!(
            "sink {name}: rebuilding a {kind} sink is not supported yet; `courier verify --sink {name} --repair` \
             rewrites what differs from PostgreSQL"
        ),
        other => bail!("sink {name}: a {other} sink keeps no rows to rebuild; rebuild works on redis sinks"),
    }
    let inspector = courier_sinks::build_inspector(name, kind, settings.clone())
        .await
        .with_context(|| format!("sink {name}"))?;
    if !inspector.keeps_rows() {
        bail!("sink {name}: mode = \"invalidate\" keeps no rows to rebuild: applications refill the cache");
    }
    let mut inspector = inspector;
    let pg = PgConfig::from_url(&source.url).context("source.url")?;
    let info = SourceInfo {
        name: source.slot.clone(),
        database: pg.dbname.clone(),
    };
    let mut sink = courier_sinks::build_sink(name, kind, settings.clone(), &info, Vec::new())
        .await
        .with_context(|| format!("sink {name}"))?;
    let client = Arc::new(pg.connect().await.context("connect to PostgreSQL")?);
    let mut relations = relations(config, source, &client, only).await?;
    relations.retain(|(t, _)| inspector.includes(&t.id));
    let snap = Snapshot::take(&pg, &source.slot, "rebuild").await?;
    let at = snap.at;
    tracing::info!(sink = name, snapshot = %at, tables = relations.len(), "rebuild started");
    let mut tables = Vec::new();
    for (table, rel) in &relations {
        let started = Instant::now();
        let parallelism = source.snapshot_parallelism;
        let (copy, mut rx) = copy_table(&pg, &snap.name, at, table, rel, parallelism, progress);
        let mut written: HashSet<Vec<u8>> = HashSet::new();
        while let Some(batch) = rx.recv().await {
            for c in &batch.changes {
                if let Some(row) = c.after() {
                    let expected = inspector
                        .expect(rel, row)
                        .map_err(|e| anyhow::anyhow!("sink {name}: {e}"))?;
                    written.insert(expected.address);
                }
            }
            sink.apply(&batch)
                .await
                .with_context(|| format!("sink {name}: write {} from the snapshot", rel.id))?;
        }
        copy.await.context("the snapshot copy ended abnormally")??;

        // What the rebuild did not write and is older than the snapshot.
        let mut stale = Vec::new();
        let mut pages = |page: Vec<courier_sinks::inspect::StoredRow>| {
            for row in page {
                if row.digest.is_some() && row.version < at && !written.contains(&row.address) {
                    stale.push(row);
                }
            }
        };
        inspector
            .scan(rel, &mut pages)
            .await
            .with_context(|| format!("sink {name}: read the keys of {}", rel.id))?;
        let mut deletes = Vec::new();
        let mut unremovable = 0;
        for row in &stale {
            match row.key.as_ref().and_then(|k| keys::delete_row(rel, k)) {
                Some(before) => deletes.push(Change::new(
                    rel.clone(),
                    Op::Delete,
                    Some(before),
                    None,
                    at,
                    0,
                    0,
                )?),
                None => unremovable += 1,
            }
        }
        let removed = deletes.len() as u64;
        for chunk in deletes.chunks(DELETES_PER_BATCH) {
            let batch = Batch {
                changes: chunk.to_vec(),
                through: None,
            };
            sink.apply(&batch).await.with_context(|| {
                format!(
                    "sink {name}: delete rows of {} PostgreSQL no longer has",
                    rel.id
                )
            })?;
        }
        if unremovable > 0 {
            tracing::warn!(sink = name, table = %rel.id, keys = unremovable,
                "keys of rows PostgreSQL no longer has were left: their key columns could not be read back");
        }
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(sink = name, table = %rel.id, written = written.len(), removed, seconds, "table rebuilt");
        tables.push(TableRebuild {
            table: rel.id.to_string(),
            written: written.len() as u64,
            removed,
            unremovable,
            index: None,
            seconds,
        });
    }
    snap.repl.close().await;
    let _ = sink.close().await;
    Ok(RebuildReport {
        sink: name.to_string(),
        snapshot: at.to_string(),
        tables,
    })
}

/// A search sink: each table's alias moves to a new index filled from the
/// snapshot while the running sink writes to both
/// (`courier_sinks::search::rebuild`).
async fn rebuild_search(
    config: &Config,
    source: &crate::config::SourceConfig,
    name: &str,
    settings: toml::Table,
    only: &[String],
    grace: Duration,
    progress: &Progress,
) -> anyhow::Result<RebuildReport> {
    use courier_sinks::search::rebuild::{rebuilder, MARKER_TTL};
    let settings = toml::Value::Table(settings)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("sink {name}: {}", e.message()))?;
    let mut rb = rebuilder(name, settings)
        .await
        .with_context(|| format!("sink {name}"))?;
    let pg = PgConfig::from_url(&source.url).context("source.url")?;
    let client = Arc::new(pg.connect().await.context("connect to PostgreSQL")?);
    let mut relations = relations(config, source, &client, only).await?;
    relations.retain(|(t, _)| rb.includes(&t.id));
    let mut shadows = Vec::new();
    for (_, rel) in &relations {
        shadows.push(
            rb.begin(rel)
                .await
                .with_context(|| format!("sink {name}"))?,
        );
    }
    // A running sink reads the markers at most MARKER_TTL late: past this,
    // everything it applies goes to the new indexes as well, so a snapshot
    // taken now leaves nothing out.
    tokio::time::sleep(MARKER_TTL * 2 + Duration::from_millis(500)).await;
    let snap = Snapshot::take(&pg, &source.slot, "rebuild").await?;
    let at = snap.at;
    tracing::info!(sink = name, snapshot = %at, tables = relations.len(), "rebuild started");
    let mut tables = Vec::new();
    for ((table, rel), shadow) in relations.iter().zip(&mut shadows) {
        let started = Instant::now();
        let parallelism = source.snapshot_parallelism;
        let (copy, mut rx) = copy_table(&pg, &snap.name, at, table, rel, parallelism, progress);
        let mut written = 0u64;
        while let Some(batch) = rx.recv().await {
            written += batch.changes.len() as u64;
            rb.write(shadow, &batch)
                .await
                .with_context(|| format!("sink {name}"))?;
        }
        copy.await.context("the snapshot copy ended abnormally")??;
        rb.swap(shadow)
            .await
            .with_context(|| format!("sink {name}"))?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(sink = name, table = %rel.id, written, index = %shadow.new, seconds, "table rebuilt");
        tables.push(TableRebuild {
            table: rel.id.to_string(),
            written,
            removed: 0,
            unremovable: 0,
            index: Some(shadow.new.clone()),
            seconds,
        });
    }
    snap.repl.close().await;
    if shadows.iter().any(|s| s.old.is_some()) {
        tracing::info!(
            seconds = grace.as_secs_f64(),
            "old indexes are deleted after the grace period"
        );
        tokio::time::sleep(grace).await;
        for shadow in &shadows {
            rb.drop_old(shadow)
                .await
                .with_context(|| format!("sink {name}"))?;
        }
    }
    Ok(RebuildReport {
        sink: name.to_string(),
        snapshot: at.to_string(),
        tables,
    })
}
