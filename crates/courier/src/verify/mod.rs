//! `courier verify`: compares each store with PostgreSQL while the stream
//! keeps running, and with `--repair` rewrites what drifted.
//!
//! Consistent by construction (README "Rebuild and verify"):
//! 1. A TEMPORARY slot exports a snapshot at LSN `L`.
//! 2. Courier's own slot is waited on until its confirmed position passes
//!    `L`: every sink applied everything through `L`.
//! 3. Each table is read under the snapshot, each row rendered the way each
//!    sink stores it ([`courier_sinks::inspect::Inspector::expect`]), and
//!    compared with what the store holds ([`compare::Comparison`]): a stored
//!    row newer than `L` changed after the snapshot and is skipped.
//! 4. What disagrees is looked at again under a second snapshot `L2`, read
//!    back by address: a row deleted after `L` (a search index keeps no
//!    tombstone to show it) is not drift. Only what still disagrees is
//!    reported, and `--repair` rewrites it at version `L2` through the sink
//!    itself (a newer row in the store still wins), then verifies again.

pub mod compare;
mod keys;
pub mod progress;
pub mod rebuild;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use courier_core::{Batch, Change, Lsn, Op, Relation, Row};
use courier_postgres::catalog::Catalog;
use courier_postgres::setup::{resolve_tables, SourceTable};
use courier_postgres::snapshot::{
    copy_chunks, relation_from_catalog, Chunk, OutputError, SnapshotOutput, SnapshotPlan,
};
use courier_postgres::{PgConfig, ReplicationClient};
use courier_sinks::envelope::SourceInfo;
use courier_sinks::inspect::Inspector;
use courier_sinks::outbox::Source as OutboxSource;
use tokio::sync::mpsc;

use crate::config::{Config, SourceConfig};
use compare::{Comparison, Counts, Drift, Finding};
pub use progress::Progress;

/// What to verify and how.
pub struct Options {
    /// Only this sink (default: every sink that keeps rows).
    pub sink: Option<String>,
    /// Only these tables (`schema.table` or `table`).
    pub tables: Vec<String>,
    /// Rewrite what drifted, then verify again.
    pub repair: bool,
    /// How long to wait for the sinks to apply through a snapshot.
    pub timeout: Duration,
    /// Where the rows read so far are counted.
    pub progress: Progress,
}

/// One table of one sink.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableReport {
    pub sink: String,
    pub table: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// A few keys of each kind of drift, as the store addresses them.
    pub examples: Vec<(Drift, String)>,
    /// Rows rewritten or deleted by `--repair`.
    pub repaired: u64,
}

/// Everything one verification found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// The snapshot compared with.
    pub snapshot: String,
    pub tables: Vec<TableReport>,
    /// Sinks not verified, and why.
    pub skipped: Vec<(String, String)>,
}

impl Report {
    pub fn drift(&self) -> u64 {
        self.tables.iter().map(|t| t.counts.drift()).sum()
    }
}

/// The sink types whose stores verify reads back.
pub const VERIFIABLE: [&str; 4] = ["redis", "clickhouse", "elasticsearch", "opensearch"];

/// Examples of each kind of drift kept per table.
const EXAMPLES: usize = 5;

struct Target {
    name: String,
    kind: String,
    settings: toml::Table,
    inspector: Box<dyn Inspector>,
}

