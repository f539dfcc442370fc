//! Creating and evolving the ClickHouse table (and its current-rows view)
//! of a source table from the relation the stream carries.

use std::sync::Arc;

use courier_core::{Relation, SinkError, SinkErrorKind};

use super::client::{ChError, Client};
use super::types::{ChType, Features};

/// Columns Courier adds to every table.
pub const VERSION_COLUMN: &str = "_version";
pub const DELETED_COLUMN: &str = "_deleted";
pub const SYNCED_AT_COLUMN: &str = "_synced_at";
/// The current-rows view of table `t` is `t` followed by this suffix.
pub const VIEW_SUFFIX: &str = "_current";

/// What the sink knows about one ClickHouse table.
pub(crate) struct TableState {
    /// The relation the table was last brought in line with.
    pub relation: Arc<Relation>,
    /// The ClickHouse type of each relation column, in relation order, as
    /// the table has it (what its rows are encoded as).
    pub types: Vec<ChType>,
    /// `database`.`table`, quoted.
    pub qualified: String,
    /// The INSERT statement for the relation's columns.
    pub insert: String,
}

/// Quotes a ClickHouse identifier with backticks.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// Quotes a string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Brings the table `database.name` in line with `rel`: creates it and its
/// view when missing, adds new columns, widens changed ones, makes dropped
/// ones Nullable, and recreates the view when anything changed.
///
/// A change ClickHouse cannot follow is a fatal error naming the table, the
/// column, both types and the fix.
pub(crate) async fn sync_table(
    client: &Client,
    features: &Features,
    database: &str,
    name: &str,
    rel: &Arc<Relation>,
) -> Result<TableState, SinkError> {
    let qualified = format!("{}.{}", quote(database), quote(name));
    let fail = |what: &str, e: ChError| {
        let msg = format!("clickhouse: {what} {qualified}: {e}");
        SinkError::new(e.kind(), msg)
            .with_table(&rel.id)
            .with_source(e)
    };
    // The table cannot follow the relation's shape.
    let fatal = |msg: String| SinkError::new(SinkErrorKind::Schema, msg).with_table(&rel.id);

    let types: Vec<ChType> = rel
        .columns
        .iter()
        .map(|c| ChType::of_column(c, features))
        .collect();
    for c in &rel.columns {
        if [VERSION_COLUMN, DELETED_COLUMN, SYNCED_AT_COLUMN].contains(&c.name.as_str()) {
            return Err(fatal(format!(
                "clickhouse: column {} of {} has the name of a column Courier adds; rename it in PostgreSQL or leave the table out of this sink's tables",
                c.name, rel.id
            )));
        }
    }
    let keys: Vec<usize> = rel.key_indexes().collect();
    if keys.is_empty() {
        return Err(fatal(format!(
            "clickhouse: {} has no key columns; give it a primary key or REPLICA IDENTITY FULL",
            rel.id
        )));
    }
    for &k in &keys {
        if matches!(types[k], ChType::Array(_)) {
            return Err(fatal(format!(
                "clickhouse: key column {} of {} is an array, which ClickHouse cannot order by; give the table a primary key without arrays",
                rel.columns[k].name, rel.id
            )));
        }
    }

    let existing = columns(client, database, name)
        .await
        .map_err(|e| fail("read the columns of", e))?;
    let mut changed = false;
    // Columns dropped in PostgreSQL: kept, and NULL in rows written from now on.
    let mut kept: Vec<&str> = Vec::new();
    if existing.is_empty() {
        client
            .query(&create_table(&qualified, rel, &types, &keys, features))
            .await
            .map_err(|e| fail("create", e))?;
        changed = true;
    } else {
        let mut alters = Vec::new();
        for (c, want) in rel.columns.iter().zip(&types) {
            match existing.iter().find(|(n, _)| n == &c.name) {
                None => {
                    let t = match want {
                        ChType::Array(_) | ChType::Nullable(_) => want.clone(),
                        t => ChType::Nullable(Box::new(t.clone())),
                    };
                    alters.push(format!("ADD COLUMN {} {t}", quote(&c.name)));
                }
                Some((_, have)) => match have.follow(want) {
                    Ok(None) => {}
                    Ok(Some(_)) if c.is_key => {
                        return Err(fatal(format!(
                            "clickhouse: key column {} of {} ({qualified}) changed from {have} to {want}; ClickHouse cannot change a sorting key column. Rebuild the table: drop {qualified} and its view in ClickHouse, then snapshot {} again (remove it from source.tables, start Courier, add it back)",
                            c.name, rel.id, rel.id
                        )))
                    }
                    Ok(Some(t)) => alters.push(format!("MODIFY COLUMN {} {t}", quote(&c.name))),
                    Err(()) => {
                        return Err(fatal(format!(
                            "clickhouse: column {} of {} changed type from {have} (in {qualified}) to {want}, which ClickHouse cannot convert without losing data. Rebuild the table: drop {qualified} and its view in ClickHouse, then snapshot {} again (remove it from source.tables, start Courier, add it back)",
                            c.name, rel.id, rel.id
                        )))
                    }
                },
            }
        }
        for (n, have) in &existing {
            let ours = [VERSION_COLUMN, DELETED_COLUMN, SYNCED_AT_COLUMN].contains(&n.as_str());
            if ours || rel.column_index(n).is_some() {
                continue;
            }
            kept.push(n);
            if !have.is_nullable() && !matches!(have, ChType::Array(_)) {
                alters.push(format!(
                    "MODIFY COLUMN {} {}",
                    quote(n),
                    ChType::Nullable(Box::new(have.clone()))
                ));
            }
        }
        for a in &alters {
            client
                .query(&format!("ALTER TABLE {qualified} {a}"))
                .await
                .map_err(|e| fail("alter", e))?;
            changed = true;
        }
    }
    let view = format!(
        "{}.{}",
        quote(database),
        quote(&format!("{name}{VIEW_SUFFIX}"))
    );
    let mut view_cols: Vec<String> = rel.columns.iter().map(|c| quote(&c.name)).collect();
    view_cols.extend(kept.iter().map(|n| quote(n)));
    view_cols.push(quote(VERSION_COLUMN));
    view_cols.push(quote(SYNCED_AT_COLUMN));
    let create_view = format!(
        "CREATE VIEW IF NOT EXISTS {view} AS SELECT {} FROM {qualified} FINAL WHERE {} = 0",
        view_cols.join(", "),
        quote(DELETED_COLUMN)
    );
    if changed {
        client
            .query(&format!("DROP TABLE IF EXISTS {view}"))
            .await
            .map_err(|e| fail("drop the view of", e))?;
    }
    client
        .query(&create_view)
        .await
        .map_err(|e| fail("create the view of", e))?;

    // RowBinary carries no types: rows are encoded as the table's columns
    // are, which may be wider than the relation's (kept after a narrowing).
    let types = if changed {
        let now = columns(client, database, name)
            .await
            .map_err(|e| fail("read the columns of", e))?;
        table_types(rel, &now, &types)
    } else {
        table_types(rel, &existing, &types)
    };
    let mut insert_cols: Vec<String> = rel.columns.iter().map(|c| quote(&c.name)).collect();
    insert_cols.push(quote(VERSION_COLUMN));
    insert_cols.push(quote(DELETED_COLUMN));
    let insert = format!(
        "INSERT INTO {qualified} ({}) FORMAT RowBinary",
        insert_cols.join(", ")
    );
    Ok(TableState {
        relation: Arc::clone(rel),
        types,
        qualified,
        insert,
    })
}

