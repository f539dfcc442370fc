//! Catalog look-ups through a regular (non-replication) connection: what a
//! type OID means, and which columns, keys and nullability a table has.
//!
//! The connection must run with [`SESSION_OPTIONS`] so that values it reads
//! (see the unchanged-TOAST re-read in [`crate::pgoutput`]) come back in the
//! same text forms as the replication stream's.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use courier_core::{Column, PgType, Relation, TableId};
use tokio_postgres::Client;

use crate::pgoutput::DecodeError;

/// Connection options (`options` in a connection string, or
/// `Config::options`) every connection Courier reads values through must use.
pub const SESSION_OPTIONS: &str =
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c extra_float_digits=3";

/// Domains over domains over ... are followed this deep, then refused.
const MAX_TYPE_DEPTH: u8 = 16;

/// Catalog access with a cache of resolved types.
///
/// Cloning shares the connection and copies the cache.
#[derive(Clone)]
pub struct Catalog {
    client: Arc<Client>,
    types: HashMap<u32, ResolvedType>,
}

/// A type OID resolved to the shape of its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedType {
    /// Through domains to the base type; enums are [`PgType::Enum`].
    pub pg_type: PgType,
    /// The SQL name, as `format_type` writes it (without a modifier).
    pub name: String,
}

/// A table's replica identity (`pg_class.relreplident`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// The primary key, if any.
    Default,
    /// No old row at all.
    Nothing,
    /// The whole old row.
    Full,
    /// The columns of a chosen unique index.
    Index,
}

/// A table as the catalog describes it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub id: TableId,
    pub replica_identity: ReplicaIdentity,
    /// Live columns (not dropped), in `attnum` order.
    pub columns: Vec<TableColumn>,
}

/// One live column of a [`TableInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// `format_type(atttypid, atttypmod)`, e.g. `numeric(12,2)`.
    pub type_name: String,
    pub not_null: bool,
    /// Part of the row key: the primary key; without one, the replica
    /// identity index; for REPLICA IDENTITY FULL without either, every column.
    pub is_key: bool,
    /// Whether PostgreSQL computes the column (`attgenerated`).
    pub generated: Generated,
}

/// Whether a column is a generated one, and of which kind
/// (`pg_attribute.attgenerated`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generated {
    /// An ordinary column.
    No,
    /// `GENERATED ALWAYS AS (...) STORED`: computed when the row is written.
    Stored,
    /// `GENERATED ALWAYS AS (...) VIRTUAL` (PostgreSQL 18+): computed when
    /// read; logical replication never publishes it.
    Virtual,
}

impl Generated {
    fn from_attgenerated(code: &str) -> Generated {
        match code {
            "s" => Generated::Stored,
            "v" => Generated::Virtual,
            _ => Generated::No,
        }
    }
}

impl TableInfo {
    /// The column with this name.
    pub fn column(&self, name: &str) -> Option<&TableColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Catalog {
    /// Wraps a connection that runs with [`SESSION_OPTIONS`].
    pub fn new(client: Arc<Client>) -> Self {
        Catalog {
            client,
            types: HashMap::new(),
        }
    }

    /// The connection, for queries of other parts of the decoder.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// What values of the type `oid` look like, and its SQL name. Results
    /// are cached for the life of the catalog.
    pub async fn resolve_type(&mut self, oid: u32) -> Result<ResolvedType, DecodeError> {
        self.resolve(oid, 0).await
    }

    fn resolve(&mut self, oid: u32, depth: u8) -> BoxFuture<'_, Result<ResolvedType, DecodeError>> {
        Box::pin(async move {
            if let Some(t) = self.types.get(&oid) {
                return Ok(t.clone());
            }
            if depth > MAX_TYPE_DEPTH {
                return Err(DecodeError::UnknownType { oid });
            }
            let row = self
                .client
                .query_opt(
                    "SELECT typtype::text, typcategory::text, typelem, typbasetype, typtypmod, \
                     format_type(oid, NULL) FROM pg_catalog.pg_type WHERE oid = $1",
                    &[&oid],
                )
                .await
                .map_err(DecodeError::catalog(format!("look up type OID {oid}")))?
                .ok_or(DecodeError::UnknownType { oid })?;
            let get = |e| DecodeError::catalog(format!("read type OID {oid}"))(e);
            let typtype: String = row.try_get(0).map_err(get)?;
            let category: String = row.try_get(1).map_err(get)?;
            let element: u32 = row.try_get(2).map_err(get)?;
            let base: u32 = row.try_get(3).map_err(get)?;
            let base_modifier: i32 = row.try_get(4).map_err(get)?;
            let name: String = row.try_get(5).map_err(get)?;
            let pg_type = if let Some(t) = PgType::from_builtin_oid(oid) {
                t
            } else if typtype == "e" {
                PgType::Enum
            } else if typtype == "d" {
                let base = self.resolve(base, depth + 1).await?;
                base.pg_type.with_modifier(base_modifier)
            } else if category == "A" && element != 0 {
                let element = self.resolve(element, depth + 1).await?;
                PgType::Array(Box::new(element.pg_type))
            } else {
                PgType::Other
            };
            let resolved = ResolvedType { pg_type, name };
            self.types.insert(oid, resolved.clone());
            Ok(resolved)
        })
    }