/// Verifies (and with `repair`, repairs) every selected sink.
pub async fn verify(config: &Config, opts: &Options) -> anyhow::Result<Report> {
    let source = config.source.postgres("courier verify")?;
    let pg = PgConfig::from_url(&source.url).context("source.url")?;
    let mut report = Report::default();
    let mut targets = targets(config, opts, &mut report).await?;
    if targets.is_empty() {
        bail!("no sink to verify: verify reads back redis, clickhouse, elasticsearch and opensearch sinks");
    }
    let client = Arc::new(pg.connect().await.context("connect to PostgreSQL")?);
    let relations = relations(config, source, &client, &opts.tables).await?;

    let first = compare_all(&pg, &client, source, &relations, &mut targets, None, opts).await?;
    let candidates: usize = first.iter().map(|r| r.findings.len()).sum();
    let results = if candidates == 0 {
        first
    } else {
        tracing::info!(
            rows = candidates,
            "looking again at the rows that disagreed, under a newer snapshot"
        );
        compare_all(
            &pg,
            &client,
            source,
            &relations,
            &mut targets,
            Some(&first),
            opts,
        )
        .await?
    };
    report.snapshot = results
        .first()
        .map(|r| r.at.to_string())
        .unwrap_or_default();
    let mut repaired = HashMap::new();
    if opts.repair && results.iter().any(|r| !r.findings.is_empty()) {
        repaired = repair(source, &targets, &results).await?;
    }
    for r in &results {
        let mut examples: Vec<(Drift, String)> = Vec::new();
        for f in &r.findings {
            if examples.iter().filter(|(d, _)| *d == f.drift).count() < EXAMPLES {
                examples.push((f.drift, String::from_utf8_lossy(&f.address).into_owned()));
            }
        }
        // Seen on /metrics when verify runs inside `courier run` (a job, verify_every, a lost slot).
        metrics::gauge!("courier_verify_drift_rows", "sink" => targets[r.target].name.clone(), "table" => r.relation.id.to_string())
            .set(r.counts.drift() as f64);
        report.tables.push(TableReport {
            sink: targets[r.target].name.clone(),
            table: r.relation.id.to_string(),
            counts: r.counts.clone(),
            examples,
            repaired: repaired.get(&(r.target, r.table)).copied().unwrap_or(0),
        });
    }
    Ok(report)
}

/// The sinks to verify, connected; the others noted in `report`.
async fn targets(
    config: &Config,
    opts: &Options,
    report: &mut Report,
) -> anyhow::Result<Vec<Target>> {
    if let Some(only) = &opts.sink {
        if !config.sinks.contains_key(only) {
            let names: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
            bail!(
                "there is no sink {only:?} in the configuration (sinks: {})",
                names.join(", ")
            );
        }
    }
    let mut out = Vec::new();
    for (name, (kind, settings)) in &config.sinks {
        if opts.sink.as_ref().is_some_and(|s| s != name) {
            continue;
        }
        if !VERIFIABLE.contains(&kind.as_str()) {
            if opts.sink.is_some() {
                bail!("sink {name}: a {kind} sink keeps no rows Courier can read back; verify works on redis, clickhouse, elasticsearch and opensearch sinks");
            }
            report.skipped.push((
                name.clone(),
                format!("a {kind} sink keeps no rows to read back"),
            ));
            continue;
        }
        let inspector = courier_sinks::build_inspector(name, kind, settings.clone())
            .await
            .with_context(|| format!("sink {name}"))?;
        if let Some(why) = inspector.unverifiable() {
            if opts.sink.is_some() {
                bail!("sink {name}: {why}");
            }
            report.skipped.push((name.clone(), why));
            continue;
        }
        out.push(Target {
            name: name.clone(),
            kind: kind.clone(),
            settings: settings.clone(),
            inspector,
        });
    }
    Ok(out)
}

/// The captured tables (not the outbox's), narrowed to `only`.
async fn tables(
    config: &Config,
    source: &SourceConfig,
    client: &tokio_postgres::Client,
    only: &[String],
) -> anyhow::Result<Vec<SourceTable>> {
    let mut tables = resolve_tables(client, &source.tables, &source.table_patterns)
        .await
        .context("find the tables of source.tables")?;
    tables.retain(|t| {
        !config
            .outbox
            .iter()
            .any(|o| matches!(&o.source, OutboxSource::Table(id) if *id == t.id))
    });
    if only.is_empty() {
        return Ok(tables);
    }
    let mut out = Vec::new();
    for name in only {
        let found: Vec<&SourceTable> = tables
            .iter()
            .filter(|t| t.id.to_string() == *name || t.id.name == *name)
            .collect();
        match found.as_slice() {
            [] => bail!("--table {name}: not a table Courier captures (see source.tables)"),
            [t] => out.push((*t).clone()),
            _ => bail!("--table {name} names several tables; write it as schema.table"),
        }
    }
    Ok(out)
}

/// The captured tables narrowed to `only`, with their columns.
pub(crate) async fn relations(
    config: &Config,
    source: &SourceConfig,
    client: &Arc<tokio_postgres::Client>,
    only: &[String],
) -> anyhow::Result<Vec<(SourceTable, Arc<Relation>)>> {
    let tables = tables(config, source, client, only).await?;
    let mut catalog = Catalog::new(client.clone());
    let mut relations = Vec::new();
    for t in tables {
        let rel = relation_from_catalog(&mut catalog, t.oid, source.generated_columns())
            .await
            .with_context(|| format!("read the columns of {}", t.id))?
            .with_context(|| format!("table {} no longer exists", t.id))?;
        relations.push((t, rel));
    }
    Ok(relations)
}

