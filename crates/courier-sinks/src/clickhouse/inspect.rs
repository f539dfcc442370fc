//! The ClickHouse sink read back for `courier verify`.
//!
//! How a value reads back depends on the column type the server gave it,
//! so the snapshot is not rendered here: it is written, through a second
//! sink of the same settings, into a scratch table `<table>__courier_verify`
//! beside the real one (same columns, same types), and both tables are read
//! with the same query (`SELECT <the relation's columns>, _version, _deleted
//! ... FINAL FORMAT JSONEachRow`). A row's address is the JSON array of its
//! key columns as the server prints them, its digest that of the other
//! columns' JSON.

use std::collections::HashMap;

use async_trait::async_trait;
use courier_core::{Batch, Lsn, Relation, Sink, SinkError, SinkErrorKind, TableId, Value};
use serde_json::{Map, Value as Json};

use super::schema::{literal, quote, DELETED_COLUMN, VERSION_COLUMN, VIEW_SUFFIX};
use super::{ClickHouseSink, ClickHouseSinkConfig};
use crate::inspect::{self, ExpectedPage, ExpectedRow, Inspector, Page, StoredRow};
use crate::BuildError;

/// What the scratch tables' names end with.
pub const STAGING_SUFFIX: &str = "__courier_verify";

/// Addresses looked up per query.
const PAGE: usize = 1000;

/// Reads the tables a ClickHouse sink with these settings writes.
pub struct ClickHouseInspector {
    live: ClickHouseSink,
    staging: ClickHouseSink,
}

/// Connects as the sink would; the scratch sink writes `<table>__courier_verify`.
pub async fn inspector(
    name: &str,
    config: ClickHouseSinkConfig,
) -> Result<ClickHouseInspector, BuildError> {
    let live = super::build(name, config).await?;
    let mut settings = live.settings.clone();
    settings.table = format!("{}{STAGING_SUFFIX}", settings.table);
    let staging = ClickHouseSink {
        settings,
        client: live.client.clone(),
        features: live.features,
        database_engine: live.database_engine.clone(),
        tables: HashMap::new(),
        names: HashMap::new(),
    };
    Ok(ClickHouseInspector { live, staging })
}

/// The table's rows as the server prints them: one JSON object per line.
async fn select(
    sink: &ClickHouseSink,
    relation: &Relation,
    filter: &str,
) -> Result<Vec<StoredRow>, SinkError> {
    let table = sink.settings.table_name(&relation.id);
    let qualified = format!("{}.{}", quote(&sink.settings.database), quote(&table));
    let exists = sink
        .client
        .query(&format!(
            "SELECT count() FROM system.tables WHERE database = {} AND name = {}",
            literal(&sink.settings.database),
            literal(&table)
        ))
        .await
        .map_err(|e| error(&relation.id, "look the table up", e))?;
    if exists.trim() == "0" {
        return Ok(Vec::new());
    }
    let mut columns: Vec<String> = relation.columns.iter().map(|c| quote(&c.name)).collect();
    columns.push(quote(VERSION_COLUMN));
    columns.push(quote(DELETED_COLUMN));
    columns.extend(
        key_columns(relation)
            .into_iter()
            .enumerate()
            .map(|(i, k)| format!("{k} AS {}", quote(&format!("{KEY_ALIAS}{i}")))),
    );
    let body = sink
        .client
        .query(&format!(
            "SELECT {} FROM {qualified} FINAL {filter} FORMAT JSONEachRow",
            columns.join(", ")
        ))
        .await
        .map_err(|e| error(&relation.id, "read the rows", e))?;
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let row: Map<String, Json> = serde_json::from_str(line).map_err(|e| {
                SinkError::new(
                    SinkErrorKind::Rejected,
                    format!("clickhouse: a row of {table} is not JSON: {e}"),
                )
            })?;
            Ok(stored(relation, row))
        })
        .collect()
}

/// The prefix of the key columns' text in a read-back row.
const KEY_ALIAS: &str = "__courier_key_";

/// Each key column as text, the form addresses are made of.
fn key_columns(relation: &Relation) -> Vec<String> {
    relation
        .key_indexes()
        .map(|i| format!("toString({})", quote(&relation.columns[i].name)))
        .collect()
}

