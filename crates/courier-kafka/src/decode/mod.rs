//! One Kafka record of a change topic back into a [`Change`].
//!
//! **Formats**, detected per record under [`Format::Auto`]: Kafka Connect
//! JSON with schemas (`{"schema": ..., "payload": ...}`: Courier's
//! `json-schema`, and Debezium's PostgreSQL connector with JsonConverter's
//! `schemas.enable=true`), and the bare envelope (Courier's `json`,
//! Debezium with `schemas.enable=false`). With a schema, each column's type
//! comes from its Connect field (Debezium's semantic names: `Decimal`,
//! `VariableScaleDecimal`, `Date`, `MicroTime`, `MicroTimestamp`,
//! `ZonedTimestamp`, `Json`, `Uuid`, ...) and values come back exactly as
//! Courier's own capture produces them, except `timetz` (Debezium's
//! `ZonedTime` is in UTC; the original offset is gone). Without a schema,
//! types are inferred from a table's first record (integer, float, boolean,
//! JSON object, array, else text), so exact numerics, dates and times stay
//! text, and Debezium's default decimal bytes cannot be read back (set
//! `decimal.handling.mode=string` there, or use schemas).
//!
//! **Versions.** Courier's records carry their transaction's commit LSN
//! (header `courier.lsn`, and `source.lsn`): that is the version, exactly as
//! in direct mode. A Debezium record's `source.lsn` is the change's own
//! LSN, and its `source.sequence` is `[lastCommitLsn, lsn]`, where
//! `lastCommitLsn` is the commit LSN of the transaction Debezium streamed
//! before this one. Debezium streams transactions in commit order, so
//! `lastCommitLsn` (or, for the first transaction after the connector
//! started, the change's LSN, which is below that transaction's commit)
//! grows from one transaction to the next, and two transactions that change
//! one row get versions in their commit order. A change's own LSN alone
//! would not do: a transaction that wrote a row before Debezium's snapshot
//! but committed after it has an LSN below the snapshot's, yet must win.
//! So Debezium's snapshot reads (`op = r`) get version 0: any streamed
//! change is newer than a snapshot read, and a replayed snapshot record
//! never overwrites a streamed one. (A second Debezium snapshot therefore
//! does not overwrite rows a store already has: rebuild into an empty store.)
//!
//! **Tombstones** (null values) are deletes of their key: one directly after
//! the delete of the same key in the same partition (as Courier and Debezium
//! write them) carries nothing new and decodes to `None`; a lone one (its
//! delete compacted away) is a delete at version 0 from Debezium (it cannot
//! remove a row a store already holds at a greater version) and at its
//! `courier.lsn` from Courier.

mod connect;

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::{Change, Column, Lsn, Op, PgType, Relation, TableId, Value};
use serde_json::Value as Json;

/// The header in which Courier's Kafka sink writes a change's commit LSN.
const LSN_HEADER: &str = "courier.lsn";

/// One record as read from Kafka.
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// How records are read (`source.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Detected per record.
    Auto,
    /// The bare envelope, without schemas.
    Json,
    /// Kafka Connect JSON with schemas.
    JsonSchema,
}

/// A record that is not a change Courier can apply, naming where it is and
/// how to fix it (never a value of the row).
#[derive(Debug, thiserror::Error)]
#[error("topic {topic} partition {partition} offset {offset}: {problem}; {fix}")]
pub struct DecodeError {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub problem: String,
    pub fix: String,
}

/// What the decoder remembers of a table: its relation, and the schema
/// (or, without one, the column names) it was built from.
struct Table {
    relation: Arc<Relation>,
    /// The value schema's `after`/`before` struct the relation came from
    /// (`Json::Null` for inferred relations).
    schema: Json,
    key_names: Vec<String>,
}

/// Decodes records, remembering each table's relation (a schema that
/// changes makes a new one, as a DDL change does for PostgreSQL) and, per
/// partition, the last delete (for the tombstone after it).
pub struct Decoder {
    format: Format,
    tables: HashMap<TableId, Table>,
    /// Per (topic, partition): the key of the newest delete.
    last_delete: HashMap<(String, i32), Vec<u8>>,
    /// Lone tombstones of a table whose relation is not known yet (skipped).
    pub skipped_tombstones: u64,
}

impl Decoder {
    pub fn new(format: Format) -> Decoder {
        Decoder {
            format,
            tables: HashMap::new(),
            last_delete: HashMap::new(),
            skipped_tombstones: 0,
        }
    }