/// An exported snapshot of PostgreSQL at `at`, valid while `repl` stays
/// open and idle (its TEMPORARY slot goes with it).
pub(crate) struct Snapshot {
    pub repl: ReplicationClient,
    pub name: String,
    pub at: Lsn,
}

impl Snapshot {
    /// Takes one, under a slot named after Courier's slot and `purpose`.
    pub async fn take(pg: &PgConfig, slot: &str, purpose: &str) -> anyhow::Result<Snapshot> {
        let mut repl = ReplicationClient::connect(pg)
            .await
            .context("open a replication connection for the snapshot")?;
        // Several verifications and rebuilds may run in one `courier run`.
        static TAKEN: AtomicU64 = AtomicU64::new(0);
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let slot_name = format!("{slot}_{purpose}_{}_{n}", std::process::id());
        let created = repl
            .create_logical_slot(&slot_name, true, true)
            .await
            .context("create a temporary slot for the snapshot")?;
        let name = created
            .snapshot_name
            .context("the temporary slot exported no snapshot")?;
        Ok(Snapshot {
            repl,
            name,
            at: created.consistent_point,
        })
    }
}

/// One table of one target after a comparison.
struct Compared {
    target: usize,
    table: usize,
    relation: Arc<Relation>,
    at: Lsn,
    counts: Counts,
    findings: Vec<Finding>,
    /// The snapshot's rows at the findings' addresses (second look only).
    rows: HashMap<Vec<u8>, Row>,
}

