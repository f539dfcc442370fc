//! The decoder: a record's parts read by [`super::envelope`], its table by
//! [`super::schema`] or [`super::infer`], its values by
//! [`super::semantic`], its version by [`super::version`].

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::{Change, Lsn, Op, TableId, Value};
use serde_json::value::RawValue;

use super::envelope::{self, Event, Key, Nothing, Parsed, Row, Source};
use super::error::{DecodeError, DecodeErrorKind};
use super::infer::{self, Inferred};
use super::schema::{self, ConnectSchema, TableCodec};
use super::version::{self, PartitionState, Producer, COURIER_LSN_HEADER, COURIER_TXID_HEADER};
use super::{Format, Record};

/// Turns records of change topics into [`Change`]s. One decoder serves a
/// consumer's records of every topic and partition, in the order each
/// partition delivers them: it keeps each table's relation, and what each
/// partition's last records were (for tombstones).
#[derive(Debug, Default)]
pub struct Decoder {
    format: Format,
    topics: HashMap<String, TopicState>,
    /// Tables of records with schemas: the schemas their relation was
    /// built from.
    schema_tables: HashMap<TableId, Arc<SchemaTable>>,
    /// Tables of schemaless records.
    inferred_tables: HashMap<TableId, Inferred>,
}

#[derive(Debug, Default)]
struct TopicState {
    /// The table of the topic's last change, and how it was read.
    last: Option<TopicTable>,
    partitions: HashMap<i32, PartitionState>,
}

#[derive(Clone, Debug)]
enum TopicTable {
    Schema(Arc<SchemaTable>),
    Inferred(Arc<TableCodec>),
}

impl TopicTable {
    fn codec(&self) -> &Arc<TableCodec> {
        match self {
            TopicTable::Schema(t) => &t.codec,
            TopicTable::Inferred(c) => c,
        }
    }
}

/// A table of records with schemas: the schemas its codec was built from.
#[derive(Debug)]
struct SchemaTable {
    value_schema: String,
    key_schema: Option<String>,
    codec: Arc<TableCodec>,
}

impl Decoder {
    pub fn new(format: Format) -> Decoder {
        Decoder {
            format,
            ..Decoder::default()
        }
    }

    /// Decodes one record: `Ok(Some(change))` for a change; `Ok(None)` for a
    /// record that carries none (a tombstone that directly follows the
    /// delete of its key, a tombstone of a topic whose table this decoder
    /// has not seen yet, Debezium's heartbeats, transaction metadata and
    /// logical decoding messages); `Err` for a record that is not what
    /// Courier or Debezium's PostgreSQL connector writes, naming what is
    /// wrong and the fix.
    pub fn decode(&mut self, record: &Record<'_>) -> Result<Option<Change>, DecodeError> {
        let fail = |kind| DecodeError {
            topic: record.topic.to_owned(),
            partition: record.partition,
            offset: record.offset,
            kind: Box::new(kind),
        };
        self.topic_mut(record.topic)
            .partitions
            .entry(record.partition)
            .or_default()
            .at(record.offset);
        let Some(value) = record.value else {
            return self.tombstone(record).map_err(fail);
        };
        if let Some((known, event)) = self.with_known_schema(record.topic, value) {
            self.check_format(true).map_err(fail)?;
            return self
                .event(record, Some(&known.value_schema), event)
                .map_err(fail);
        }
        match envelope::parse(value).map_err(fail)? {
            Parsed::Null => self.tombstone(record).map_err(fail),
            Parsed::Nothing(what) => {
                skipped(
                    record,
                    match what {
                        Nothing::Heartbeat => "a heartbeat",
                        Nothing::TransactionMetadata => "transaction metadata",
                    },
                );
                Ok(None)
            }
            Parsed::Event { schema, event } => {
                self.check_format(schema.is_some()).map_err(fail)?;
                self.event(record, schema.map(RawValue::get), event)
                    .map_err(fail)
            }
        }
    }

