//! The Debezium-compatible JSON change envelope, one change per line.
//!
//! Used by the `stdout` and `file` sinks, and as the Kafka sink's record value. Field meanings
//! are in the README ("Change envelope"): `source.lsn` is the change's
//! version (its transaction's commit LSN), `op` is `r`/`c`/`u`/`d`/`t`.

use std::time::{SystemTime, UNIX_EPOCH};

use courier_core::{write_json_string, Batch, Change, Op, SinkError, Value};

use crate::outbox::{self, Event, Routers};
use crate::selection::TableSelection;

/// Where the changes come from, stamped into every envelope's `source`.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// The logical name of the source (Courier uses the slot name).
    pub name: String,
    /// The PostgreSQL database.
    pub database: String,
}

/// Encodes changes as envelope lines.
#[derive(Clone, Debug)]
pub struct EnvelopeEncoder {
    /// `,"source":{"version":..,"connector":"postgresql","name":..,"db":..,` precomputed.
    source_prefix: Vec<u8>,
}

impl EnvelopeEncoder {
    pub fn new(source: &SourceInfo) -> Self {
        let mut p = Vec::new();
        p.extend_from_slice(b",\"source\":{\"version\":");
        write_json_string(&mut p, concat!("courier-", env!("CARGO_PKG_VERSION")));
        p.extend_from_slice(b",\"connector\":\"postgresql\",\"name\":");
        write_json_string(&mut p, &source.name);
        p.extend_from_slice(b",\"db\":");
        write_json_string(&mut p, &source.database);
        EnvelopeEncoder { source_prefix: p }
    }

    /// Appends the change's envelope and a newline to `out`. `now_ms` is the
    /// envelope's own `ts_ms` (when Courier processed it).
    pub fn encode_line(&self, change: &Change, now_ms: i64, out: &mut Vec<u8>) {
        self.encode(change, now_ms, out);
        out.push(b'\n');
    }

    /// Appends the change's envelope, one JSON object, to `out` (a Kafka
    /// record's value). `now_ms` is the envelope's own `ts_ms`.
    pub fn encode(&self, change: &Change, now_ms: i64, out: &mut Vec<u8>) {
        self.encode_in_transaction(change, now_ms, None, out);
    }

    /// As [`EnvelopeEncoder::encode`], with a `transaction` field holding
    /// `transaction` (a block's JSON) when given.
    pub fn encode_in_transaction(
        &self,
        change: &Change,
        now_ms: i64,
        transaction: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"{\"before\":");
        write_row(change, change.before(), out);
        out.extend_from_slice(b",\"after\":");
        write_row(change, change.after(), out);
        out.extend_from_slice(&self.source_prefix);
        out.extend_from_slice(b",\"schema\":");
        write_json_string(out, &change.relation().id.schema);
        out.extend_from_slice(b",\"table\":");
        write_json_string(out, &change.relation().id.name);
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b",\"lsn\":");
        out.extend_from_slice(num.format(change.version().as_u64()).as_bytes());
        out.extend_from_slice(b",\"txId\":");
        out.extend_from_slice(num.format(change.xid()).as_bytes());
        out.extend_from_slice(b",\"ts_ms\":");
        out.extend_from_slice(
            num.format(change.commit_time_us().div_euclid(1000))
                .as_bytes(),
        );
        out.extend_from_slice(b",\"ts_us\":");
        out.extend_from_slice(num.format(change.commit_time_us()).as_bytes());
        out.extend_from_slice(if change.op() == Op::Read {
            b",\"snapshot\":\"true\"},\"op\":\""
        } else {
            b",\"snapshot\":\"false\"},\"op\":\""
        });
        out.extend_from_slice(change.op().code().as_bytes());
        out.extend_from_slice(b"\",\"ts_ms\":");
        out.extend_from_slice(num.format(now_ms).as_bytes());
        if let Some(block) = transaction {
            out.extend_from_slice(b",\"transaction\":");
            out.extend_from_slice(block);
        }
        out.push(b'}');
    }
}

