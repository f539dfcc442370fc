//! The decoder on hand-written records shaped as Debezium's PostgreSQL
//! connector and Courier's Kafka sink write them (the records of the real
//! connector are decoded in `tests/`).

use std::sync::Arc;

use courier_core::{Change, Lsn, Op, PgType, TableId, Value};
use serde_json::{json, Value as Json};

use super::*;

const TOPIC: &str = "p.public.t";

/// The `fields` of `public.t`'s row struct: `id` (the key), `name`, `price`.
fn fields() -> Json {
    json!([
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "string", "optional": true, "field": "name"},
        {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
         "version": 1, "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "field": "price"},
    ])
}

fn envelope_schema(fields: &Json) -> Json {
    let row = |f: &str| {
        json!({"type": "struct", "fields": fields, "optional": true,
               "name": "p.public.t.Value", "field": f})
    };
    json!({
        "type": "struct",
        "fields": [
            row("before"), row("after"),
            {"type": "struct", "fields": [
                {"type": "string", "optional": false, "field": "version"},
                {"type": "string", "optional": true, "field": "sequence"},
                {"type": "int64", "optional": true, "field": "lsn"}],
             "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source"},
            {"type": "string", "optional": false, "field": "op"},
            {"type": "int64", "optional": true, "field": "ts_ms"},
        ],
        "optional": false,
        "name": "p.public.t.Envelope",
        "version": 2
    })
}

fn key_schema() -> Json {
    json!({"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "id"}],
           "optional": false, "name": "p.public.t.Key"})
}

/// A Debezium source block; `last_commit` is `sequence`'s first element.
fn debezium_source(lsn: u64, last_commit: Option<u64>) -> Json {
    let seq = json!([last_commit.map(|l| l.to_string()), lsn.to_string()]).to_string();
    json!({"version": "3.6.1.Final", "connector": "postgresql", "name": "p", "ts_ms": 1_700_000_000_000i64,
           "ts_us": 1_700_000_000_000_123i64, "snapshot": "false", "db": "shop", "sequence": seq,
           "schema": "public", "table": "t", "txId": 771, "lsn": lsn, "xmin": null})
}

fn with_schema(schema: &Json, payload: Json) -> Vec<u8> {
    json!({"schema": schema, "payload": payload})
        .to_string()
        .into_bytes()
}

fn event(op: &str, before: Json, after: Json, source: Json) -> Json {
    json!({"before": before, "after": after, "source": source, "op": op, "ts_ms": 1})
}

fn key(id: i64) -> Vec<u8> {
    with_schema(&key_schema(), json!({"id": id}))
}

struct Rec {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
}

fn rec(offset: i64, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Rec {
    Rec {
        offset,
        key,
        value,
        headers: Vec::new(),
    }
}

fn decode(d: &mut Decoder, r: &Rec) -> Result<Option<Change>, DecodeError> {
    decode_on(d, TOPIC, 0, r)
}

fn decode_on(
    d: &mut Decoder,
    topic: &str,
    partition: i32,
    r: &Rec,
) -> Result<Option<Change>, DecodeError> {
    let headers: Vec<(&str, Option<&[u8]>)> = r
        .headers
        .iter()
        .map(|(n, v)| (*n, Some(v.as_slice())))
        .collect();
    d.decode(&Record {
        topic,
        partition,
        offset: r.offset,
        timestamp_ms: Some(1_700_000_000_999),
        key: r.key.as_deref(),
        value: r.value.as_deref(),
        headers: &headers,
    })
}

fn change(d: &mut Decoder, r: &Rec) -> Change {
    decode(d, r)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a change")
}

fn insert(id: i64, name: &str, lsn: u64, last_commit: Option<u64>) -> Rec {
    let after = json!({"id": id, "name": name, "price": "A+c="});
    rec(
        lsn as i64,
        Some(key(id)),
        Some(with_schema(
            &envelope_schema(&fields()),
            event("c", Json::Null, after, debezium_source(lsn, last_commit)),
        )),
    )
}

#[test]
fn decodes_a_debezium_change_with_schemas() {
    let mut d = Decoder::new(Format::Auto);
    let c = change(&mut d, &insert(1, "Tea", 100, Some(90)));
    assert_eq!(c.op(), Op::Insert);
    assert_eq!(
        c.after().unwrap(),
        [
            Value::Int(1),
            Value::Text("Tea".into()),
            Value::Numeric("9.99".into())
        ]
    );
    assert_eq!(c.version(), Lsn(90), "the last commit before the change");
    assert_eq!(c.xid(), 771);
    assert_eq!(c.commit_time_us(), 1_700_000_000_000_123);
    let rel = c.relation();
    assert_eq!(rel.id, TableId::new("public", "t"));
    let names: Vec<_> = rel.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "name", "price"]);
    assert!(rel.columns[0].is_key && !rel.columns[0].nullable);
    assert!(!rel.columns[1].is_key && rel.columns[1].nullable);
    assert_eq!(
        rel.columns[2].pg_type,
        PgType::Numeric {
            precision: Some(10),
            scale: Some(2)
        }
    );
    // The same schemas: the same relation.
    let again = change(&mut d, &insert(2, "Milk", 110, Some(100)));
    assert!(Arc::ptr_eq(c.relation(), again.relation()));
}