/// A number read back as JSON: a number, or a string where the server
/// quotes 64-bit integers.
fn number(v: Option<Json>) -> u64 {
    match v {
        Some(Json::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Json::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn stored(relation: &Relation, mut row: Map<String, Json>) -> StoredRow {
    let version = number(row.remove(VERSION_COLUMN));
    let deleted = number(row.remove(DELETED_COLUMN)) != 0;
    let address: Vec<Json> = (0..relation.key_indexes().count())
        .map(|i| row.remove(&format!("{KEY_ALIAS}{i}")).unwrap_or(Json::Null))
        .collect();
    let key = inspect::key_from_object(relation, &row).unwrap_or_default();
    StoredRow {
        address: serde_json::to_vec(&address).unwrap_or_default(),
        version: Lsn(version),
        digest: (!deleted).then(|| inspect::object_digest(&row)),
        key: Some(key),
    }
}

fn error(table: &TableId, what: &str, e: super::client::ChError) -> SinkError {
    SinkError::new(e.kind(), format!("clickhouse: {what} of {table}: {e}")).with_table(table)
}

impl ClickHouseInspector {
    async fn drop_staging(&self, relation: &Relation) -> Result<(), SinkError> {
        let table = self.staging.settings.table_name(&relation.id);
        let db = quote(&self.staging.settings.database);
        for name in [format!("{table}{VIEW_SUFFIX}"), table] {
            self.staging
                .client
                .query(&format!("DROP TABLE IF EXISTS {db}.{}", quote(&name)))
                .await
                .map_err(|e| error(&relation.id, "drop the scratch table", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Inspector for ClickHouseInspector {
    fn includes(&self, table: &TableId) -> bool {
        self.live.settings.selection.includes(table)
    }

    fn expect(&self, relation: &Relation, row: &[Value]) -> Result<ExpectedRow, String> {
        // The key columns' text as `toString` prints it, for the key types
        // tables are keyed by (numbers, text, uuids, dates).
        let key: Vec<Json> = relation
            .key_indexes()
            .map(|i| match &row[i] {
                Value::Text(s) | Value::Uuid(s) | Value::Numeric(s) | Value::Date(s) => {
                    Json::String(s.clone())
                }
                other => Json::String(match other.to_json() {
                    Json::String(s) => s,
                    j => j.to_string(),
                }),
            })
            .collect();
        Ok(ExpectedRow {
            address: serde_json::to_vec(&key).map_err(|e| e.to_string())?,
            digest: 0,
        })
    }

    fn stages(&self) -> bool {
        true
    }

    async fn stage(&mut self, relation: &Relation, batch: &Batch) -> Result<(), SinkError> {
        if !self.staging.tables.contains_key(&relation.id) {
            // Left by a verification that did not finish.
            self.drop_staging(relation).await?;
        }
        self.staging.apply(batch).await
    }

    async fn staged(
        &mut self,
        relation: &Relation,
        page: ExpectedPage<'_>,
    ) -> Result<(), SinkError> {
        let rows = select(&self.staging, relation, "").await?;
        page(
            rows.into_iter()
                .filter_map(|r| {
                    Some(ExpectedRow {
                        address: r.address,
                        digest: r.digest?,
                    })
                })
                .collect(),
        );
        Ok(())
    }

    async fn unstage(&mut self, relation: &Relation) -> Result<(), SinkError> {
        self.staging.tables.remove(&relation.id);
        self.staging.names.clear();
        self.drop_staging(relation).await
    }

    async fn scan(&mut self, relation: &Relation, page: Page<'_>) -> Result<(), SinkError> {
        page(select(&self.live, relation, "").await?);
        Ok(())
    }

    async fn read(
        &mut self,
        relation: &Relation,
        addresses: &[Vec<u8>],
    ) -> Result<Vec<Option<StoredRow>>, SinkError> {
        let keys = key_columns(relation);
        let mut found: HashMap<Vec<u8>, StoredRow> = HashMap::new();
        for chunk in addresses.chunks(PAGE) {
            let tuples: Vec<String> = chunk
                .iter()
                .filter_map(|a| {
                    let key: Vec<Json> = serde_json::from_slice(a).ok()?;
                    let parts: Vec<String> = key
                        .iter()
                        .map(|v| match v {
                            Json::String(s) => literal(s),
                            other => other.to_string(),
                        })
                        .collect();
                    Some(format!("({})", parts.join(", ")))
                })
                .collect();
            if tuples.is_empty() {
                continue;
            }
            let filter = format!("WHERE ({}) IN ({})", keys.join(", "), tuples.join(", "));
            for row in select(&self.live, relation, &filter).await? {
                found.insert(row.address.clone(), row);
            }
        }
        Ok(addresses.iter().map(|a| found.remove(a)).collect())
    }
}