    /// One record → `Ok(Some(change))`; `Ok(None)` for a record that carries
    /// no change (a tombstone after its delete, a lone tombstone of a table
    /// not seen yet, a record of Debezium's heartbeat or transaction topics).
    pub fn decode(&mut self, r: &Record<'_>) -> Result<Option<Change>, DecodeError> {
        let err = |problem: String, fix: &str| DecodeError {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            problem,
            fix: fix.to_string(),
        };
        let Some(bytes) = r.value else {
            return self
                .tombstone(r)
                .map_err(|p| err(p, "only change topics can be read"));
        };
        let value: Json = serde_json::from_slice(bytes).map_err(|e| {
            err(
                format!("the value is not JSON ({e})"),
                "read only topics of change events in JSON (Courier's json or json-schema, or Debezium with JsonConverter)",
            )
        })?;
        let (schema, payload) = match (self.format, value.get("schema"), value.get("payload")) {
            (Format::Auto | Format::JsonSchema, Some(s), Some(p)) if s.is_object() => {
                (Some(s), p)
            }
            (Format::JsonSchema, _, _) => {
                return Err(err(
                    "the value has no Kafka Connect schema".into(),
                    "set source.format = \"json\" or \"auto\", or write the topic with schemas (JsonConverter schemas.enable=true)",
                ))
            }
            _ => (None, &value),
        };
        let Some(op) = payload.get("op").and_then(Json::as_str) else {
            if is_metadata(payload) {
                return Ok(None);
            }
            return Err(err(
                "the value is not a change event (no \"op\")".into(),
                "subscribe only to change topics (source.topics / source.topic_pattern), not to other topics",
            ));
        };
        let op = match op {
            "c" => Op::Insert,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            "m" => return Ok(None),
            other => {
                return Err(err(
                    format!("unknown op {other:?}"),
                    "the topic's producer writes events Courier does not know; read only Courier's or Debezium's change topics",
                ))
            }
        };
        let source = &payload["source"];
        let table = match (source["schema"].as_str(), source["table"].as_str()) {
            (Some(s), Some(t)) => TableId::new(s, t),
            _ => {
                return Err(err(
                    "the event's source has no schema and table".into(),
                    "read only Courier's or Debezium's PostgreSQL change topics",
                ))
            }
        };
        let courier_lsn = header_lsn(r.headers);
        let from_courier = courier_lsn.is_some()
            || source["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("courier"));
        let version = if from_courier {
            courier_lsn
                .or_else(|| source["lsn"].as_u64().map(Lsn))
                .unwrap_or(Lsn::ZERO)
        } else {
            debezium_version(op, source)
        };
        let xid = source["txId"].as_u64().unwrap_or(0) as u32;
        let commit_time_us = source["ts_us"]
            .as_i64()
            .or_else(|| source["ts_ms"].as_i64().map(|ms| ms * 1000))
            .unwrap_or(0);
        let key = self.key_names(r, schema.is_some()).map_err(|p| {
            err(
                p,
                "read only change topics whose records are keyed by the table's primary key",
            )
        })?;
        let row_schema = schema.map(|s| row_schema(s, op));
        let relation = self
            .relation(&table, row_schema, payload, &key)
            .map_err(|p| err(p, "check the topic's producer; a column type Courier cannot map is read as text only without schemas (source.format = \"json\")"))?;
        if op == Op::Truncate {
            return Ok(Some(Change::truncate(
                relation,
                version,
                xid,
                commit_time_us,
            )));
        }
        let row = |which: &str| -> Result<Option<Vec<Value>>, String> {
            let v = &payload[which];
            if v.is_null() {
                return Ok(None);
            }
            let fields = row_schema.map(|s| &s["fields"]);
            relation
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let field_schema = fields.and_then(|f| f.get(i));
                    connect::value(&c.pg_type, field_schema, &v[c.name.as_str()])
                        .map_err(|p| format!("column {}: {p}", c.name))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
        let before = row("before").map_err(|p| err(p, "check the topic's producer"))?;
        let after = row("after").map_err(|p| err(p, "check the topic's producer"))?;
        if op != Op::Delete && after.is_none() {
            return Err(err(
                format!("a {op:?} event without \"after\""),
                "check the topic's producer",
            ));
        }
        let before = match (op, before) {
            (Op::Delete, None) => Some(self.key_row(&relation, r, schema.is_some())?),
            (_, b) => b,
        };
        if let (Op::Delete, Some(k)) = (op, r.key) {
            self.last_delete
                .insert((r.topic.to_string(), r.partition), k.to_vec());
        }
        Change::new(relation, op, before, after, version, xid, commit_time_us)
            .map(Some)
            .map_err(|e| err(e.to_string(), "check the topic's producer"))
    }

    /// A null value: the tombstone of its key.
    fn tombstone(&mut self, r: &Record<'_>) -> Result<Option<Change>, String> {
        let Some(key) = r.key else {
            return Err("a record with neither key nor value".into());
        };
        let slot = (r.topic.to_string(), r.partition);
        if let Some(k) = self.last_delete.get(&slot) {
            if k == key {
                self.last_delete.remove(&slot);
                return Ok(None);
            }
        }
        // A lone tombstone: a delete of the key, if its table is known.
        let key_json: Json = serde_json::from_slice(key)
            .map_err(|e| format!("the tombstone's key is not JSON ({e})"))?;
        let fields = key_json.get("payload").unwrap_or(&key_json);
        let table = self.tables.values().find(|t| {
            fields.as_object().is_some_and(|o| {
                o.len() == t.key_names.len() && t.key_names.iter().all(|n| o.contains_key(n))
            })
        });
        let Some(table) =
            table.filter(|_| self.tables.len() == 1 || topic_names(r.topic, &self.tables))
        else {
            self.skipped_tombstones += 1;
            return Ok(None);
        };
        let relation = table.relation.clone();
        let row: Vec<Value> = relation
            .columns
            .iter()
            .map(|c| {
                if c.is_key {
                    connect::value(&c.pg_type, None, &fields[c.name.as_str()])
                        .unwrap_or(Value::Null)
                } else {
                    Value::Null
                }
            })
            .collect();
        let version = header_lsn(r.headers).unwrap_or(Lsn::ZERO);
        Change::new(relation, Op::Delete, Some(row), None, version, 0, 0)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The key's field names (the table's key columns), from the record key.
    fn key_names(&self, r: &Record<'_>, with_schema: bool) -> Result<Vec<String>, String> {
        let Some(key) = r.key else {
            return Err("the record has no key".into());
        };
        let key: Json =
            serde_json::from_slice(key).map_err(|e| format!("the key is not JSON ({e})"))?;
        let fields = if with_schema {
            key.get("payload").unwrap_or(&key)
        } else {
            &key
        };
        match fields.as_object() {
            Some(o) if !o.is_empty() => Ok(o.keys().cloned().collect()),
            _ => Err("the key is not an object of the key columns".into()),
        }
    }

    /// The key-only row of a delete without `before`, from the record key.
    fn key_row(
        &self,
        relation: &Relation,
        r: &Record<'_>,
        with_schema: bool,
    ) -> Result<Vec<Value>, DecodeError> {
        let key: Json = r
            .key
            .and_then(|k| serde_json::from_slice(k).ok())
            .unwrap_or(Json::Null);
        let fields = if with_schema {
            key.get("payload").unwrap_or(&key)
        } else {
            &key
        };
        Ok(relation
            .columns
            .iter()
            .map(|c| {
                if c.is_key {
                    connect::value(&c.pg_type, None, &fields[c.name.as_str()])
                        .unwrap_or(Value::Null)
                } else {
                    Value::Null
                }
            })
            .collect())
    }

    /// The table's relation: the cached one while its schema is unchanged,
    /// else a new one from the schema (or inferred from the payload).
    fn relation(
        &mut self,
        table: &TableId,
        row_schema: Option<&Json>,
        payload: &Json,
        key: &[String],
    ) -> Result<Arc<Relation>, String> {
        if let Some(t) = self.tables.get(table) {
            let same = match row_schema {
                Some(s) => t.schema == *s,
                None => t.schema.is_null(),
            };
            if same && t.key_names == key {
                return Ok(t.relation.clone());
            }
            if row_schema.is_none() && t.schema.is_null() && t.key_names == key {
                return Ok(t.relation.clone());
            }
        }
        let columns = match row_schema {
            Some(s) => columns_from_schema(s, key)?,
            None => columns_inferred(payload, key)?,
        };
        let relation = Arc::new(Relation {
            oid: 0,
            id: table.clone(),
            columns,
        });
        self.tables.insert(
            table.clone(),
            Table {
                relation: relation.clone(),
                schema: row_schema.cloned().unwrap_or(Json::Null),
                key_names: key.to_vec(),
            },
        );
        Ok(relation)
    }
}

/// Whether a lone tombstone's topic may belong to one of several tables:
/// Courier's and Debezium's topics are named `<prefix>.<schema>.<table>`.
fn topic_names(topic: &str, tables: &HashMap<TableId, Table>) -> bool {
    tables
        .keys()
        .any(|t| topic.ends_with(&format!(".{}.{}", t.schema, t.name)))
}

/// The `after` (else `before`) struct of an envelope schema.
fn row_schema(envelope: &Json, op: Op) -> &Json {
    let fields = envelope["fields"].as_array();
    let find =
        |name: &str| fields.and_then(|f| f.iter().find(|x| x["field"].as_str() == Some(name)));
    let first = if op == Op::Delete { "before" } else { "after" };
    find(first)
        .or_else(|| find(if first == "after" { "before" } else { "after" }))
        .unwrap_or(&Json::Null)
}

fn columns_from_schema(row: &Json, key: &[String]) -> Result<Vec<Column>, String> {
    let Some(fields) = row["fields"].as_array() else {
        return Err("the envelope schema has no before/after struct".into());
    };
    fields
        .iter()
        .map(|f| {
            let name = f["field"].as_str().ok_or("a schema field without a name")?;
            let pg_type = connect::pg_type(f).ok_or_else(|| {
                format!(
                    "column {name} has a schema Courier cannot map (type {}, name {})",
                    f["type"],
                    f["name"].as_str().unwrap_or("none")
                )
            })?;
            Ok(column(
                name,
                pg_type,
                f["optional"].as_bool().unwrap_or(true),
                key,
            ))
        })
        .collect()
}

fn columns_inferred(payload: &Json, key: &[String]) -> Result<Vec<Column>, String> {
    let row = match (&payload["after"], &payload["before"]) {
        (Json::Object(a), _) => a,
        (_, Json::Object(b)) => b,
        _ => return Err("the event has neither before nor after".into()),
    };
    Ok(row
        .iter()
        .map(|(name, v)| column(name, connect::inferred_type(v), !key.contains(name), key))
        .collect())
}

fn column(name: &str, pg_type: PgType, nullable: bool, key: &[String]) -> Column {
    let (type_oid, type_name) = sql_type(&pg_type);
    let is_key = key.iter().any(|k| k == name);
    Column {
        name: name.to_string(),
        type_oid,
        type_modifier: match &pg_type {
            PgType::Numeric {
                precision: Some(p),
                scale: Some(s),
            } => ((i32::from(*p) << 16) | i32::from(*s)) + 4,
            _ => -1,
        },
        type_name,
        pg_type,
        nullable: nullable && !is_key,
        is_key,
    }
}

/// PostgreSQL's OID and SQL name of a type, for sinks that create tables.
fn sql_type(t: &PgType) -> (u32, String) {
    let (oid, name): (u32, &str) = match t {
        PgType::Bool => (16, "boolean"),
        PgType::Int2 => (21, "smallint"),
        PgType::Int4 => (23, "integer"),
        PgType::Int8 => (20, "bigint"),
        PgType::Oid => (26, "oid"),
        PgType::Float4 => (700, "real"),
        PgType::Float8 => (701, "double precision"),
        PgType::Numeric {
            precision: Some(p),
            scale: Some(s),
        } => return (1700, format!("numeric({p},{s})")),
        PgType::Numeric { .. } => (1700, "numeric"),
        PgType::Text | PgType::Enum | PgType::Other => (25, "text"),
        PgType::Bytea => (17, "bytea"),
        PgType::Uuid => (2950, "uuid"),
        PgType::Date => (1082, "date"),
        PgType::Time => (1083, "time"),
        PgType::TimeTz => (1266, "timetz"),
        PgType::Timestamp => (1114, "timestamp"),
        PgType::TimestampTz => (1184, "timestamptz"),
        PgType::Interval => (1186, "interval"),
        PgType::Json => (114, "json"),
        PgType::Jsonb => (3802, "jsonb"),
        PgType::Array(inner) => {
            let (_, n) = sql_type(inner);
            return (0, format!("{n}[]"));
        }
    };
    (oid, name.to_string())
}

/// The commit LSN Courier's sink writes in a header.
fn header_lsn(headers: &[(&str, Option<&[u8]>)]) -> Option<Lsn> {
    let (_, v) = headers.iter().find(|(k, _)| *k == LSN_HEADER)?;
    let text = std::str::from_utf8((*v)?).ok()?;
    text.parse::<u64>()
        .ok()
        .map(Lsn)
        .or_else(|| text.parse::<Lsn>().ok())
}

/// The version of a Debezium event (see the module's documentation).
fn debezium_version(op: Op, source: &Json) -> Lsn {
    if op == Op::Read {
        return Lsn::ZERO;
    }
    let as_u64 = |v: &Json| v.as_u64().or_else(|| v.as_str()?.parse().ok());
    let sequence: Option<Vec<Json>> = source["sequence"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok());
    let last_commit = sequence.as_ref().and_then(|s| s.first()).and_then(as_u64);
    let lsn = as_u64(&source["lsn"]);
    Lsn(last_commit.or(lsn).unwrap_or(0).max(1))
}

/// Debezium's heartbeat and transaction-metadata records.
fn is_metadata(payload: &Json) -> bool {
    payload
        .get("status")
        .is_some_and(|s| s == "BEGIN" || s == "END")
        || (payload.get("ts_ms").is_some() && payload.as_object().is_some_and(|o| o.len() == 1))
}

#[cfg(test)]
mod tests;
