//! The Kafka sink against a real broker started by `dev/kafka.sh` (or at
//! `COURIER_TEST_KAFKA` when set), read back with librdkafka consumers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use courier_core::{
    Batch, Change, Column, Lsn, Op, PgType, Position, Relation, Sink, SinkErrorKind, TableId, Value,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Map};

use super::*;
use crate::compliance::fixtures::{batch, change, row, table};
use crate::compliance::{run_compliance, Options, Readback};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The broker's address, or `None` (after printing `SKIPPED:`) when no
/// broker can run here.
fn brokers() -> Option<String> {
    static STARTED: OnceLock<bool> = OnceLock::new();
    if let Ok(b) = std::env::var("COURIER_TEST_KAFKA") {
        return Some(b);
    }
    let addr = "127.0.0.1:59092";
    let up = *STARTED.get_or_init(|| {
        let script = repo().join("dev/kafka.sh");
        if script.exists() {
            let ok = Command::new(&script)
                .arg("start")
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "dev/kafka.sh start failed");
        }
        std::net::TcpStream::connect(addr).is_ok()
    });
    if up {
        Some(addr.to_string())
    } else {
        crate::skips::skip(
            "no Kafka broker on 127.0.0.1:59092",
            "run dev/kafka.sh start",
        );
        None
    }
}

fn source() -> SourceInfo {
    SourceInfo {
        name: "courier".into(),
        database: "shop".into(),
    }
}

/// A prefix no earlier run used, so every test writes its own topics.
fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("t{}-{test}", nanos % 1_000_000_000_000)
}

async fn sink(brokers: &str, extra: &str) -> KafkaSink {
    let config: KafkaSinkConfig = toml::from_str(&format!("brokers = {brokers:?}\n{extra}"))
        .unwrap_or_else(|e| panic!("config: {e}"));
    build("test", config, &source())
        .await
        .unwrap_or_else(|e| panic!("build: {e}"))
}

/// One record as a consumer reads it.
#[derive(Debug)]
struct Read {
    key: Option<serde_json::Value>,
    value: Option<serde_json::Value>,
    headers: HashMap<String, String>,
}