    /// The change event of a record whose schema is, byte for byte, the
    /// one of the topic's last change (as JsonConverter writes every record
    /// of a table while its schema stays the same): the schema, most of the
    /// record, is then compared, not parsed again.
    fn with_known_schema<'v>(
        &self,
        topic: &str,
        value: &'v [u8],
    ) -> Option<(Arc<SchemaTable>, Event<'v>)> {
        let Some(TopicTable::Schema(t)) = self.topics.get(topic)?.last.as_ref() else {
            return None;
        };
        let payload = value
            .strip_prefix(b"{\"schema\":")?
            .strip_prefix(t.value_schema.as_bytes())?
            .strip_prefix(b",\"payload\":")?
            .trim_ascii_end()
            .strip_suffix(b"}")?;
        let event = envelope::parse_event(payload).ok()??;
        Some((Arc::clone(t), event))
    }

    /// Forgets what the decoder knows of a partition's last records: call
    /// it when the partition is assigned (again), since the records before
    /// its new position were not decoded here, or not just before. (A
    /// partition read again from an earlier offset, a seek or a replay, the
    /// decoder notices itself.)
    pub fn reset_partition(&mut self, topic: &str, partition: i32) {
        if let Some(t) = self.topics.get_mut(topic) {
            t.partitions.remove(&partition);
        }
    }

    fn check_format(&self, has_schema: bool) -> Result<(), DecodeErrorKind> {
        match (self.format, has_schema) {
            (Format::Json, true) => Err(DecodeErrorKind::FormatMismatch {
                configured: "json",
                found: "Kafka Connect JSON with schemas",
                fix: "set source.format = \"json-schema\" (or \"auto\")",
            }),
            (Format::JsonSchema, false) => Err(DecodeErrorKind::FormatMismatch {
                configured: "json-schema",
                found: "schemaless JSON",
                fix: "make the producer write schemas (Debezium: value.converter.schemas.enable=true and key.converter.schemas.enable=true; Courier's sink: format = \"json-schema\"), or set source.format = \"json\" (or \"auto\")",
            }),
            _ => Ok(()),
        }
    }

    fn event(
        &mut self,
        record: &Record<'_>,
        schema: Option<&str>,
        event: Event<'_>,
    ) -> Result<Option<Change>, DecodeErrorKind> {
        let Some(op) = op_of(&event.op)? else {
            skipped(record, "a logical decoding message");
            return Ok(None);
        };
        let source = match event.source {
            Some(raw) => envelope::parse_source(raw)?,
            None => {
                return Err(DecodeErrorKind::NotAnEnvelope {
                    reason: "it has no source block".into(),
                })
            }
        };
        if let Some(c) = source.connector.as_deref().filter(|c| *c != "postgresql") {
            return Err(DecodeErrorKind::Connector {
                connector: c.chars().take(32).collect(),
            });
        }
        let (Some(schema_name), Some(table_name)) = (&source.schema, &source.table) else {
            return Err(DecodeErrorKind::NoTable);
        };
        let producer = Producer::of(&source, record.header(COURIER_LSN_HEADER));
        let key = record.key.map(envelope::parse_key).transpose()?;
        let before = event.before.map(envelope::parse_row).transpose()?;
        let after = event.after.map(envelope::parse_row).transpose()?;

        let (codec, last) = match schema {
            Some(schema) => {
                let table = self.schema_table(
                    record.topic,
                    (schema_name, table_name),
                    schema,
                    key.as_ref(),
                    op,
                )?;
                (Arc::clone(&table.codec), TopicTable::Schema(table))
            }
            None => {
                let table = TableId::new(schema_name.as_ref(), table_name.as_ref());
                let rows: Vec<&Row> = after.iter().chain(before.iter()).collect();
                let codec = self.inferred_codec(&table, &rows, key.as_ref())?;
                (Arc::clone(&codec), TopicTable::Inferred(codec))
            }
        };

        let relation = &codec.relation;
        let check_toast = producer == Producer::Debezium && op == Op::Update;
        let decode_row = |row: &Row<'_>| decode_row(&codec, row, check_toast);
        let after = after.as_ref().map(decode_row).transpose()?;
        let mut before = before.as_ref().map(decode_row).transpose()?;
        if op == Op::Delete && before.is_none() {
            // No old row (REPLICA IDENTITY NOTHING): the key says which row.
            before = key.as_ref().map(|k| key_row(&codec, k)).transpose()?;
        }
        let (version, xid, commit_time_us) =
            stamp(producer, op, &source, record).map_err(|what| DecodeErrorKind::NoVersion {
                table: relation.id.clone(),
                what,
            })?;
        let change = if op == Op::Truncate {
            Change::truncate(Arc::clone(relation), version, xid, commit_time_us)
        } else {
            if before.is_none() && after.is_none() {
                return Err(DecodeErrorKind::NotAnEnvelope {
                    reason: format!(
                        "its op is {} but it has neither before nor after",
                        op.code()
                    ),
                });
            }
            Change::new(
                Arc::clone(relation),
                op,
                before,
                after,
                version,
                xid,
                commit_time_us,
            )
            .map_err(|e| DecodeErrorKind::NotAnEnvelope {
                reason: e.to_string(),
            })?
        };

        let topic = self.topic_mut(record.topic);
        topic
            .partitions
            .entry(record.partition)
            .or_default()
            .decoded(op, record.key, version);
        let unchanged = topic
            .last
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t.codec(), last.codec()));
        if !unchanged {
            topic.last = Some(last);
        }
        Ok(Some(change))
    }

    /// The table of a record with schemas: the topic's or the table's
    /// current one while its schemas stay the same, else one built from
    /// them (keeping the relation `Arc` when the columns did not change).
    fn schema_table(
        &mut self,
        topic: &str,
        (schema_name, table_name): (&str, &str),
        schema: &str,
        key: Option<&Key<'_>>,
        op: Op,
    ) -> Result<Arc<SchemaTable>, DecodeErrorKind> {
        let key_schema = key.and_then(|k| k.schema).map(RawValue::get);
        // A truncate has no key: its relation is the table's current one.
        let current = |t: &SchemaTable| {
            op == Op::Truncate
                || (std::ptr::eq(t.value_schema.as_str(), schema) || t.value_schema == schema)
                    && (key.is_none() || t.key_schema.as_deref() == key_schema)
        };
        if let Some(TopicTable::Schema(t)) = self.topics.get(topic).and_then(|t| t.last.as_ref()) {
            let id = &t.codec.relation.id;
            if id.schema == schema_name && id.name == table_name && current(t) {
                return Ok(Arc::clone(t));
            }
        }
        let table = TableId::new(schema_name, table_name);
        let old = self.schema_tables.get(&table);
        if let Some(t) = old.filter(|t| current(t)) {
            return Ok(Arc::clone(t));
        }
        let envelope: ConnectSchema =
            serde_json::from_str(schema).map_err(|_| DecodeErrorKind::NotAnEnvelope {
                reason: "its schema is not a Kafka Connect schema".into(),
            })?;
        let mut codec = schema::table_codec(&table, &envelope, &key_names(key))?;
        if let Some(old) = old.filter(|o| *o.codec.relation == *codec.relation) {
            codec.relation = Arc::clone(&old.codec.relation);
        }
        let t = Arc::new(SchemaTable {
            value_schema: schema.to_owned(),
            key_schema: key_schema.map(str::to_owned),
            codec: Arc::new(codec),
        });
        self.schema_tables.insert(table, Arc::clone(&t));
        Ok(t)
    }

    /// The codec of a schemaless record, inferred from its values and the
    /// table's earlier records.
    fn inferred_codec(
        &mut self,
        table: &TableId,
        rows: &[&Row<'_>],
        key: Option<&Key<'_>>,
    ) -> Result<Arc<TableCodec>, DecodeErrorKind> {
        let names = key_names(key);
        let previous = self.inferred_tables.get(table);
        match infer::infer(table, previous, rows, &names)? {
            infer::Shape::Same(previous) => Ok(Arc::clone(&previous.codec)),
            infer::Shape::New(inferred) => {
                let codec = Arc::clone(&inferred.codec);
                self.inferred_tables.insert(table.clone(), inferred);
                Ok(codec)
            }
        }
    }

    fn topic_mut(&mut self, topic: &str) -> &mut TopicState {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_owned(), TopicState::default());
        }
        self.topics
            .get_mut(topic)
            .expect("the topic's state was just inserted")
    }

    /// A tombstone (null value): nothing when it directly follows the
    /// delete of its key, else the delete of its key.
    fn tombstone(&mut self, record: &Record<'_>) -> Result<Option<Change>, DecodeErrorKind> {
        let Some(key_bytes) = record.key else {
            return Err(DecodeErrorKind::Empty);
        };
        let topic = self.topic_mut(record.topic);
        let partition = topic.partitions.entry(record.partition).or_default();
        if partition.follows_its_delete(key_bytes) {
            skipped(record, "the tombstone of the delete before it");
            return Ok(None);
        }
        let lone_version = partition.lone_tombstone_version();
        let Some(last) = &topic.last else {
            skipped(
                record,
                "a tombstone of a topic whose table no earlier record named",
            );
            return Ok(None);
        };
        let codec = Arc::clone(last.codec());
        let key = envelope::parse_key(key_bytes)?;
        let before = key_row(&codec, &key)?;
        let version = record
            .header(COURIER_LSN_HEADER)
            .and_then(version::header_number)
            .map_or(lone_version, Lsn);
        let xid = record
            .header(COURIER_TXID_HEADER)
            .and_then(version::header_number)
            .unwrap_or(0) as u32;
        let time = record.timestamp_ms.unwrap_or(0).saturating_mul(1000);
        let change = Change::new(
            Arc::clone(&codec.relation),
            Op::Delete,
            Some(before),
            None,
            version,
            xid,
            time,
        )
        .map_err(|e| DecodeErrorKind::NotAnEnvelope {
            reason: e.to_string(),
        })?;
        self.topic_mut(record.topic)
            .partitions
            .entry(record.partition)
            .or_default()
            .decoded(Op::Delete, None, version);
        Ok(Some(change))
    }
}