/// Compares every (target, table) under a new snapshot: everything, or
/// with `earlier`, only the addresses an earlier comparison found.
async fn compare_all(
    pg: &PgConfig,
    client: &tokio_postgres::Client,
    source: &SourceConfig,
    relations: &[(SourceTable, Arc<Relation>)],
    targets: &mut [Target],
    earlier: Option<&[Compared]>,
    opts: &Options,
) -> anyhow::Result<Vec<Compared>> {
    let snap = Snapshot::take(pg, &source.slot, "verify").await?;
    let (snapshot, at) = (snap.name.clone(), snap.at);
    wait_applied(client, &source.slot, at, opts.timeout).await?;
    opts.progress.stage(if earlier.is_none() {
        "compare"
    } else {
        "recheck"
    });

    let mut out = Vec::new();
    for (ti, (table, rel)) in relations.iter().enumerate() {
        let mut comparisons: Vec<(usize, Comparison)> = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            if !target.inspector.includes(&rel.id) {
                continue;
            }
            match earlier {
                None => comparisons.push((i, Comparison::new(at))),
                Some(earlier) => {
                    let found = earlier.iter().find(|c| c.target == i && c.table == ti);
                    if let Some(c) = found.filter(|c| !c.findings.is_empty()) {
                        let addresses = c.findings.iter().map(|f| f.address.clone());
                        comparisons.push((i, Comparison::only(at, addresses)));
                    }
                }
            }
        }
        if comparisons.is_empty() {
            continue;
        }
        let started = Instant::now();
        let mut rows: Vec<HashMap<Vec<u8>, Row>> = vec![HashMap::new(); comparisons.len()];
        let keep_rows = earlier.is_some();
        let (copy, mut batches) = copy_table(
            pg,
            &snapshot,
            at,
            table,
            rel,
            source.snapshot_parallelism,
            &opts.progress,
        );
        let mut read = 0u64;
        while let Some(batch) = batches.recv().await {
            for (j, (i, c)) in comparisons.iter_mut().enumerate() {
                let target = &mut targets[*i];
                if target.inspector.stages() {
                    target.inspector.stage(rel, &batch).await.with_context(|| {
                        format!(
                            "sink {}: write the snapshot into a scratch table",
                            target.name
                        )
                    })?;
                }
                for change in &batch.changes {
                    let Some(row) = change.after() else { continue };
                    let expected = target
                        .inspector
                        .expect(rel, row)
                        .map_err(|e| anyhow::anyhow!("sink {}: {e}", target.name))?;
                    if keep_rows && c.wants(&expected.address) {
                        rows[j].insert(expected.address.clone(), row.to_vec());
                    }
                    if !target.inspector.stages() {
                        c.expect(expected);
                    }
                }
            }
            read += batch.changes.len() as u64;
        }
        copy.await.context("the snapshot copy ended abnormally")??;
        for (i, c) in comparisons.iter_mut() {
            let target = &mut targets[*i];
            if target.inspector.stages() {
                let mut pages = |page: Vec<courier_sinks::inspect::ExpectedRow>| {
                    for e in page {
                        c.expect(e);
                    }
                };
                let staged = target.inspector.staged(rel, &mut pages).await;
                target
                    .inspector
                    .unstage(rel)
                    .await
                    .with_context(|| format!("sink {}: drop the scratch table", target.name))?;
                staged.with_context(|| format!("sink {}: read the scratch table", target.name))?;
            }
        }
        for (j, (i, mut c)) in comparisons.into_iter().enumerate() {
            let target = &mut targets[i];
            match earlier {
                None => {
                    let mut pages = |page| c.stored(page);
                    target
                        .inspector
                        .scan(rel, &mut pages)
                        .await
                        .with_context(|| format!("sink {}", target.name))?;
                }
                Some(earlier) => {
                    let addresses: Vec<Vec<u8>> = earlier
                        .iter()
                        .find(|e| e.target == i && e.table == ti)
                        .map(|e| e.findings.iter().map(|f| f.address.clone()).collect())
                        .unwrap_or_default();
                    let stored = target
                        .inspector
                        .read(rel, &addresses)
                        .await
                        .with_context(|| format!("sink {}", target.name))?;
                    c.stored(stored.into_iter().flatten());
                }
            }
            let (mut counts, findings) = c.finish();
            if let Some(first) =
                earlier.and_then(|e| e.iter().find(|e| e.target == i && e.table == ti))
            {
                // What disagreed at first and no longer does changed after the first snapshot.
                let resolved = first.counts.drift().saturating_sub(counts.drift());
                counts = Counts {
                    checked: first.counts.checked,
                    newer: first.counts.newer + resolved,
                    ..counts
                };
            }
            tracing::info!(sink = %target.name, table = %rel.id, rows = read, checked = counts.checked,
                drift = counts.drift(), newer = counts.newer, seconds = started.elapsed().as_secs_f64(),
                "compared");
            let keep = std::mem::take(&mut rows[j]);
            out.push(Compared {
                target: i,
                table: ti,
                relation: rel.clone(),
                at,
                counts,
                findings,
                rows: keep,
            });
        }
    }
    // Tables with nothing to look at again keep their first counts.
    if let Some(earlier) = earlier {
        for e in earlier {
            if !out
                .iter()
                .any(|c| c.target == e.target && c.table == e.table)
            {
                out.push(Compared {
                    target: e.target,
                    table: e.table,
                    relation: e.relation.clone(),
                    at,
                    counts: e.counts.clone(),
                    findings: Vec::new(),
                    rows: HashMap::new(),
                });
            }
        }
        out.sort_by_key(|c| (c.target, c.table));
    }
    // The export lived while this connection stayed open and idle.
    snap.repl.close().await;
    Ok(out)
}

