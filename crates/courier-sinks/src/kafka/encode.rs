//! A change → the Kafka records Debezium would write for it: key, value,
//! headers and topic, in either format.

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::{Change, Lsn, Op, Relation, SinkError, SinkErrorKind, TableId, Value};

use super::config::{DecimalHandling, Format, Settings, TopicTemplate};
use super::schema::TableSchemas;
use super::transactions::{in_transaction, Open, Transactions};
use crate::envelope::{EnvelopeEncoder, SourceInfo};

/// Header with the change's version (its transaction's commit LSN) as a
/// decimal u64, like `source.lsn`.
pub const LSN_HEADER: &str = "courier.lsn";
/// Header with the change's transaction id, decimal (0 for snapshot reads).
pub const TXID_HEADER: &str = "courier.txid";
/// Header on the delete of a primary-key change: the row's new key, as
/// Debezium's `__debezium.newkey`.
pub const NEW_KEY_HEADER: &str = "__debezium.newkey";
/// Header on the create of a primary-key change: the row's old key, as
/// Debezium's `__debezium.oldkey`.
pub const OLD_KEY_HEADER: &str = "__debezium.oldkey";

/// One record of a change. The encoder reuses these buffers: a record
/// lives until the next call to [`Encoder::encode`].
#[derive(Default)]
pub(crate) struct Record {
    pub topic: Arc<str>,
    /// `None` for truncates and tables without key columns.
    pub key: Option<Vec<u8>>,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The record's timestamp: the commit time in milliseconds.
    pub timestamp_ms: i64,
    pub version: Lsn,
    pub xid: u32,
    /// The header naming a primary-key change's other key, and that key.
    pub other_key: Option<(&'static str, Vec<u8>)>,
    /// An outbox event's headers (`id` and the additional ones; `None` is
    /// a null header value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// An outbox event's partition, when a column chose it.
    pub partition: Option<i32>,
}

/// Turns changes into records; keeps each table's topic and schemas.
pub(crate) struct Encoder {
    format: Format,
    decimal: DecimalHandling,
    tombstones: bool,
    prefix: String,
    topics: TopicTemplate,
    source: SourceInfo,
    envelope: EnvelopeEncoder,
    tables: HashMap<TableId, Table>,
    key: Vec<u8>,
    other_key: Vec<u8>,
    /// With transaction metadata: its topic, and the open transaction.
    transactions: Option<(Arc<str>, Transactions)>,
    /// With exactly once: every transaction below this version was
    /// committed to Kafka, its END record too, before the sink started.
    ended_before: Option<Lsn>,
    /// The `transaction` block of the record being written.
    block: Vec<u8>,
    /// The records of the last change: `records[..len]`.
    records: Vec<Record>,
    len: usize,
}

struct Table {
    relation: Arc<Relation>,
    topic: Arc<str>,
    schemas: Option<TableSchemas>,
}

impl Encoder {
    pub fn new(settings: &Settings, source: &SourceInfo) -> Self {
        Encoder {
            format: settings.format,
            decimal: settings.decimal_handling,
            tombstones: settings.tombstones,
            prefix: settings.prefix.clone(),
            topics: settings.topic.clone(),
            source: source.clone(),
            envelope: EnvelopeEncoder::new(source),
            tables: HashMap::new(),
            key: Vec::new(),
            other_key: Vec::new(),
            transactions: settings
                .transaction_topic
                .as_deref()
                .map(|t| (Arc::from(t), Transactions::default())),
            block: Vec::new(),
            ended_before: None,
            records: Vec::new(),
            len: 0,
        }
    }

    /// Leaves out the END records of transactions below `through`: a
    /// committed Kafka transaction holds them already (exactly once, after
    /// a restart).
    pub fn ended_before(mut self, through: Option<Lsn>) -> Self {
        self.ended_before = through;
        self
    }