/// The op of a change event; `None` for Debezium's logical decoding
/// messages (`m`).
fn op_of(op: &str) -> Result<Option<Op>, DecodeErrorKind> {
    Ok(Some(match op {
        "r" => Op::Read,
        "c" => Op::Insert,
        "u" => Op::Update,
        "d" => Op::Delete,
        "t" => Op::Truncate,
        "m" => return Ok(None),
        other => {
            return Err(DecodeErrorKind::UnknownOp {
                op: other.chars().take(16).collect(),
            })
        }
    }))
}

/// A change's version, transaction id and commit time (microseconds);
/// `Err` names what is missing for the version.
fn stamp(
    producer: Producer,
    op: Op,
    source: &Source<'_>,
    record: &Record<'_>,
) -> Result<(Lsn, u32, i64), &'static str> {
    let version = version::of_change(producer, op, source, record.header(COURIER_LSN_HEADER))?;
    let xid = match (producer, op) {
        (_, Op::Read) => 0,
        (Producer::Courier, _) => record
            .header(COURIER_TXID_HEADER)
            .and_then(version::header_number)
            .or(source.tx_id)
            .unwrap_or(0) as u32,
        // Debezium's txId is PostgreSQL's 64-bit transaction id (epoch and
        // xid): the xid is its low half.
        (Producer::Debezium, _) => source.tx_id.unwrap_or(0) as u32,
    };
    let commit_time_us = source
        .ts_us
        .or_else(|| source.ts_ms.map(|ms| ms.saturating_mul(1000)))
        .or_else(|| record.timestamp_ms.map(|ms| ms.saturating_mul(1000)))
        .unwrap_or(0);
    Ok((version, xid, commit_time_us))
}