#[test]
fn a_schema_change_is_a_new_relation() {
    let mut d = Decoder::new(Format::JsonSchema);
    let first = change(&mut d, &insert(1, "Tea", 100, Some(90)));
    let mut wider = fields();
    wider
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "boolean", "optional": true, "field": "ok"}));
    let after = json!({"id": 2, "name": "Milk", "price": null, "ok": true});
    let r = rec(
        2,
        Some(key(2)),
        Some(with_schema(
            &envelope_schema(&wider),
            event("c", Json::Null, after, debezium_source(120, Some(110))),
        )),
    );
    let second = change(&mut d, &r);
    assert!(!Arc::ptr_eq(first.relation(), second.relation()));
    assert_eq!(second.relation().columns.len(), 4);
    assert_eq!(second.after().unwrap()[3], Value::Bool(true));
    // A schema whose text differs but whose columns do not keeps the relation.
    let mut doc = envelope_schema(&wider);
    doc["doc"] = json!("another text, the same columns");
    let after = json!({"id": 3, "name": null, "price": null, "ok": false});
    let r = rec(
        3,
        Some(key(3)),
        Some(with_schema(
            &doc,
            event("c", Json::Null, after, debezium_source(130, Some(120))),
        )),
    );
    let third = change(&mut d, &r);
    assert!(Arc::ptr_eq(second.relation(), third.relation()));
}

#[test]
fn debezium_versions_follow_commit_order() {
    let mut d = Decoder::new(Format::Auto);
    // A snapshot read without a last commit ranks below every change.
    let snapshot = rec(
        0,
        Some(key(1)),
        Some(with_schema(
            &envelope_schema(&fields()),
            event(
                "r",
                Json::Null,
                json!({"id": 1, "name": "old", "price": null}),
                debezium_source(500, None),
            ),
        )),
    );
    let read = change(&mut d, &snapshot);
    assert_eq!(
        (read.op(), read.version(), read.xid()),
        (Op::Read, Lsn::ZERO, 0)
    );
    // The first transaction after the snapshot wrote the row before the
    // snapshot's position (400 < 500) and committed after it.
    let first = change(&mut d, &insert(1, "new", 400, None));
    assert_eq!(first.version(), Lsn(400));
    assert!(courier_core::version::incoming_wins(
        read.version(),
        first.version()
    ));
    // The next transaction carries the end of the first one's commit.
    let next = change(&mut d, &insert(1, "newer", 520, Some(510)));
    assert!(courier_core::version::incoming_wins(
        first.version(),
        next.version()
    ));
    assert!(!courier_core::version::incoming_wins(
        next.version(),
        first.version()
    ));
}

#[test]
fn tombstones_after_their_delete_carry_nothing_lone_ones_delete() {
    let mut d = Decoder::new(Format::Auto);
    change(&mut d, &insert(1, "Tea", 100, Some(90)));
    let before = json!({"id": 1, "name": null, "price": null});
    let delete = rec(
        1,
        Some(key(1)),
        Some(with_schema(
            &envelope_schema(&fields()),
            event("d", before, Json::Null, debezium_source(200, Some(190))),
        )),
    );
    let del = change(&mut d, &delete);
    assert_eq!(del.op(), Op::Delete);
    assert_eq!(del.key_values().unwrap(), [&Value::Int(1)]);
    assert_eq!(decode(&mut d, &rec(2, Some(key(1)), None)).unwrap(), None);
    // A tombstone whose delete is not the record before it: a delete of
    // its key, at the greatest version the partition has shown.
    let lone = change(&mut d, &rec(3, Some(key(7)), None));
    assert_eq!(lone.op(), Op::Delete);
    assert_eq!(lone.version(), Lsn(190));
    assert_eq!(
        lone.before().unwrap(),
        [Value::Int(7), Value::Null, Value::Null]
    );
    assert_eq!(lone.commit_time_us(), 1_700_000_000_999_000);
    // Courier's tombstones carry their version.
    let mut courier = rec(4, Some(key(8)), None);
    courier.headers = vec![
        ("courier.lsn", b"300".to_vec()),
        ("courier.txid", b"9".to_vec()),
    ];
    let c = change(&mut d, &courier);
    assert_eq!((c.version(), c.xid()), (Lsn(300), 9));
    // On another partition, a first lone tombstone has version zero.
    let other = decode_on(&mut d, TOPIC, 1, &rec(0, Some(key(9)), None))
        .unwrap()
        .unwrap();
    assert_eq!(other.version(), Lsn::ZERO);
    // A topic whose table no record named yet: nothing to delete from.
    assert_eq!(
        decode_on(&mut d, "p.public.other", 0, &rec(0, Some(key(1)), None)).unwrap(),
        None
    );
}