/// Waits until Courier's slot confirmed `at`: every sink applied everything
/// committed before the snapshot.
pub(crate) async fn wait_applied(
    client: &tokio_postgres::Client,
    slot: &str,
    at: Lsn,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .context("read Courier's slot")?;
        let Some(row) = row else {
            bail!("the slot {slot} does not exist: start `courier run` with this configuration first; verify compares what it wrote");
        };
        let confirmed: Option<String> = row.get(0);
        let active: bool = row.get(1);
        let confirmed = confirmed.and_then(|c| c.parse::<Lsn>().ok());
        if confirmed.is_some_and(|c| c >= at) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let at_text = confirmed.map_or("nothing".to_string(), |c| c.to_string());
            if !active {
                bail!(
                    "the sinks applied through {at_text}, not yet through the snapshot at {at}, and no `courier run` is streaming slot {slot}: \
                     start it (verify compares the stores once they caught up with the snapshot)"
                );
            }
            bail!(
                "the sinks did not apply through the snapshot at {at} within {}s (they are at {at_text}): \
                 wait for Courier to catch up, or give verify longer with --timeout",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A batch of snapshot rows, forwarded to the comparing task.
struct Forward(mpsc::Sender<Batch>, Progress);

#[async_trait]
impl SnapshotOutput for Forward {
    async fn send(&self, batch: Batch) -> Result<(), OutputError> {
        self.0
            .send(batch)
            .await
            .map_err(|_| OutputError::from("the comparison stopped"))
    }
    async fn sync(&self) -> Result<(), OutputError> {
        Ok(())
    }
    async fn chunk_done(&self, _: &Relation, _: Chunk, _: u64) -> Result<(), OutputError> {
        Ok(())
    }
    fn rows_read(&self, relation: &Relation, rows: u64) {
        self.1.add_rows(&relation.id.to_string(), rows);
    }
}

/// Copies `table` under `snapshot` in a task of its own: its batches of
/// rows (versioned `at`) arrive on the receiver, and the task's result says
/// whether the copy completed. The rows read are counted in `progress`.
pub(crate) fn copy_table(
    pg: &PgConfig,
    snapshot: &str,
    at: Lsn,
    table: &SourceTable,
    rel: &Arc<Relation>,
    parallelism: usize,
    progress: &Progress,
) -> (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    mpsc::Receiver<Batch>,
) {
    let mut plan = SnapshotPlan::default();
    plan.add_table(table, 100_000, parallelism);
    let work: Vec<(Arc<Relation>, Chunk)> = plan
        .tables
        .values()
        .flat_map(|tp| tp.pending.iter().map(|c| (rel.clone(), *c)))
        .collect();
    let (tx, rx) = mpsc::channel(4);
    let (pg, snapshot, id) = (pg.clone(), snapshot.to_string(), table.id.clone());
    let progress = progress.clone();
    progress.start_table(&id.to_string(), table.estimated_rows);
    let copy = tokio::spawn(async move {
        let out = Arc::new(Forward(tx, progress.clone()));
        copy_chunks(&pg, &snapshot, at, work, parallelism, out)
            .await
            .with_context(|| format!("read {id} under the snapshot"))?;
        progress.finish_table(&id.to_string());
        Ok(())
    });
    (copy, rx)
}

/// Rewrites what the second look still found, at its snapshot's version,
/// through each sink; returns the rows written per (target, table).
async fn repair(
    source: &SourceConfig,
    targets: &[Target],
    results: &[Compared],
) -> anyhow::Result<HashMap<(usize, usize), u64>> {
    let info = SourceInfo {
        name: source.slot.clone(),
        database: PgConfig::from_url(&source.url)?.dbname.clone(),
    };
    let mut written = HashMap::new();
    for (i, target) in targets.iter().enumerate() {
        let mine: Vec<&Compared> = results
            .iter()
            .filter(|r| r.target == i && !r.findings.is_empty())
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut sink = courier_sinks::build_sink(
            &target.name,
            &target.kind,
            target.settings.clone(),
            &info,
            Vec::new(),
        )
        .await
        .with_context(|| format!("sink {}", target.name))?;
        for r in mine {
            let mut changes = Vec::new();
            let mut unrepairable = 0;
            for f in &r.findings {
                let change = match f.drift {
                    Drift::Missing | Drift::Different => r.rows.get(&f.address).map(|row| {
                        Change::new(
                            r.relation.clone(),
                            Op::Read,
                            None,
                            Some(row.clone()),
                            r.at,
                            0,
                            0,
                        )
                    }),
                    Drift::Extra => f
                        .key
                        .as_ref()
                        .and_then(|k| keys::delete_row(&r.relation, k))
                        .map(|before| {
                            Change::new(
                                r.relation.clone(),
                                Op::Delete,
                                Some(before),
                                None,
                                r.at,
                                0,
                                0,
                            )
                        }),
                };
                match change {
                    Some(c) => changes.push(c.context("build a repair")?),
                    None => unrepairable += 1,
                }
            }
            if unrepairable > 0 {
                tracing::warn!(sink = %target.name, table = %r.relation.id, rows = unrepairable,
                    "some drifted rows cannot be repaired: their key could not be read from the store");
            }
            let n = changes.len() as u64;
            for chunk in changes.chunks(1000) {
                let batch = Batch {
                    changes: chunk.to_vec(),
                    through: None,
                };
                sink.apply(&batch)
                    .await
                    .with_context(|| format!("sink {}: repair {}", target.name, r.relation.id))?;
            }
            tracing::info!(sink = %target.name, table = %r.relation.id, rows = n, version = %r.at, "repaired");
            written.insert((i, r.table), n);
        }
        let _ = sink.close().await;
    }
    Ok(written)
}
