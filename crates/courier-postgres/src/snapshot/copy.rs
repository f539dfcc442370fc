use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use courier_core::{quote_ident, Batch, Change, Lsn, Op, Relation, Value};
use futures_util::StreamExt;
use tokio::sync::Mutex;

use super::binary_rows::{BinaryRows, Step};
use super::Chunk;
use crate::types::{self, binary::BinaryForm};
use crate::PgConfig;

/// Why the pipeline could not take snapshot rows (a sink stopped, the
/// progress could not be saved): the pipeline's own error, kept whole so the
/// caller can tell what happened.
pub type OutputError = Box<dyn std::error::Error + Send + Sync>;

/// Where snapshot rows go (the pipeline's fan-out to every sink).
#[async_trait]
pub trait SnapshotOutput: Send + Sync {
    /// Queues a batch of snapshot rows for every sink.
    async fn send(&self, batch: Batch) -> Result<(), OutputError>;
    /// Waits until every sink applied everything queued so far.
    async fn sync(&self) -> Result<(), OutputError>;
    /// Called after a chunk's rows were applied by every sink.
    async fn chunk_done(
        &self,
        relation: &Relation,
        chunk: Chunk,
        rows: u64,
    ) -> Result<(), OutputError>;
    /// Called as rows are read, for progress display.
    fn rows_read(&self, relation: &Relation, rows: u64);
}

/// A snapshot that could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot of {table}: {context}: {source}")]
    Postgres {
        table: String,
        context: String,
        #[source]
        source: crate::PgError,
    },
    #[error("snapshot of {table}, column {column}: {source}")]
    Value {
        table: String,
        column: String,
        #[source]
        source: types::ValueError,
    },
    #[error("snapshot of {table}: malformed binary COPY data: {reason}")]
    Binary { table: String, reason: &'static str },
    #[error("snapshot of {table}: COPY row has {got} fields, expected {expected}")]
    Width {
        table: String,
        got: usize,
        expected: usize,
    },
    #[error("snapshot of {table}: the pipeline stopped taking rows")]
    Output {
        table: String,
        #[source]
        source: OutputError,
    },
    #[error("snapshot worker ended abnormally: {0}")]
    Worker(String),
}

impl SnapshotError {
    /// Whether running the snapshot again later can help.
    pub fn is_retriable(&self) -> bool {
        matches!(self, SnapshotError::Postgres { source, .. } if source.is_retriable())
    }
}

const BATCH_ROWS: usize = 4096;
/// Bytes of COPY data per batch: wide rows make smaller batches, so the
/// sinks' queues stay bounded in bytes as well as rows.
const BATCH_BYTES: usize = 1 << 20;

/// Chunks not yet claimed by a worker.
type WorkQueue = Arc<Mutex<Vec<(Arc<Relation>, Chunk)>>>;