#[test]
fn a_primary_key_change_is_a_delete_and_a_create() {
    let mut d = Decoder::new(Format::Auto);
    let schema = envelope_schema(&fields());
    let mut delete = rec(
        10,
        Some(key(13)),
        Some(with_schema(
            &schema,
            event(
                "d",
                json!({"id": 13, "name": null, "price": null}),
                Json::Null,
                debezium_source(300, Some(290)),
            ),
        )),
    );
    delete.headers = vec![("__debezium.newkey", b"{\"id\":20}".to_vec())];
    let mut tombstone = rec(11, Some(key(13)), None);
    tombstone.headers = delete.headers.clone();
    let mut create = rec(
        12,
        Some(key(20)),
        Some(with_schema(
            &schema,
            event(
                "c",
                Json::Null,
                json!({"id": 20, "name": "x", "price": null}),
                debezium_source(300, Some(290)),
            ),
        )),
    );
    create.headers = vec![("__debezium.oldkey", b"{\"id\":13}".to_vec())];
    let d1 = change(&mut d, &delete);
    assert_eq!(decode(&mut d, &tombstone).unwrap(), None);
    let c1 = change(&mut d, &create);
    assert_eq!((d1.op(), c1.op()), (Op::Delete, Op::Insert));
    assert_eq!(d1.version(), c1.version());
    assert_eq!(c1.key_values().unwrap(), [&Value::Int(20)]);
}

#[test]
fn decodes_schemaless_records() {
    let mut d = Decoder::new(Format::Json);
    // Courier's `json`: values in Courier's type mapping, columns in the
    // order of the row's fields.
    let value = r#"{"before":null,
        "after":{"id":1,"f":1.5,"n":"12.50","j":{"a":[1,2]},"ia":[1,null],"ok":true,"nothing":null},
        "source":{"version":"courier-0.1.0","connector":"postgresql","name":"courier","db":"shop",
                  "schema":"public","table":"t","lsn":77,"txId":5,"ts_ms":1,"ts_us":1000,"snapshot":"false"},
        "op":"c","ts_ms":2}"#;
    let mut r = rec(
        0,
        Some(b"{\"id\":1}".to_vec()),
        Some(value.as_bytes().to_vec()),
    );
    r.headers = vec![
        ("courier.lsn", b"77".to_vec()),
        ("courier.txid", b"5".to_vec()),
    ];
    let c = change(&mut d, &r);
    assert_eq!(c.version(), Lsn(77));
    assert_eq!(
        c.after().unwrap(),
        [
            Value::Int(1),
            Value::Float8(1.5),
            Value::Text("12.50".into()),
            Value::Json("{\"a\":[1,2]}".into()),
            Value::Array(vec![Value::Int(1), Value::Null]),
            Value::Bool(true),
            Value::Null
        ]
    );
    let types: Vec<_> = c
        .relation()
        .columns
        .iter()
        .map(|c| c.pg_type.clone())
        .collect();
    assert_eq!(types[1], PgType::Float8);
    assert_eq!(types[3], PgType::Jsonb);
    assert!(c.relation().columns[0].is_key);
    // Schemas in a json source are an error naming the fix.
    let err = decode(&mut d, &insert(2, "x", 1, None)).unwrap_err();
    assert!(
        err.to_string().contains("source.format = \"json-schema\""),
        "{err}"
    );
}

#[test]
fn skips_heartbeats_transaction_metadata_and_messages() {
    let mut d = Decoder::new(Format::Auto);
    let hb = rec(
        0,
        Some(b"{\"serverName\":\"p\"}".to_vec()),
        Some(b"{\"ts_ms\":1796171938879}".to_vec()),
    );
    assert_eq!(
        decode_on(&mut d, "__debezium-heartbeat.p", 0, &hb).unwrap(),
        None
    );
    let tx = rec(
        0,
        None,
        Some(with_schema(
            &json!({"type": "struct", "name": "io.debezium.connector.common.TransactionMetadataValue"}),
            json!({"status": "BEGIN", "id": "571:53195832", "event_count": null, "data_collections": null, "ts_ms": 1}),
        )),
    );
    assert_eq!(decode_on(&mut d, "p.transaction", 0, &tx).unwrap(), None);
    let message = rec(
        0,
        None,
        Some(
            json!({"op": "m", "source": debezium_source(1, None), "message": {"prefix": "x", "content": "eA=="}})
                .to_string()
                .into_bytes(),
        ),
    );
    assert_eq!(decode_on(&mut d, "p.message", 0, &message).unwrap(), None);
}

