use serde_json::json;

use super::*;

fn record<'a>(
    offset: i64,
    key: &'a str,
    value: Option<&'a str>,
    headers: &'a [(&'a str, Option<&'a [u8]>)],
) -> Record<'a> {
    Record {
        topic: "shop.public.items",
        partition: 0,
        offset,
        key: Some(key.as_bytes()),
        value: value.map(str::as_bytes),
        headers,
    }
}

fn envelope(op: &str, before: Json, after: Json, source: Json) -> String {
    json!({"before": before, "after": after, "source": source, "op": op, "ts_ms": 1}).to_string()
}

fn courier_source(lsn: u64) -> Json {
    json!({"version": "courier-0.1.0", "connector": "postgresql", "name": "shop", "db": "shop",
           "schema": "public", "table": "items", "lsn": lsn, "txId": 7, "ts_ms": 1_000, "ts_us": 1_000_123})
}

#[test]
fn a_schemaless_courier_record_decodes_with_its_commit_lsn() {
    let mut d = Decoder::new(Format::Auto);
    let value = envelope(
        "c",
        Json::Null,
        json!({"id": 1, "name": "scarf", "price": "12.50", "tags": ["a"], "doc": {"k": 1}}),
        courier_source(500),
    );
    let lsn = b"500".as_slice();
    let headers = [("courier.lsn", Some(lsn))];
    let c = d
        .decode(&record(0, r#"{"id":1}"#, Some(&value), &headers))
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.op(), c.version(), c.xid(), c.commit_time_us()),
        (Op::Insert, Lsn(500), 7, 1_000_123)
    );
    let r = c.relation();
    assert_eq!(r.id, TableId::new("public", "items"));
    let key: Vec<&str> = r
        .columns
        .iter()
        .filter(|c| c.is_key)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(key, ["id"]);
    let after = c.after().unwrap();
    let by_name = |n: &str| &after[r.column_index(n).unwrap()];
    assert_eq!(by_name("id"), &Value::Int(1));
    assert_eq!(by_name("price"), &Value::Text("12.50".into()));
    assert_eq!(
        by_name("tags"),
        &Value::Array(vec![Value::Text("a".into())])
    );
    assert_eq!(by_name("doc"), &Value::Json(r#"{"k":1}"#.into()));
}

#[test]
fn a_debezium_record_with_schemas_decodes_its_semantic_types() {
    let mut d = Decoder::new(Format::Auto);
    let row_schema = json!({"type": "struct", "optional": true, "name": "db.public.items.Value", "fields": [
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
         "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "field": "n"},
        {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "field": "ts"},
        {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "field": "d"},
        {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "field": "t"},
        {"type": "string", "optional": true, "name": "io.debezium.data.Json", "field": "j"}
    ]});
    let mut before = row_schema.clone();
    before["field"] = json!("before");
    let mut after = row_schema;
    after["field"] = json!("after");
    let schema = json!({"type": "struct", "name": "db.public.items.Envelope", "fields": [before, after,
        {"type": "struct", "field": "source", "fields": []}, {"type": "string", "field": "op"}]});
    let source = json!({"version": "3.6.1.Final", "connector": "postgresql", "name": "db",
        "schema": "public", "table": "items", "lsn": 9000, "sequence": "[\"8000\",\"9000\"]", "txId": 3, "ts_ms": 5});
    let payload = json!({"before": null, "after": {"id": 1, "n": "AJY=", "ts": "2024-01-02T03:04:05.500Z",
        "d": -1, "t": 1_704_164_645_123_456_i64, "j": "{\"a\": 1}"}, "source": source, "op": "u"});
    let value = json!({"schema": schema, "payload": payload}).to_string();
    let key = json!({"schema": {"type": "struct", "fields": [{"type": "int32", "field": "id"}]},
                     "payload": {"id": 1}})
    .to_string();
    let c = d
        .decode(&record(3, &key, Some(&value), &[]))
        .unwrap()
        .unwrap();
    // Debezium: the previous transaction's commit LSN orders transactions.
    assert_eq!((c.op(), c.version()), (Op::Update, Lsn(8000)));
    assert_eq!(
        c.after().unwrap(),
        [
            Value::Int(1),
            Value::Numeric("1.50".into()),
            Value::TimestampTz("2024-01-02T03:04:05.5Z".into()),
            Value::Date("1969-12-31".into()),
            Value::Timestamp("2024-01-02T03:04:05.123456".into()),
            Value::Json("{\"a\": 1}".into()),
        ]
    );
    assert_eq!(
        c.relation().columns[1].pg_type,
        PgType::Numeric {
            precision: Some(10),
            scale: Some(2)
        }
    );

    // A snapshot read of Debezium's loses to every streamed change.
    let read = value.replace("\"op\":\"u\"", "\"op\":\"r\"");
    let c = d
        .decode(&record(4, &key, Some(&read), &[]))
        .unwrap()
        .unwrap();
    assert_eq!((c.op(), c.version()), (Op::Read, Lsn::ZERO));
}

#[test]
fn the_tombstone_after_a_delete_is_nothing_new_and_a_lone_one_deletes() {
    let mut d = Decoder::new(Format::Json);
    let headers = [("courier.lsn", Some(b"700".as_slice()))];
    let insert = envelope(
        "c",
        Json::Null,
        json!({"id": 2, "v": 1}),
        courier_source(600),
    );
    assert!(d
        .decode(&record(0, r#"{"id":2}"#, Some(&insert), &headers))
        .unwrap()
        .is_some());
    let delete = envelope(
        "d",
        json!({"id": 2, "v": null}),
        Json::Null,
        courier_source(700),
    );
    let c = d
        .decode(&record(1, r#"{"id":2}"#, Some(&delete), &headers))
        .unwrap()
        .unwrap();
    assert_eq!((c.op(), c.version()), (Op::Delete, Lsn(700)));
    assert!(d
        .decode(&record(2, r#"{"id":2}"#, None, &headers))
        .unwrap()
        .is_none());
    // A tombstone whose delete was compacted away.
    let c = d
        .decode(&record(3, r#"{"id":5}"#, None, &headers))
        .unwrap()
        .unwrap();
    assert_eq!((c.op(), c.version()), (Op::Delete, Lsn(700)));
    assert_eq!(c.before().unwrap()[0], Value::Int(5));
}

#[test]
fn bad_records_name_topic_partition_offset_and_the_fix() {
    let mut d = Decoder::new(Format::Auto);
    let e = d
        .decode(&record(12, r#"{"id":1}"#, Some("not json"), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("shop.public.items") && e.contains("partition 0") && e.contains("offset 12"),
        "{e}"
    );
    assert!(e.contains("not JSON"), "{e}");
    let e = d
        .decode(&record(13, r#"{"id":1}"#, Some(r#"{"a":1}"#), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a change event") && e.contains("source.topics"),
        "{e}"
    );
    let bad_op = envelope("x", Json::Null, json!({"id": 1}), courier_source(1));
    let e = d
        .decode(&record(14, r#"{"id":1}"#, Some(&bad_op), &[]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown op"), "{e}");
    let mut strict = Decoder::new(Format::JsonSchema);
    let plain = envelope("c", Json::Null, json!({"id": 1}), courier_source(1));
    let e = strict
        .decode(&record(15, r#"{"id":1}"#, Some(&plain), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no Kafka Connect schema") && e.contains("source.format"),
        "{e}"
    );
    let no_key = Record {
        key: None,
        ..record(16, "", Some(&plain), &[])
    };
    let e = d.decode(&no_key).unwrap_err().to_string();
    assert!(e.contains("no key"), "{e}");
}