    /// The table's live columns with their keys and nullability, or `None`
    /// when no table has this OID (any more).
    pub async fn table_columns(&self, table_oid: u32) -> Result<Option<TableInfo>, DecodeError> {
        let what = || format!("read the columns of table OID {table_oid}");
        let rows = self
            .client
            .query(
                "SELECT n.nspname, c.relname, c.relreplident::text, a.attname, a.atttypid, \
                        a.atttypmod, a.attnotnull, format_type(a.atttypid, a.atttypmod), \
                        coalesce(a.attnum = ANY(pk.indkey::int2[]), false), \
                        coalesce(a.attnum = ANY(ri.indkey::int2[]), false), a.attgenerated::text \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a \
                   ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 LEFT JOIN pg_catalog.pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary \
                 LEFT JOIN pg_catalog.pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident \
                 WHERE c.oid = $1 ORDER BY a.attnum",
                &[&table_oid],
            )
            .await
            .map_err(DecodeError::catalog(what()))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let get = |e| DecodeError::catalog(what())(e);
        let id = TableId::new(
            first.try_get::<_, String>(0).map_err(get)?,
            first.try_get::<_, String>(1).map_err(get)?,
        );
        let replica_identity = match first.try_get::<_, String>(2).map_err(get)?.as_str() {
            "n" => ReplicaIdentity::Nothing,
            "f" => ReplicaIdentity::Full,
            "i" => ReplicaIdentity::Index,
            _ => ReplicaIdentity::Default,
        };
        let mut columns = Vec::with_capacity(rows.len());
        let mut in_pk = Vec::with_capacity(rows.len());
        let mut in_identity = Vec::with_capacity(rows.len());
        for row in &rows {
            columns.push(TableColumn {
                name: row.try_get(3).map_err(get)?,
                type_oid: row.try_get(4).map_err(get)?,
                type_modifier: row.try_get(5).map_err(get)?,
                not_null: row.try_get(6).map_err(get)?,
                type_name: row.try_get(7).map_err(get)?,
                is_key: false,
                generated: Generated::from_attgenerated(row.try_get(10).map_err(get)?),
            });
            in_pk.push(row.try_get::<_, bool>(8).map_err(get)?);
            in_identity.push(row.try_get::<_, bool>(9).map_err(get)?);
        }
        let keys = if in_pk.contains(&true) {
            in_pk
        } else if in_identity.contains(&true) {
            in_identity
        } else {
            vec![replica_identity == ReplicaIdentity::Full; columns.len()]
        };
        for (column, is_key) in columns.iter_mut().zip(keys) {
            column.is_key = is_key;
        }
        Ok(Some(TableInfo {
            id,
            replica_identity,
            columns,
        }))
    }

    /// The table's shape now, as a relation whose types resolve as the
    /// stream's do, or `None` when no table has this OID (any more).
    pub async fn relation(&mut self, table_oid: u32) -> Result<Option<Relation>, DecodeError> {
        let Some(info) = self.table_columns(table_oid).await? else {
            return Ok(None);
        };
        let mut columns = Vec::with_capacity(info.columns.len());
        for c in info.columns {
            let pg_type = match PgType::from_builtin_oid(c.type_oid) {
                Some(t) => t,
                None => self.resolve_type(c.type_oid).await?.pg_type,
            };
            columns.push(Column {
                nullable: !c.is_key && !c.not_null,
                is_key: c.is_key,
                pg_type: pg_type.with_modifier(c.type_modifier),
                type_name: c.type_name,
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                name: c.name,
            });
        }
        Ok(Some(Relation {
            oid: table_oid,
            id: info.id,
            columns,
        }))
    }
}
