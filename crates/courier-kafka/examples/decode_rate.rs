//! How fast the decoder turns records into changes, on one thread: a
//! Debezium record with schemas (JsonConverter, a ten-column row, 3.6 KB
//! with its schema) and a Courier `json` record of the same row, each
//! decoded 200,000 times.
//!
//! `cargo run --release -p courier-kafka --example decode_rate`

use std::time::Instant;

use courier_kafka::{Decoder, Format, Record};
use serde_json::{json, Value};

const RECORDS: usize = 200_000;

fn main() {
    let debezium: Vec<(Vec<u8>, Vec<u8>)> = (0..1000).map(debezium_record).collect();
    let courier: Vec<(Vec<u8>, Vec<u8>)> = (0..1000).map(courier_record).collect();
    for (name, records) in [
        ("json-schema (Debezium)", &debezium),
        ("json (Courier)", &courier),
    ] {
        let size = records
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            / records.len();
        let mut decoder = Decoder::new(Format::Auto);
        let started = Instant::now();
        for i in 0..RECORDS {
            let (key, value) = &records[i % records.len()];
            let record = Record {
                topic: "shop.public.products",
                partition: 0,
                offset: i as i64,
                timestamp_ms: None,
                key: Some(key),
                value: Some(value),
                headers: &[],
            };
            let change = decoder.decode(&record).expect("a valid record");
            assert!(change.is_some());
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{name}: {:.0} records/s ({size} bytes a record, {:.0} MB/s)",
            RECORDS as f64 / secs,
            (RECORDS * size) as f64 / secs / 1e6
        );
    }
}

fn row(i: i64) -> Value {
    json!({
        "id": i, "name": "Tea of the day",
        "description": "A fine black tea from the hills, packed in 250 g tins",
        "price": "AJY=", "stock": 17, "active": true, "created": 1_709_251_199_999_999i64,
        "updated": "2024-02-29T18:29:59.500000Z",
        "attrs": "{\"origin\": \"Assam\", \"grade\": \"FTGFOP\"}", "category": 7
    })
}

fn debezium_record(i: i64) -> (Vec<u8>, Vec<u8>) {
    let fields = json!([
        {"type": "int64", "optional": false, "field": "id"},
        {"type": "string", "optional": true, "field": "name"},
        {"type": "string", "optional": true, "field": "description"},
        {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
         "parameters": {"scale": "2", "connect.decimal.precision": "12"}, "field": "price"},
        {"type": "int32", "optional": true, "field": "stock"},
        {"type": "boolean", "optional": true, "field": "active"},
        {"type": "int64", "optional": true, "name": "io.debezium.time.MicroTimestamp", "version": 1, "field": "created"},
        {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "version": 1, "field": "updated"},
        {"type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1, "field": "attrs"},
        {"type": "int64", "optional": true, "field": "category"}
    ]);
    let value = |f: &str| {
        json!({"type": "struct", "fields": fields, "optional": true,
               "name": "shop.public.products.Value", "field": f})
    };
    let field =
        |t: &str, f: &str, optional: bool| json!({"type": t, "optional": optional, "field": f});
    let source = json!({
        "type": "struct", "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source",
        "fields": [
            field("string", "version", false), field("string", "connector", false),
            field("string", "name", false), field("int64", "ts_ms", false),
            {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
             "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
             "default": "false", "field": "snapshot"},
            field("string", "db", false), field("string", "sequence", true), field("int64", "ts_us", true),
            field("int64", "ts_ns", true), field("string", "schema", false), field("string", "table", false),
            field("int64", "txId", true), field("int64", "lsn", true), field("int64", "xmin", true)
        ]
    });
    let schema = json!({
        "type": "struct", "optional": false, "name": "shop.public.products.Envelope", "version": 2,
        "fields": [value("before"), value("after"), source, field("string", "op", false), field("int64", "ts_ms", true)]
    });
    let payload = json!({
        "before": null, "after": row(i), "op": "u", "ts_ms": 2,
        "source": {"version": "3.6.1.Final", "connector": "postgresql", "name": "shop", "ts_ms": 1,
                   "snapshot": "false", "db": "shop", "sequence": format!("[\"{}\",\"{}\"]", 1000 + i, 1001 + i),
                   "ts_us": 1000, "ts_ns": 1_000_000, "schema": "public", "table": "products", "txId": 7,
                   "lsn": 1001 + i, "xmin": null}
    });
    let key_schema = json!({"type": "struct", "optional": false, "name": "shop.public.products.Key",
                            "fields": [{"type": "int64", "optional": false, "field": "id"}]});
    (
        format!("{{\"schema\":{key_schema},\"payload\":{{\"id\":{i}}}}}").into_bytes(),
        format!("{{\"schema\":{schema},\"payload\":{payload}}}").into_bytes(),
    )
}

fn courier_record(i: i64) -> (Vec<u8>, Vec<u8>) {
    let mut after = row(i);
    after["price"] = json!("1.50");
    after["created"] = json!("2024-02-29T23:59:59.999999");
    after["attrs"] = json!({"origin": "Assam", "grade": "FTGFOP"});
    let value = json!({
        "before": null, "after": after, "op": "u", "ts_ms": 2,
        "source": {"version": "courier-0.1.0", "connector": "postgresql", "name": "courier", "db": "shop",
                   "schema": "public", "table": "products", "lsn": 1001 + i, "txId": 7, "ts_ms": 1,
                   "ts_us": 1000, "snapshot": "false"}
    });
    (
        format!("{{\"id\":{i}}}").into_bytes(),
        value.to_string().into_bytes(),
    )
}