/// The key's field names, in order.
fn key_names<'k>(key: Option<&'k Key<'_>>) -> Vec<&'k str> {
    key.map(|k| k.fields.0.iter().map(|(n, _)| n.as_ref()).collect())
        .unwrap_or_default()
}

/// A row's values in column order; a column the row does not name is null.
fn decode_row(
    codec: &TableCodec,
    row: &Row<'_>,
    check_toast: bool,
) -> Result<Vec<Value>, DecodeErrorKind> {
    let relation = &codec.relation;
    let mut values = vec![Value::Null; relation.columns.len()];
    for (i, (name, raw)) in row.0.iter().enumerate() {
        let index = match relation.columns.get(i) {
            Some(c) if c.name == *name => i,
            _ => relation
                .column_index(name)
                .ok_or_else(|| DecodeErrorKind::BadValue {
                    table: relation.id.clone(),
                    column: name.to_string(),
                    reason: "the row has this field but its schema has no such column".into(),
                })?,
        };
        let codec = &codec.codecs[index];
        if check_toast && codec.is_placeholder(raw) {
            return Err(DecodeErrorKind::ToastPlaceholder {
                table: relation.id.clone(),
                column: name.to_string(),
            });
        }
        values[index] = codec
            .decode(raw)
            .map_err(|reason| DecodeErrorKind::BadValue {
                table: relation.id.clone(),
                column: name.to_string(),
                reason,
            })?;
    }
    Ok(values)
}

/// A row holding only the key's values (other columns null), as Courier's
/// capture gives a delete with the default replica identity.
fn key_row(codec: &TableCodec, key: &Key<'_>) -> Result<Vec<Value>, DecodeErrorKind> {
    let relation = &codec.relation;
    let bad = |reason: String| DecodeErrorKind::BadKey {
        table: relation.id.clone(),
        reason,
    };
    let mut values = vec![Value::Null; relation.columns.len()];
    for (name, raw) in &key.fields.0 {
        let index = relation
            .column_index(name)
            .filter(|i| relation.columns[*i].is_key)
            .ok_or_else(|| {
                bad(format!(
                    "field {name} is not a key column of the table's records before it"
                ))
            })?;
        values[index] = codec.codecs[index]
            .decode(raw)
            .map_err(|reason| bad(format!("field {name}: {reason}")))?;
    }
    if relation.key_indexes().any(|i| values[i].is_null()) {
        return Err(bad(
            "it lacks a key column of the table's records before it".into(),
        ));
    }
    Ok(values)
}

fn skipped(record: &Record<'_>, what: &str) {
    tracing::debug!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        "record carries no change: {what}"
    );
}