/// Each relation column's type as the table has it; the mapped type where
/// the table lacks the column (which does not happen once it is aligned).
fn table_types(rel: &Relation, table: &[(String, ChType)], mapped: &[ChType]) -> Vec<ChType> {
    rel.columns
        .iter()
        .zip(mapped)
        .map(|(c, want)| {
            table
                .iter()
                .find(|(n, _)| n == &c.name)
                .map_or_else(|| want.clone(), |(_, have)| have.clone())
        })
        .collect()
}

fn create_table(
    qualified: &str,
    rel: &Relation,
    types: &[ChType],
    keys: &[usize],
    f: &Features,
) -> String {
    let mut cols: Vec<String> = rel
        .columns
        .iter()
        .zip(types)
        .map(|(c, t)| format!("{} {t}", quote(&c.name)))
        .collect();
    cols.push(format!("{} UInt64", quote(VERSION_COLUMN)));
    cols.push(format!("{} UInt8", quote(DELETED_COLUMN)));
    cols.push(format!(
        "{} DateTime('UTC') DEFAULT now()",
        quote(SYNCED_AT_COLUMN)
    ));
    // Of the rows with one key, ReplacingMergeTree keeps the greatest
    // `_version`, the last inserted among equals: the rule of
    // `courier_core::version::incoming_wins`, which `Winners` applies
    // before insert, so a block holds one row per key.
    let engine = if f.is_deleted {
        format!(
            "ReplacingMergeTree({}, {})",
            quote(VERSION_COLUMN),
            quote(DELETED_COLUMN)
        )
    } else {
        format!("ReplacingMergeTree({})", quote(VERSION_COLUMN))
    };
    let order: Vec<String> = keys.iter().map(|&k| quote(&rel.columns[k].name)).collect();
    let settings = if f.dedup_token {
        " SETTINGS non_replicated_deduplication_window = 1000"
    } else {
        ""
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {qualified} ({}) ENGINE = {engine} ORDER BY ({}){settings}",
        cols.join(", "),
        order.join(", ")
    )
}

/// The table's columns and types, in table order; empty when it does not exist.
async fn columns(
    client: &Client,
    database: &str,
    table: &str,
) -> Result<Vec<(String, ChType)>, ChError> {
    let body = client
        .query(&format!(
            "SELECT name, type FROM system.columns WHERE database = {} AND table = {} FORMAT JSONEachRow",
            literal(database),
            literal(table)
        ))
        .await?;
    let mut out = Vec::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        #[derive(serde::Deserialize)]
        struct Col {
            name: String,
            #[serde(rename = "type")]
            kind: String,
        }
        if let Ok(c) = serde_json::from_str::<Col>(line) {
            out.push((c.name, ChType::parse(&c.kind)));
        }
    }
    Ok(out)
}
