//! Test relations, rows and changes for the compliance suite and sink tests.

use std::sync::Arc;

use courier_core::{Batch, Change, Column, Lsn, Op, PgType, Relation, Row, TableId, Value};

/// A table shaped like a product catalogue: `id int8` (the key), `name text`,
/// `price numeric(12,2)`, `tags text[]`, `doc jsonb`, `note text` (nullable,
/// always NULL in [`row`]), covering strings, exact numbers, arrays,
/// documents and NULL.
pub fn table(schema: &str, name: &str) -> Arc<Relation> {
    let col = |name: &str, oid: u32, type_name: &str, pg_type: PgType, key: bool| Column {
        name: name.to_string(),
        type_oid: oid,
        type_modifier: -1,
        type_name: type_name.to_string(),
        pg_type,
        nullable: !key,
        is_key: key,
    };
    Arc::new(Relation {
        oid: 16384,
        id: TableId::new(schema, name),
        columns: vec![
            col("id", 20, "bigint", PgType::Int8, true),
            col("name", 25, "text", PgType::Text, false),
            col(
                "price",
                1700,
                "numeric(12,2)",
                PgType::Numeric {
                    precision: Some(12),
                    scale: Some(2),
                },
                false,
            ),
            col(
                "tags",
                1009,
                "text[]",
                PgType::Array(Box::new(PgType::Text)),
                false,
            ),
            col("doc", 3802, "jsonb", PgType::Jsonb, false),
            col("note", 25, "text", PgType::Text, false),
        ],
    })
}

/// The row with key `id` whose contents derive from `name`.
pub fn row(id: i64, name: &str) -> Row {
    vec![
        Value::Int(id),
        Value::Text(name.to_string()),
        Value::Numeric(format!("{}.50", id * 10)),
        Value::Array(vec![
            Value::Text(name.to_string()),
            Value::Text("x:y".into()),
        ]),
        Value::Json(format!(
            "{{\"name\": {}, \"n\": {id}}}",
            serde_json::Value::String(name.to_string())
        )),
        Value::Null,
    ]
}

/// The key-only row PostgreSQL sends for a delete with the default replica identity.
pub fn key_row(id: i64) -> Row {
    let mut r = vec![Value::Null; 6];
    r[0] = Value::Int(id);
    r
}

/// A change of row `id` at commit LSN `version`: inserts, updates and reads
/// carry `row(id, name)`; deletes carry the key only (`name` is ignored).
pub fn change(rel: &Arc<Relation>, op: Op, id: i64, name: &str, version: u64) -> Change {
    if op == Op::Truncate {
        return Change::truncate(Arc::clone(rel), Lsn(version), 700, COMMIT_TIME_US);
    }
    let (before, after) = match op {
        Op::Delete => (Some(key_row(id)), None),
        _ => (None, Some(row(id, name))),
    };
    shaped(rel, op, before, after, version)
}

/// An update of `rel` that moves the row from key `old` to key `new`
/// (`before` holds the old key only, as PostgreSQL sends it).
pub fn moved(rel: &Arc<Relation>, old: i64, new: i64, name: &str, version: u64) -> Change {
    shaped(
        rel,
        Op::Update,
        Some(key_row(old)),
        Some(row(new, name)),
        version,
    )
}

/// A change of `rel` at commit LSN `version` whose after row is `row`
/// (which must have one value per column of `rel`).
pub fn row_change(rel: &Arc<Relation>, op: Op, row: Row, version: u64) -> Change {
    shaped(rel, op, None, Some(row), version)
}

const COMMIT_TIME_US: i64 = 1_764_400_000_000_000;

fn shaped(
    rel: &Arc<Relation>,
    op: Op,
    before: Option<Row>,
    after: Option<Row>,
    version: u64,
) -> Change {
    let xid = if op == Op::Read { 0 } else { 700 };
    Change::new(
        Arc::clone(rel),
        op,
        before,
        after,
        Lsn(version),
        xid,
        COMMIT_TIME_US,
    )
    .unwrap_or_else(|e| panic!("a test change of the wrong shape: {e}"))
}

/// A TRUNCATE of the table at commit LSN `version`.
pub fn truncate(rel: &Arc<Relation>, version: u64) -> Change {
    change(rel, Op::Truncate, 0, "", version)
}

/// A batch of the changes, complete through its greatest version.
pub fn batch(changes: Vec<Change>) -> Batch {
    let through = changes.iter().map(|c| c.version().into()).max();
    Batch { changes, through }
}

/// The row's JSON object with NULL columns left out: how the suite compares
/// what a sink reads back, since some layouts store NULL as an absent field.
pub fn expected_json(rel: &Relation, row: &[Value]) -> serde_json::Map<String, serde_json::Value> {
    rel.columns
        .iter()
        .zip(row)
        .filter(|(_, v)| !v.is_null())
        .map(|(c, v)| (c.name.clone(), v.to_json()))
        .collect()
}
