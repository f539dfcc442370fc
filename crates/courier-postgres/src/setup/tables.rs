use courier_core::{TableFilter, TableId};
use tokio_postgres::Client;

use super::SetupError;

/// A table Courier captures, as found in the catalog.
#[derive(Clone, Debug)]
pub struct SourceTable {
    pub id: TableId,
    pub oid: u32,
    /// The planner's row estimate (for progress display).
    pub estimated_rows: u64,
    /// Pages on disk, for splitting a snapshot into ctid ranges.
    pub pages: u64,
}

/// Resolves the configured patterns to existing tables, and checks that each
/// has a key Courier can use (a primary key or a replica identity).
pub async fn resolve_tables(
    client: &Client,
    filter: &TableFilter,
    patterns: &[String],
) -> Result<Vec<SourceTable>, SetupError> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, c.oid, c.relreplident::text, \
                    greatest(c.reltuples, 0)::int8, \
                    (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg_toast%' \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(SetupError::query("list tables"))?;
    let mut out = Vec::new();
    for r in rows {
        let id = TableId::new(r.get::<_, String>(0), r.get::<_, String>(1));
        if !filter.matches(&id) {
            continue;
        }
        let replident: String = r.get(3);
        let (has_pk, has_ri_index): (bool, bool) = (r.get(6), r.get(7));
        let keyed = has_pk || replident == "f" || (replident == "i" && has_ri_index);
        if !keyed {
            let quoted = id.quoted();
            return Err(SetupError::NoKey(id, quoted));
        }
        out.push(SourceTable {
            id,
            oid: r.get::<_, u32>(2),
            estimated_rows: r.get::<_, i64>(4).max(0) as u64,
            pages: r.get::<_, i64>(5).max(0) as u64,
        });
    }
    for exact in filter.exact_tables() {
        if !out.iter().any(|t| t.id == exact) {
            return Err(SetupError::MissingTable(exact));
        }
    }
    for schema in filter.wildcard_schemas() {
        if !out.iter().any(|t| t.id.schema == schema) {
            let pattern = patterns
                .iter()
                .find(|p| p.starts_with(schema))
                .cloned()
                .unwrap_or_default();
            return Err(SetupError::EmptyPattern(pattern));
        }
    }
    Ok(out)
}

/// Resolves an outbox table: it must exist, and have a key or a replica
/// identity (PostgreSQL refuses a DELETE on a published table without
/// one, and outbox rows are deleted). Its rows are never snapshotted.
pub async fn resolve_outbox_table(
    client: &Client,
    id: &TableId,
) -> Result<SourceTable, SetupError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, greatest(c.reltuples, 0)::int8, \
                    (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname = $1 AND c.relname = $2",
            &[&id.schema, &id.name],
        )
        .await
        .map_err(SetupError::query(format!("look up outbox table {id}")))?
        .ok_or_else(|| SetupError::MissingOutboxTable(id.clone()))?;
    let replident: String = row.get(1);
    let (has_pk, has_ri_index): (bool, bool) = (row.get(4), row.get(5));
    if !(has_pk || replident == "f" || (replident == "i" && has_ri_index)) {
        return Err(SetupError::OutboxNoKey(id.clone(), id.quoted()));
    }
    Ok(SourceTable {
        id: id.clone(),
        oid: row.get::<_, u32>(0),
        estimated_rows: row.get::<_, i64>(2).max(0) as u64,
        pages: row.get::<_, i64>(3).max(0) as u64,
    })
}