    fn already_ended(&self, version: Lsn) -> bool {
        self.ended_before.is_some_and(|t| version < t)
    }

    /// The transaction metadata state, to put back with
    /// [`Encoder::restore_transactions`] when a group fails.
    pub fn transactions(&self) -> Option<Transactions> {
        self.transactions.as_ref().map(|(_, t)| t.clone())
    }

    pub fn restore_transactions(&mut self, saved: Option<Transactions>) {
        if let (Some((_, t)), Some(saved)) = (&mut self.transactions, saved) {
            *t = saved;
        }
    }

    /// Counts the change records of `change` into its transaction without
    /// writing them: they are in a committed Kafka transaction already
    /// (exactly once, after a restart), and so is the BEGIN before them.
    pub fn count_committed(&mut self, change: &Change) {
        let Some((_, txns)) = &mut self.transactions else {
            return;
        };
        if !in_transaction(change) {
            return;
        }
        let records = if key_change(change).is_some() { 2 } else { 1 };
        for _ in 0..records {
            txns.record(change);
        }
    }

    /// The END record of the open transaction when a stream complete
    /// through `through` holds all of it (none when it was written before
    /// the sink started).
    pub fn end_through(&mut self, through: Lsn) -> Option<&Record> {
        self.len = 0;
        let (topic, txns) = self.transactions.as_mut()?;
        let ended = txns.end_through(through)?;
        let topic = Arc::clone(topic);
        if self.already_ended(ended.version) {
            return None;
        }
        self.marker(topic, &ended, true);
        Some(&self.records[0])
    }

    /// Counts a change record into its transaction and fills `block`; an
    /// END of the transaction before it and a BEGIN go first. `false`
    /// without transaction metadata and for snapshot reads.
    fn transaction_step(&mut self, change: &Change) -> bool {
        let Some((topic, txns)) = &mut self.transactions else {
            return false;
        };
        if !in_transaction(change) {
            return false;
        }
        let topic = Arc::clone(topic);
        let step = txns.record(change);
        step.open.block(step.table_order, &mut self.block);
        let (ended, begun) = (step.ended, step.begins.then(|| step.open.clone()));
        if let Some(ended) = ended.filter(|e| !self.already_ended(e.version)) {
            self.marker(Arc::clone(&topic), &ended, true);
        }
        if let Some(open) = begun {
            self.marker(topic, &open, false);
        }
        true
    }

    /// A BEGIN (or with `end`, an END) record of `txn` in the next slot.
    fn marker(&mut self, topic: Arc<str>, txn: &Open, end: bool) {
        let format = self.format;
        if self.len == self.records.len() {
            self.records.push(Record::default());
        }
        let r = &mut self.records[self.len];
        self.len += 1;
        let mut key = r.key.take().unwrap_or_default();
        let mut value = r.value.take().unwrap_or_default();
        txn.key(format, &mut key);
        txn.value(end, format, &mut value);
        *r = Record {
            topic,
            key: Some(key),
            value: Some(value),
            timestamp_ms: txn.commit_us.div_euclid(1000),
            version: txn.version,
            xid: txn.xid,
            other_key: None,
            headers: std::mem::take(&mut r.headers),
            partition: None,
        };
        r.headers.clear();
    }

    /// The topic of `table`.
    pub fn topic_of(&self, table: &TableId) -> String {
        self.topics.render(&table.schema, &table.name)
    }

    /// The records of `change`, in order: one record; a delete and its
    /// tombstone; or, for a primary-key change, the delete of the old key,
    /// its tombstone and the create of the new key (as Debezium emits it).
    pub fn encode(&mut self, change: &Change, now_ms: i64) -> Result<&[Record], SinkError> {
        self.len = 0;
        self.table(change.relation());
        if let Some((old, new)) = key_change(change) {
            self.pk_change(change, old, new, now_ms)?;
        } else {
            self.one(change, now_ms, None)?;
            if change.op() == Op::Delete {
                self.tombstone(change);
            }
        }
        Ok(&self.records[..self.len])
    }