/// Copies every chunk in `work` under the exported snapshot `snapshot_name`
/// on up to `parallelism` connections, stamping rows with `version`.
///
/// The connection that exported the snapshot must stay open and idle until
/// this returns.
pub async fn copy_chunks(
    pg: &PgConfig,
    snapshot_name: &str,
    version: Lsn,
    work: Vec<(Arc<Relation>, Chunk)>,
    parallelism: usize,
    out: Arc<dyn SnapshotOutput>,
) -> Result<(), SnapshotError> {
    let queue = Arc::new(Mutex::new(work));
    let workers = parallelism.max(1).min(queue.lock().await.len().max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (pg, name, queue, out) = (
            pg.clone(),
            snapshot_name.to_string(),
            queue.clone(),
            out.clone(),
        );
        tasks.spawn(async move { worker(pg, name, version, queue, out).await });
    }
    let mut first_err = None;
    while let Some(res) = tasks.join_next().await {
        let res = res.unwrap_or_else(|e| Err(SnapshotError::Worker(e.to_string())));
        if let Err(e) = res {
            if first_err.is_none() {
                // Stop handing out chunks; the others finish their current one.
                queue.lock().await.clear();
                first_err = Some(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn worker(
    pg: PgConfig,
    snapshot_name: String,
    version: Lsn,
    queue: WorkQueue,
    out: Arc<dyn SnapshotOutput>,
) -> Result<(), SnapshotError> {
    let pg_err = |table: &str, context: &str| {
        let (table, context) = (table.to_string(), context.to_string());
        move |source: crate::PgError| SnapshotError::Postgres {
            table,
            context,
            source,
        }
    };
    let client = pg.connect().await.map_err(pg_err("*", "connect"))?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            snapshot_name.replace('\'', "''")
        ))
        .await
        .map_err(|e| pg_err("*", "import the exported snapshot")(e.into()))?;
    let taken_at_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    loop {
        let Some((rel, chunk)) = queue.lock().await.pop() else {
            break;
        };
        let table = rel.id.to_string();
        let forms: Vec<BinaryForm> = rel.columns.iter().map(BinaryForm::of).collect();
        let cols: Vec<String> = rel
            .columns
            .iter()
            .zip(&forms)
            .map(|(c, form)| form.select(&quote_ident(&c.name)))
            .collect();
        let sql = format!(
            "COPY (SELECT {} FROM ONLY {} WHERE {}) TO STDOUT (FORMAT binary)",
            cols.join(", "),
            rel.id.quoted(),
            chunk.ctid_condition()
        );
        let stream = client
            .copy_out(&sql)
            .await
            .map_err(|e| pg_err(&table, "start COPY")(e.into()))?;
        futures_util::pin_mut!(stream);
        let mut rows = 0u64;
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        let mut batch_bytes = 0;
        let mut reader = BinaryRows::default();
        let mut fields = Vec::with_capacity(rel.columns.len());
        while let Some(data) = stream.next().await {
            let data = data.map_err(|e| pg_err(&table, "read COPY data")(e.into()))?;
            batch_bytes += data.len();
            reader.push(data);
            loop {
                let step =
                    reader
                        .next_row(&mut fields)
                        .map_err(|reason| SnapshotError::Binary {
                            table: table.clone(),
                            reason,
                        })?;
                if step != Step::Row {
                    break;
                }
                if fields.len() != rel.columns.len() {
                    return Err(SnapshotError::Width {
                        table,
                        got: fields.len(),
                        expected: rel.columns.len(),
                    });
                }
                let bytes = reader.bytes();
                let mut row = Vec::with_capacity(fields.len());
                for ((col, form), f) in rel.columns.iter().zip(&forms).zip(&fields) {
                    row.push(match f {
                        None => Value::Null,
                        Some(range) => {
                            form.decode(col, &bytes[range.clone()]).map_err(|source| {
                                SnapshotError::Value {
                                    table: table.clone(),
                                    column: col.name.clone(),
                                    source,
                                }
                            })?
                        }
                    });
                }
                let change = Change::new(
                    rel.clone(),
                    Op::Read,
                    None,
                    Some(row),
                    version,
                    0,
                    taken_at_us,
                )
                .map_err(|e| SnapshotError::Width {
                    table: table.clone(),
                    got: e.actual,
                    expected: e.expected,
                })?;
                batch.push(change);
                if batch.len() >= BATCH_ROWS || batch_bytes >= BATCH_BYTES {
                    batch_bytes = 0;
                    rows += batch.len() as u64;
                    out.rows_read(&rel, batch.len() as u64);
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                    out.send(Batch {
                        changes: full,
                        through: None,
                    })
                    .await
                    .map_err(|source| SnapshotError::Output {
                        table: rel.id.to_string(),
                        source,
                    })?;
                }
            }
        }
        if !batch.is_empty() {
            rows += batch.len() as u64;
            out.rows_read(&rel, batch.len() as u64);
            out.send(Batch {
                changes: batch,
                through: None,
            })
            .await
            .map_err(|source| SnapshotError::Output {
                table: rel.id.to_string(),
                source,
            })?;
        }
        out.sync().await.map_err(|source| SnapshotError::Output {
            table: rel.id.to_string(),
            source,
        })?;
        out.chunk_done(&rel, chunk, rows)
            .await
            .map_err(|source| SnapshotError::Output {
                table: rel.id.to_string(),
                source,
            })?;
    }
    let _ = client.batch_execute("COMMIT").await;
    Ok(())
}