/// A sink's envelope lines for a batch: the changes of its selected tables,
/// and the events of its outbox routers, encoded into a reused buffer.
pub struct EnvelopeLines {
    encoder: EnvelopeEncoder,
    selection: TableSelection,
    outbox: Routers,
    events: Vec<(usize, Event)>,
    buf: Vec<u8>,
}

impl EnvelopeLines {
    pub fn new(source: &SourceInfo, selection: TableSelection) -> Self {
        EnvelopeLines {
            encoder: EnvelopeEncoder::new(source),
            selection,
            outbox: Routers::default(),
            events: Vec::new(),
            buf: Vec::with_capacity(1 << 20),
        }
    }

    /// The lines also hold the events of these routers, one line each (see
    /// [`crate::outbox`]).
    pub fn with_outbox(mut self, routers: Routers) -> Self {
        self.outbox = routers;
        self
    }

    /// The lines of the batch's selected changes and events (empty when
    /// none), or the error of an outbox event that cannot be routed.
    pub fn encode(&mut self, batch: &Batch) -> Result<&[u8], SinkError> {
        self.buf.clear();
        self.outbox.discard();
        let now = now_ms();
        for c in &batch.changes {
            if c.outbox().is_some() {
                self.events.clear();
                self.outbox.route(c, &mut self.events)?;
                for (router, event) in &self.events {
                    outbox::write_line(self.outbox.name(*router), c, event, &mut self.buf);
                }
            } else if self.selection.selects(c) {
                self.encoder.encode_line(c, now, &mut self.buf);
            }
        }
        Ok(&self.buf)
    }

    /// The lines of the last [`EnvelopeLines::encode`] are written: counts
    /// their events.
    pub fn written(&mut self) {
        self.outbox.applied();
    }
}

fn write_row(change: &Change, row: Option<&[Value]>, out: &mut Vec<u8>) {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'{');
    for (i, (col, v)) in change.relation().columns.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(out, &col.name);
        out.push(b':');
        v.write_json(out);
    }
    out.push(b'}');
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use courier_core::{Column, Lsn, PgType, Relation, TableId, Value};

    use super::*;

    #[test]
    fn encodes_a_debezium_envelope() {
        let col = |name: &str, t: PgType, key: bool| Column {
            name: name.into(),
            type_oid: 0,
            type_modifier: -1,
            type_name: String::new(),
            pg_type: t,
            nullable: !key,
            is_key: key,
        };
        let rel = Arc::new(Relation {
            oid: 1,
            id: TableId::new("public", "products"),
            columns: vec![
                col("id", PgType::Int8, true),
                col("name", PgType::Text, false),
            ],
        });
        let change = Change::new(
            rel,
            Op::Insert,
            None,
            Some(vec![Value::Int(1), Value::Text("Tea".into())]),
            Lsn(23655712),
            771,
            1_764_400_000_000_123,
        )
        .unwrap();
        let enc = EnvelopeEncoder::new(&SourceInfo {
            name: "courier".into(),
            database: "shop".into(),
        });
        let mut out = Vec::new();
        enc.encode_line(&change, 1_764_400_000_012, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["before"], serde_json::Value::Null);
        assert_eq!(v["after"], serde_json::json!({"id": 1, "name": "Tea"}));
        assert_eq!(v["op"], "c");
        assert_eq!(v["ts_ms"], 1_764_400_000_012i64);
        let s = &v["source"];
        assert_eq!(s["connector"], "postgresql");
        assert_eq!(s["name"], "courier");
        assert_eq!(s["db"], "shop");
        assert_eq!(s["schema"], "public");
        assert_eq!(s["table"], "products");
        assert_eq!(s["lsn"], 23655712);
        assert_eq!(s["txId"], 771);
        assert_eq!(s["ts_ms"], 1_764_400_000_000i64);
        assert_eq!(s["snapshot"], "false");
    }
}