    fn pk_change(
        &mut self,
        change: &Change,
        old: &[Value],
        new: &[Value],
        now_ms: i64,
    ) -> Result<(), SinkError> {
        let rebuilt = |op, before: Option<&[Value]>, after: Option<&[Value]>| {
            Change::new(
                Arc::clone(change.relation()),
                op,
                before.map(<[Value]>::to_vec),
                after.map(<[Value]>::to_vec),
                change.version(),
                change.xid(),
                change.commit_time_us(),
            )
            .map_err(|e| SinkError::new(SinkErrorKind::Schema, e.to_string()))
        };
        let delete = rebuilt(Op::Delete, Some(old), None)?;
        let create = rebuilt(Op::Insert, None, Some(new))?;
        self.write_key(&create, new, true)?;
        self.one(&delete, now_ms, Some(NEW_KEY_HEADER))?;
        self.tombstone(&delete);
        self.write_key(&delete, old, true)?;
        self.one(&create, now_ms, Some(OLD_KEY_HEADER))
    }

    /// The next record slot, cleared.
    fn slot(&mut self, change: &Change) -> &mut Record {
        if self.len == self.records.len() {
            self.records.push(Record::default());
        }
        let topic = Arc::clone(&self.tables[&change.relation().id].topic);
        let r = &mut self.records[self.len];
        self.len += 1;
        r.topic = topic;
        r.timestamp_ms = change.commit_time_us().div_euclid(1000);
        r.version = change.version();
        r.xid = change.xid();
        r.other_key = None;
        r
    }

    /// The change's own record; with `other`, the header `other` carries
    /// the key already written to `other_key`.
    fn one(
        &mut self,
        change: &Change,
        now_ms: i64,
        other: Option<&'static str>,
    ) -> Result<(), SinkError> {
        let block = self
            .transaction_step(change)
            .then(|| std::mem::take(&mut self.block));
        // Debezium's truncate events have no key.
        let keyed = change.op() != Op::Truncate && keyed(change);
        if let Some(row) = change.key_row().filter(|_| keyed) {
            self.write_key(change, row, false)?;
        }
        let mut value = self.slot(change).value.take().unwrap_or_default();
        value.clear();
        match self.format {
            Format::Json => {
                self.envelope
                    .encode_in_transaction(change, now_ms, block.as_deref(), &mut value)
            }
            Format::JsonSchema => schemas_of(
                &mut self.tables,
                &change.relation().id,
                &self.prefix,
                self.decimal,
            )
            .write_value(
                change,
                &self.source,
                now_ms,
                self.decimal,
                block.as_deref(),
                &mut value,
            )
            .map_err(|e| unrepresentable(change, e.0))?,
        }
        if let Some(block) = block {
            self.block = block;
        }
        let key = keyed.then(|| self.key.clone());
        let other_key = other.map(|h| (h, self.other_key.clone()));
        let r = &mut self.records[self.len - 1];
        r.value = Some(value);
        r.key = key;
        r.other_key = other_key;
        Ok(())
    }

    /// A null-value record under the key `one` wrote last.
    fn tombstone(&mut self, change: &Change) {
        if !self.tombstones || !keyed(change) {
            return;
        }
        let key = self.key.clone();
        let r = self.slot(change);
        r.key = Some(key);
        r.value = None;
    }