/// Every record of `topic` so far; `read_committed` hides records of
/// open and aborted transactions.
fn read_topic(brokers: &str, topic: &str, read_committed: bool) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "courier-tests")
        .set("enable.auto.commit", "false")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let (low, high) = consumer.fetch_watermarks(topic, 0, timeout).unwrap();
    let mut out = Vec::new();
    if high == low {
        return out;
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&list).unwrap();
    let started = Instant::now();
    while started.elapsed() < timeout {
        let position = consumer.position().unwrap();
        let at = position
            .find_partition(topic, 0)
            .and_then(|e| e.offset().to_raw())
            .unwrap_or(0);
        if at >= high {
            break;
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        let json = |b: Option<&[u8]>| b.map(|b| serde_json::from_slice(b).unwrap());
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                        (h.key.to_string(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Read {
            key: json(m.key()),
            value: json(m.payload()),
            headers,
        });
    }
    out
}

/// Folds a topic into rows: per key, the record with the greatest
/// `source.lsn` (the later one on a tie); deletes, tombstones and
/// truncates as the version rule has them.
struct KafkaReadback {
    brokers: String,
    prefix: String,
}

#[async_trait]
impl Readback for KafkaReadback {
    async fn read_row(
        &mut self,
        relation: &Relation,
        key: &[Value],
    ) -> Option<Map<String, serde_json::Value>> {
        let topic = format!(
            "{}.{}.{}",
            self.prefix, relation.id.schema, relation.id.name
        );
        let want = json!({"id": key[0].to_json()});
        let mut rows: HashMap<String, (u64, Option<Map<String, serde_json::Value>>)> =
            HashMap::new();
        for r in read_topic(&self.brokers, &topic, true) {
            let lsn: u64 = r.headers["courier.lsn"].parse().unwrap();
            // The suite counts an absent column as NULL.
            let after = r
                .value
                .as_ref()
                .and_then(|v| v["after"].as_object().cloned())
                .map(|mut row| {
                    row.retain(|_, v| !v.is_null());
                    row
                });
            if r.value.as_ref().is_some_and(|v| v["op"] == "t") {
                for entry in rows.values_mut() {
                    if lsn >= entry.0 {
                        *entry = (lsn, None);
                    }
                }
                continue;
            }
            let k = r.key.unwrap().to_string();
            if rows.get(&k).is_some_and(|(stored, _)| lsn < *stored) {
                continue;
            }
            rows.insert(k, (lsn, after));
        }
        rows.remove(&want.to_string()).and_then(|(_, row)| row)
    }
}

#[tokio::test]
async fn passes_compliance() {
    let Some(brokers) = brokers() else { return };
    let prefix = unique_prefix("compliance");
    let extra = format!("topic_prefix = {prefix:?}\ntables = [\"courier_compliance.*\"]");
    let mut readback = KafkaReadback {
        brokers: brokers.clone(),
        prefix,
    };
    run_compliance(|| sink(&brokers, &extra), &mut readback, Options::default()).await;
}

#[tokio::test]
async fn records_carry_key_envelope_headers_and_tombstones() {
    let Some(brokers) = brokers() else { return };
    let prefix = unique_prefix("records");
    let mut s = sink(&brokers, &format!("topic_prefix = {prefix:?}")).await;
    let rel = table("public", "products");
    let moved = Change::new(
        Arc::clone(&rel),
        Op::Update,
        Some(row(2, "two")),
        Some(row(3, "two")),
        Lsn(30),
        701,
        0,
    )
    .unwrap();
    s.apply(&batch(vec![
        change(&rel, Op::Insert, 1, "one", 10),
        change(&rel, Op::Insert, 2, "two", 10),
        change(&rel, Op::Delete, 1, "", 20),
        moved,
        change(&rel, Op::Truncate, 0, "", 40),
    ]))
    .await
    .unwrap();
    let records = read_topic(&brokers, &format!("{prefix}.public.products"), false);
    let shape: Vec<_> = records
        .iter()
        .map(|r| {
            let op = r
                .value
                .as_ref()
                .map(|v| v["op"].as_str().unwrap().to_string());
            (r.key.clone(), op)
        })
        .collect();
    let key = |id: i64| Some(json!({ "id": id }));
    let op = |o: &str| Some(o.to_string());
    assert_eq!(
        shape,
        vec![
            (key(1), op("c")),
            (key(2), op("c")),
            (key(1), op("d")),
            (key(1), None),
            (key(2), op("d")),
            (key(2), None),
            (key(3), op("c")),
            (None, op("t")),
        ],
        "inserts, a delete and its tombstone, a key change as delete + tombstone + create, a truncate"
    );
    let first = records[0].value.as_ref().unwrap();
    assert_eq!(first["before"], serde_json::Value::Null);
    assert_eq!(first["after"]["name"], "one");
    assert_eq!(first["after"]["price"], "10.50");
    assert_eq!(first["source"]["lsn"], 10);
    assert_eq!(first["source"]["txId"], 700);
    assert_eq!(first["source"]["schema"], "public");
    assert_eq!(first["source"]["table"], "products");
    assert_eq!(records[0].headers["courier.lsn"], "10");
    assert_eq!(records[0].headers["courier.txid"], "700");
    assert_eq!(records[4].value.as_ref().unwrap()["before"]["id"], 2);
    assert_eq!(records[4].headers["__debezium.newkey"], "{\"id\":3}");
    assert_eq!(records[6].headers["__debezium.oldkey"], "{\"id\":2}");
    assert_eq!(records[6].headers["courier.lsn"], "30");
}

/// A table with a column of each type the json-schema table documents.
fn typed_table() -> Arc<Relation> {
    let col = |name: &str, pg_type: PgType, typmod: i32, key: bool| Column {
        name: name.into(),
        type_oid: 0,
        type_modifier: typmod,
        type_name: name.into(),
        pg_type,
        nullable: !key,
        is_key: key,
    };
    let numeric = |p, s| PgType::Numeric {
        precision: p,
        scale: s,
    };
    Arc::new(Relation {
        oid: 1,
        id: TableId::new("public", "typed"),
        columns: vec![
            col("id", PgType::Int4, -1, true),
            col("small", PgType::Int2, -1, false),
            col("flag", PgType::Bool, -1, false),
            col("ratio", PgType::Float8, -1, false),
            col("price", numeric(Some(12), Some(2)), -1, false),
            col("amount", numeric(None, None), -1, false),
            col("data", PgType::Bytea, -1, false),
            col("uid", PgType::Uuid, -1, false),
            col("doc", PgType::Jsonb, -1, false),
            col("day", PgType::Date, -1, false),
            col("at", PgType::Timestamp, -1, false),
            col("at_ms", PgType::Timestamp, 3, false),
            col("at_tz", PgType::TimestampTz, -1, false),
            col("clock", PgType::Time, -1, false),
            col("clock_tz", PgType::TimeTz, -1, false),
            col("span", PgType::Interval, -1, false),
            col("tags", PgType::Array(Box::new(PgType::Text)), -1, false),
            col("addr", PgType::Other, -1, false),
        ],
    })
}

#[tokio::test]
async fn json_schema_records_are_what_debezium_writes() {
    let Some(brokers) = brokers() else { return };
    let prefix = unique_prefix("schema");
    let mut s = sink(
        &brokers,
        &format!("topic_prefix = {prefix:?}\nformat = \"json-schema\""),
    )
    .await;
    let rel = typed_table();
    let values = vec![
        Value::Int(42),
        Value::Int(-3),
        Value::Bool(true),
        Value::Float8(f64::NAN),
        Value::Numeric("12.34".into()),
        Value::Numeric("-1.500".into()),
        Value::Bytes(vec![0xde, 0xad]),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Value::Json("{\"a\": 1}".into()),
        Value::Date("2024-02-29".into()),
        Value::Timestamp("2024-01-02T03:04:05.000006".into()),
        Value::Timestamp("2024-01-02T03:04:05.123".into()),
        Value::TimestampTz("2024-01-02T03:04:05.5Z".into()),
        Value::Time("10:11:12.5".into()),
        Value::Time("10:00:00+02".into()),
        Value::Text("P1DT2H".into()),
        Value::Array(vec![Value::Text("a".into()), Value::Null]),
        Value::Text("10.0.0.1/32".into()),
    ];
    let c = Change::new(
        Arc::clone(&rel),
        Op::Insert,
        None,
        Some(values),
        Lsn(77),
        9,
        1_700_000_000_000_000,
    )
    .unwrap();
    s.apply(&batch(vec![c])).await.unwrap();
    let records = read_topic(&brokers, &format!("{prefix}.public.typed"), false);
    let r = &records[0];
    let key = r.key.as_ref().unwrap();
    assert_eq!(key["payload"], json!({"id": 42}));
    assert_eq!(key["schema"]["name"], format!("{prefix}.public.typed.Key"));
    assert_eq!(
        key["schema"]["fields"],
        json!([{"type": "int32", "optional": false, "field": "id"}])
    );
    let value = r.value.as_ref().unwrap();
    let schema = &value["schema"];
    assert_eq!(schema["name"], format!("{prefix}.public.typed.Envelope"));
    assert_eq!(schema["version"], 2);
    let envelope_field = |name: &str| {
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        envelope_field("after")["name"],
        format!("{prefix}.public.typed.Value")
    );
    assert_eq!(
        envelope_field("source")["name"],
        "io.debezium.connector.postgresql.Source"
    );
    let after_fields = envelope_field("after")["fields"]
        .as_array()
        .unwrap()
        .clone();
    let field = |name: &str| {
        after_fields
            .iter()
            .find(|f| f["field"] == name)
            .unwrap()
            .clone()
    };
    let named = |name: &str| field(name)["name"].as_str().map(str::to_string);
    assert_eq!(field("small")["type"], "int16");
    assert_eq!(
        field("price")["name"],
        "org.apache.kafka.connect.data.Decimal"
    );
    assert_eq!(
        field("price")["parameters"],
        json!({"scale": "2", "connect.decimal.precision": "12"})
    );
    assert_eq!(
        named("amount").as_deref(),
        Some("io.debezium.data.VariableScaleDecimal")
    );
    assert_eq!(field("data")["type"], "bytes");
    assert_eq!(named("uid").as_deref(), Some("io.debezium.data.Uuid"));
    assert_eq!(named("doc").as_deref(), Some("io.debezium.data.Json"));
    assert_eq!(named("day").as_deref(), Some("io.debezium.time.Date"));
    assert_eq!(
        named("at").as_deref(),
        Some("io.debezium.time.MicroTimestamp")
    );
    assert_eq!(
        named("at_ms").as_deref(),
        Some("io.debezium.time.Timestamp")
    );
    assert_eq!(
        named("at_tz").as_deref(),
        Some("io.debezium.time.ZonedTimestamp")
    );
    assert_eq!(
        named("clock").as_deref(),
        Some("io.debezium.time.MicroTime")
    );
    assert_eq!(
        named("clock_tz").as_deref(),
        Some("io.debezium.time.ZonedTime")
    );
    assert_eq!(field("tags")["type"], "array");
    assert_eq!(field("tags")["items"]["type"], "string");
    assert_eq!(field("id")["optional"], false);
    assert_eq!(field("small")["optional"], true);

    let p = &value["payload"];
    let after = &p["after"];
    assert_eq!(
        after,
        &json!({
            "id": 42, "small": -3, "flag": true, "ratio": "NaN",
            "price": "BNI=",
            "amount": {"scale": 1, "value": "8Q=="},
            "data": "3q0=", "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "doc": "{\"a\": 1}", "day": 19782,
            "at": 1_704_164_645_000_006i64, "at_ms": 1_704_164_645_123i64,
            "at_tz": "2024-01-02T03:04:05.5Z", "clock": 36_672_500_000i64,
            "clock_tz": "08:00:00Z", "span": "P1DT2H", "tags": ["a", null],
            "addr": "10.0.0.1/32",
        })
    );
    assert_eq!(p["op"], "c");
    assert_eq!(p["before"], serde_json::Value::Null);
    assert_eq!(p["source"]["lsn"], 77);
    assert_eq!(p["source"]["txId"], 9);
    assert_eq!(p["source"]["ts_ms"], 1_700_000_000_000i64);
    assert_eq!(p["source"]["snapshot"], "false");
    assert_eq!(p["source"]["connector"], "postgresql");
}

#[tokio::test]
async fn a_missing_topic_without_creation_is_a_fatal_error_with_the_fix() {
    let Some(brokers) = brokers() else { return };
    let prefix = unique_prefix("missing");
    let mut s = sink(
        &brokers,
        &format!("topic_prefix = {prefix:?}\ncreate_topics = false"),
    )
    .await;
    let rel = table("public", "nowhere");
    let err = s
        .apply(&batch(vec![change(&rel, Op::Insert, 1, "one", 10)]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, SinkErrorKind::Config, "{err}");
    let text = err.to_string();
    for words in [
        &format!("{prefix}.public.nowhere"),
        "create_topics = true",
        "public.nowhere",
        "LSN 0/A",
    ] {
        assert!(text.contains(words), "{text} should name {words}");
    }
}

#[tokio::test]
async fn unreachable_brokers_are_unreachable_at_start() {
    let port = crate::outage::unused_port();
    let config: KafkaSinkConfig =
        toml::from_str(&format!("brokers = \"127.0.0.1:{port}\"")).unwrap();
    let err = build("test", config, &source())
        .await
        .err()
        .expect("no broker listens");
    match &err {
        crate::BuildError::Connect { kind, .. } => {
            assert_eq!(*kind, SinkErrorKind::Unreachable, "{err}")
        }
        other => panic!("expected a connect error, got {other}"),
    }
    assert!(err.is_retriable());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// A batch whose `through` is past its changes, as the stream sends them
/// (the end LSN of the last commit).
fn committed(changes: Vec<Change>) -> Batch {
    let through = changes
        .iter()
        .map(|c| c.version())
        .max()
        .map(|l| Position(l.0 + 1));
    Batch { changes, through }
}

#[tokio::test]
async fn exactly_once_commits_each_group_and_a_restart_writes_nothing_twice() {
    let Some(brokers) = brokers() else { return };
    let prefix = unique_prefix("eos");
    let extra = format!(
        "topic_prefix = {prefix:?}\nexactly_once = true\noffsets_topic = \"{prefix}-offsets\""
    );
    let topic = format!("{prefix}.public.orders");
    let rel = table("public", "orders");
    let mut s = sink(&brokers, &extra).await;
    let first = committed(vec![
        change(&rel, Op::Insert, 1, "one", 10),
        change(&rel, Op::Insert, 2, "two", 10),
    ]);
    // A transaction split over two batches: the first ends inside it.
    let mut split = committed(vec![change(&rel, Op::Insert, 3, "three", 20)]);
    split.through = None;
    let rest = committed(vec![change(&rel, Op::Insert, 4, "four", 20)]);
    s.apply_all(&[&first]).await.unwrap();
    s.apply_all(&[&split]).await.unwrap();
    assert_eq!(
        read_topic(&brokers, &topic, true).len(),
        3,
        "committed groups are visible"
    );

    // An open transaction is invisible to read_committed consumers.
    let p = s.client.producer.clone();
    rdkafka::producer::Producer::begin_transaction(&p).unwrap();
    let deliveries = rdkafka::producer::Producer::context(&p).clone();
    deliveries.begin(1 << 40);
    let open = rdkafka::producer::BaseRecord::with_opaque_to(&topic, 1 << 40)
        .key("{\"id\":99}")
        .payload("{}");
    p.send(open).map_err(|(e, _)| e).unwrap();
    deliveries.wait_for(1).await.unwrap();
    assert_eq!(read_topic(&brokers, &topic, true).len(), 3);
    assert_eq!(read_topic(&brokers, &topic, false).len(), 4);
    // The process dies with the transaction open (kill -9): a new sink
    // with the same id fences it and reads the committed position back.
    drop(s);
    let config: KafkaSinkConfig =
        toml::from_str(&format!("brokers = {brokers:?}\n{extra}")).unwrap();
    let position = read_committed_position("test", config, &source())
        .await
        .unwrap();
    assert_eq!(
        position,
        Some(CommittedPosition {
            through: Some(Lsn(11)),
            in_progress: Some((Lsn(20), 1))
        })
    );
    let mut s = sink(&brokers, &extra).await;
    // The pipeline replays from the slot: everything again.
    s.apply_all(&[&first, &split, &rest]).await.unwrap();
    let ids: Vec<_> = read_topic(&brokers, &topic, true)
        .iter()
        .map(|r| r.key.as_ref().unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [1, 2, 3, 4],
        "every change exactly once, the aborted record never"
    );
}

/// Enqueue-then-await throughput, printed (`cargo test ... -- --ignored
/// --nocapture throughput`).
#[tokio::test]
#[ignore = "a benchmark: prints records/s"]
async fn throughput() {
    let Some(brokers) = brokers() else { return };
    for extra in ["", "exactly_once = true"] {
        let prefix = unique_prefix("bench");
        let mut s = sink(&brokers, &format!("topic_prefix = {prefix:?}\n{extra}")).await;
        let rel = table("public", "bench");
        let batches: Vec<Batch> = (0..20)
            .map(|b| {
                committed(
                    (0..10_000)
                        .map(|i| change(&rel, Op::Insert, b * 10_000 + i, "name", 10 + b as u64))
                        .collect(),
                )
            })
            .collect();
        let started = Instant::now();
        for group in batches.chunks(5) {
            let refs: Vec<&Batch> = group.iter().collect();
            s.apply_all(&refs).await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "kafka sink {extra:?}: 200000 records in {secs:.2}s = {:.0} records/s",
            200_000.0 / secs
        );
    }
}