/// Every error names the record and a fix, and never a row value.
#[test]
fn bad_records_are_errors_naming_record_and_fix() {
    let secret = "s3cr3t-value";
    let schema = envelope_schema(&fields());
    let cases: Vec<(&str, Rec, &str)> = vec![
        (
            "not JSON",
            rec(5, None, Some(format!("\u{1}{secret}").into_bytes())),
            "value.converter",
        ),
        (
            "not an envelope",
            rec(
                5,
                None,
                Some(json!({"name": secret}).to_string().into_bytes()),
            ),
            "leave it out",
        ),
        (
            "unknown op",
            rec(
                5,
                Some(key(1)),
                Some(with_schema(
                    &schema,
                    event(
                        "x",
                        Json::Null,
                        json!({"id": 1, "name": secret, "price": null}),
                        debezium_source(1, None),
                    ),
                )),
            ),
            "unknown op \"x\"",
        ),
        (
            "a type Courier cannot map",
            rec(
                5,
                Some(key(1)),
                Some(with_schema(
                    &envelope_schema(&json!([
                        {"type": "int32", "optional": false, "field": "id"},
                        {"type": "struct", "optional": true, "name": "io.debezium.data.geometry.Geometry",
                         "fields": [{"type": "bytes", "optional": false, "field": "wkb"}], "field": "shape"}
                    ])),
                    event(
                        "c",
                        Json::Null,
                        json!({"id": 1, "shape": {"wkb": secret}}),
                        debezium_source(1, None),
                    ),
                )),
            ),
            "column.exclude.list",
        ),
        (
            "a key field that is no column",
            rec(
                5,
                Some(with_schema(
                    &json!({"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "nope"}]}),
                    json!({"nope": 1}),
                )),
                Some(with_schema(
                    &schema,
                    event(
                        "c",
                        Json::Null,
                        json!({"id": 1, "name": secret, "price": null}),
                        debezium_source(1, None),
                    ),
                )),
            ),
            "message.key.columns",
        ),
        (
            "a value of the wrong type",
            rec(
                5,
                Some(key(1)),
                Some(with_schema(
                    &schema,
                    event(
                        "c",
                        Json::Null,
                        json!({"id": 1, "name": null, "price": secret}),
                        debezium_source(1, None),
                    ),
                )),
            ),
            "column price of public.t",
        ),
        (
            "a TOAST placeholder",
            rec(
                5,
                Some(key(1)),
                Some(with_schema(
                    &schema,
                    event(
                        "u",
                        Json::Null,
                        json!({"id": 1, "name": "__debezium_unavailable_value", "price": null}),
                        debezium_source(1, None),
                    ),
                )),
            ),
            "REPLICA IDENTITY FULL",
        ),
        (
            "another connector",
            rec(
                5,
                None,
                Some(
                    json!({"op": "c", "after": {"id": 1, "name": secret},
                           "source": {"connector": "mysql", "db": "x", "table": "t"}})
                    .to_string()
                    .into_bytes(),
                ),
            ),
            "PostgreSQL connector",
        ),
        (
            "neither key nor value",
            rec(5, None, None),
            "leave this topic out",
        ),
    ];
    for (what, r, fix) in cases {
        let mut d = Decoder::new(Format::Auto);
        let err = decode(&mut d, &r).expect_err(what);
        let text = err.to_string();
        assert!(
            text.starts_with("topic p.public.t partition 0 offset 5: "),
            "{what}: {text}"
        );
        assert!(text.contains(fix), "{what}: {text}");
        assert!(!text.contains(secret), "{what} shows a value: {text}");
        assert!(!err.is_retriable());
    }
    let mut d = Decoder::new(Format::JsonSchema);
    let plain = rec(
        5,
        None,
        Some(
            event("c", Json::Null, json!({"id": 1}), debezium_source(1, None))
                .to_string()
                .into_bytes(),
        ),
    );
    let err = decode(&mut d, &plain).unwrap_err();
    assert!(err.to_string().contains("schemas.enable=true"), "{err}");
}

#[test]
fn formats_parse_from_the_configuration() {
    assert_eq!("auto".parse(), Ok(Format::Auto));
    assert_eq!("json-schema".parse(), Ok(Format::JsonSchema));
    let err = "avro".parse::<Format>().unwrap_err();
    assert!(err.contains("\"json-schema\""), "{err}");
    assert_eq!(Format::Json.as_str(), "json");
}