    /// Writes the key of `row` to `key`, or to `other_key` when `other`.
    fn write_key(&mut self, change: &Change, row: &[Value], other: bool) -> Result<(), SinkError> {
        let mut out = std::mem::take(if other {
            &mut self.other_key
        } else {
            &mut self.key
        });
        out.clear();
        let written = match self.format {
            Format::Json => {
                let rel = change.relation();
                out.push(b'{');
                for (n, i) in rel.key_indexes().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    courier_core::write_json_string(&mut out, &rel.columns[i].name);
                    out.push(b':');
                    row[i].write_json(&mut out);
                }
                out.push(b'}');
                Ok(())
            }
            // A primary-key change's header holds the other key without its
            // schema, as Debezium's key struct reaches it through a Connect
            // worker's default header converter.
            Format::JsonSchema if other => {
                super::schema::write_key_payload(change, row, self.decimal, &mut out)
            }
            Format::JsonSchema => schemas_of(
                &mut self.tables,
                &change.relation().id,
                &self.prefix,
                self.decimal,
            )
            .write_key(change, row, self.decimal, &mut out),
        };
        *(if other {
            &mut self.other_key
        } else {
            &mut self.key
        }) = out;
        written.map_err(|e| unrepresentable(change, e.0))
    }

    /// Registers the relation (again, when the table's shape changed).
    fn table(&mut self, relation: &Arc<Relation>) {
        let current = self
            .tables
            .get(&relation.id)
            .is_some_and(|t| Arc::ptr_eq(&t.relation, relation) || *t.relation == **relation);
        if !current {
            let topic = self.topic_of(&relation.id).into();
            self.tables.insert(
                relation.id.clone(),
                Table {
                    relation: Arc::clone(relation),
                    topic,
                    schemas: None,
                },
            );
        }
    }
}

/// The schemas of `table` (registered by [`Encoder::encode`] before any of
/// its records is written).
fn schemas_of<'a>(
    tables: &'a mut HashMap<TableId, Table>,
    table: &TableId,
    prefix: &str,
    decimal: DecimalHandling,
) -> &'a TableSchemas {
    let t = tables
        .get_mut(table)
        .expect("encode registers a table before writing its records");
    t.schemas
        .get_or_insert_with(|| TableSchemas::new(&t.relation, prefix, decimal))
}

/// Whether the table has key columns (a table without them gets null keys,
/// as Debezium gives them, and no tombstones).
fn keyed(change: &Change) -> bool {
    change.relation().key_indexes().next().is_some()
}

/// `(old row, new row)` when an update changed the row's key.
fn key_change(change: &Change) -> Option<(&[Value], &[Value])> {
    if change.op() != Op::Update {
        return None;
    }
    let (before, after) = (change.before()?, change.after()?);
    let rel = change.relation();
    let mut keys = rel.key_indexes().peekable();
    keys.peek()?;
    // Without the old key (replica identity without it), nothing to compare.
    let mut changed = false;
    for i in keys {
        if before[i].is_null() {
            return None;
        }
        changed |= before[i] != after[i];
    }
    changed.then_some((before, after))
}

fn unrepresentable(change: &Change, reason: String) -> SinkError {
    SinkError::new(
        SinkErrorKind::Schema,
        format!(
            "kafka: cannot encode a change of {}: {reason}",
            change.relation().id
        ),
    )
    .with_table(&change.relation().id)
    .with_lsn(change.version())
}

#[cfg(test)]
mod tests {
    use courier_core::{Column, PgType};
    use serde_json::json;

    use super::*;
    use crate::kafka::KafkaSinkConfig;

    fn encoder() -> Encoder {
        let config: KafkaSinkConfig =
            toml::from_str("brokers = \"h:1\"\ntopic_prefix = \"p\"\nformat = \"json-schema\"")
                .unwrap();
        let source = SourceInfo {
            name: "courier".into(),
            database: "shop".into(),
        };
        Encoder::new(&config.validate("bus", &source).unwrap(), &source)
    }

    /// `public.lines (id bigint PRIMARY KEY, <one NOT NULL column per type
    /// family>, note text)`.
    fn lines() -> Arc<Relation> {
        let col = |name: &str, pg_type: PgType, nullable: bool| Column {
            name: name.to_string(),
            type_oid: 0,
            type_modifier: -1,
            type_name: name.to_string(),
            pg_type,
            nullable,
            is_key: name == "id",
        };
        let numeric = |precision| PgType::Numeric {
            precision,
            scale: precision.map(|_| 2),
        };
        Arc::new(Relation {
            oid: 1,
            id: TableId::new("public", "lines"),
            columns: vec![
                col("id", PgType::Int8, false),
                col("qty", PgType::Int4, false),
                col("ok", PgType::Bool, false),
                col("price", numeric(Some(12)), false),
                col("ratio", numeric(None), false),
                col("label", PgType::Text, false),
                col("at", PgType::TimestampTz, false),
                col("doc", PgType::Jsonb, false),
                col("tags", PgType::Array(Box::new(PgType::Text)), false),
                col("note", PgType::Text, true),
            ],
        })
    }

    fn value_of(record: &Record) -> serde_json::Value {
        serde_json::from_slice(record.value.as_deref().unwrap()).unwrap()
    }

    /// A delete with the default replica identity carries the key only; the
    /// `before` struct's required fields still get values (Debezium's
    /// fallbacks), since JsonConverter refuses a null in a required field.
    #[test]
    fn a_key_only_before_fills_required_fields_as_debezium_does() {
        let rel = lines();
        let mut before = vec![Value::Null; rel.columns.len()];
        before[0] = Value::Int(7);
        let delete = Change::new(
            Arc::clone(&rel),
            Op::Delete,
            Some(before),
            None,
            Lsn(9),
            700,
            0,
        )
        .unwrap();
        let mut enc = encoder();
        let records = enc.encode(&delete, 0).unwrap();
        let value = value_of(&records[0]);
        assert_eq!(
            value["payload"]["before"],
            json!({"id": 7, "qty": 0, "ok": false, "price": "AA==",
                   "ratio": {"scale": 0, "value": "AA=="}, "label": "",
                   "at": "1970-01-01T00:00:00Z", "doc": "{}", "tags": [], "note": null})
        );
        let fields = value["schema"]["fields"][0]["fields"].as_array().unwrap();
        for f in fields {
            let name = f["field"].as_str().unwrap();
            if f["optional"] == false {
                assert!(
                    !value["payload"]["before"][name].is_null(),
                    "required field {name} is null"
                );
            }
        }
    }

    /// The headers of a primary-key change hold the other key's payload
    /// alone, `{"id":7}`, as a Connect worker writes Debezium's key struct
    /// with its default `SimpleHeaderConverter` (a schema-and-payload
    /// document there breaks Debezium's JDBC sink, which reads headers back
    /// through that converter).
    #[test]
    fn primary_key_change_headers_hold_the_plain_key() {
        let rel = lines();
        let row = |id: i64| {
            let mut r = vec![Value::Null; rel.columns.len()];
            r[0] = Value::Int(id);
            r[1] = Value::Int(1);
            r
        };
        let update = Change::new(
            Arc::clone(&rel),
            Op::Update,
            Some(row(7)),
            Some(row(8)),
            Lsn(9),
            700,
            0,
        )
        .unwrap();
        let mut enc = encoder();
        let records = enc.encode(&update, 0).unwrap();
        assert_eq!(records.len(), 3, "delete, tombstone, create");
        let header = |r: &Record| {
            let (name, key) = r.other_key.as_ref().unwrap();
            (*name, String::from_utf8(key.clone()).unwrap())
        };
        assert_eq!(header(&records[0]), (NEW_KEY_HEADER, "{\"id\":8}".into()));
        assert_eq!(header(&records[2]), (OLD_KEY_HEADER, "{\"id\":7}".into()));
        let key: serde_json::Value =
            serde_json::from_slice(records[2].key.as_deref().unwrap()).unwrap();
        assert_eq!(
            key["payload"],
            json!({"id": 8}),
            "the record key keeps its schema"
        );
        assert_eq!(key["schema"]["name"], "p.public.lines.Key");
    }
}
