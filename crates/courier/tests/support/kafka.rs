//! Reading what the Kafka sink wrote as any consumer other than Courier
//! would, on the project's broker (`dev/kafka.sh`, 127.0.0.1:59092, or
//! `COURIER_TEST_KAFKA`): every partition of a topic from the beginning to
//! its end, `read_committed`, then folded by key into rows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

/// How long a reader waits to reach a topic's end.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker's address: `COURIER_TEST_KAFKA`, else the dev broker, started
/// once per test process (a no-op when it runs).
pub fn brokers() -> String {
    if let Ok(b) = std::env::var("COURIER_TEST_KAFKA") {
        return b;
    }
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| dev_kafka(&["start"]));
    "127.0.0.1:59092".to_string()
}

/// Runs `dev/kafka.sh` with `args`.
pub fn dev_kafka(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/kafka.sh");
    let st = Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("run dev/kafka.sh");
    assert!(st.success(), "dev/kafka.sh {args:?} failed");
}

/// A topic prefix of `db` that no earlier run used: topics outlive a run,
/// and a reader must see this run's records only.
pub fn run_prefix(db: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{db}-{}", nanos % 10_000_000_000)
}

/// A config streaming `tables` of `db` (slot `db`) into one Kafka sink
/// `[sinks.bus]` on the test broker with topic prefix `prefix`, plus the
/// sink keys `extra`.
pub fn kafka_config(db: &str, tables: &[&str], dir: &Path, prefix: &str, extra: &str) -> String {
    let sink = format!(
        "type = \"kafka\"\nbrokers = {:?}\ntopic_prefix = {prefix:?}\n{extra}",
        brokers()
    );
    super::sink_config(db, db, tables, dir, "bus", &sink)
}

/// Creates `topic` on the test broker as someone other than Courier would:
/// `partitions`, and `cleanup.policy=compact` when `compact`.
pub async fn create_topic(topic: &str, partitions: i32, compact: bool) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("create a Kafka admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if compact {
        new = new.set("cleanup.policy", "compact");
    }
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    for r in results {
        r.unwrap_or_else(|(t, code)| panic!("create topic {t}: {code}"));
    }
}

/// Whether `topic` exists on the test broker.
pub async fn topic_exists(topic: &str) -> bool {
    let (brokers, topic) = (brokers(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("create a Kafka consumer");
        let md = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("metadata of topic {topic}: {e}"));
        md.topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    })
    .await
    .unwrap()
}

/// One record Courier wrote, as a consumer reads it.
#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Value>,
    /// `None` for a tombstone.
    pub value: Option<Value>,
    /// The `courier.lsn` header: the change's commit LSN.
    pub lsn: u64,
    /// The `courier.txid` header.
    pub txid: u32,
    /// Every header, in order (`None` for a null value).
    pub headers: Vec<(String, Option<String>)>,
    /// The record's timestamp (milliseconds since the epoch).
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// The first header named `name`: `None` when there is none,
    /// `Some(None)` when its value is null.
    pub fn header(&self, name: &str) -> Option<Option<&str>> {
        header_of(&self.headers, name)
    }
}

/// Any record of a topic (another producer's, such as Kafka Connect's).
#[derive(Clone, Debug)]
pub struct AnyRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Value>,
    pub value: Option<Value>,
    pub headers: Vec<(String, Option<String>)>,
    pub timestamp_ms: Option<i64>,
}

impl AnyRecord {
    /// As [`Record::header`].
    pub fn header(&self, name: &str) -> Option<Option<&str>> {
        header_of(&self.headers, name)
    }
}

fn header_of<'a>(headers: &'a [(String, Option<String>)], name: &str) -> Option<Option<&'a str>> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref())
}

/// Every committed record of `topic` (all partitions, from the beginning
/// to the end offsets), by partition, then offset. Records of aborted or
/// open transactions are invisible, as to any `read_committed` consumer.
/// Panics on a record without Courier's `courier.lsn` and `courier.txid`
/// headers.
pub async fn read_topic(topic: &str) -> Vec<Record> {
    read_if_exists(topic)
        .await
        .unwrap_or_else(|| panic!("topic {topic} does not exist"))
        .into_iter()
        .map(|r| {
            let number = |name: &str| -> String {
                r.header(name)
                    .flatten()
                    .unwrap_or_else(|| panic!("a record of {topic} has no {name} header"))
                    .to_string()
            };
            Record {
                lsn: number("courier.lsn").parse().unwrap(),
                txid: number("courier.txid").parse().unwrap(),
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                value: r.value,
                headers: r.headers,
                timestamp_ms: r.timestamp_ms,
            }
        })
        .collect()
}

/// Every committed record of `topic`, whoever wrote it, as
/// [`read_topic`] reads them; an empty list when the topic does not exist.
pub async fn read_any(topic: &str) -> Vec<AnyRecord> {
    read_if_exists(topic).await.unwrap_or_default()
}

/// A record as its bytes, whatever they hold.
#[derive(Clone, Debug)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<String>)>,
    pub timestamp_ms: Option<i64>,
}

impl RawRecord {
    /// As [`Record::header`].
    pub fn header(&self, name: &str) -> Option<Option<&str>> {
        header_of(&self.headers, name)
    }
}

/// Every committed record of `topic` as [`read_any`] reads them, but as
/// bytes (for records that are not JSON).
pub async fn read_raw(topic: &str) -> Vec<RawRecord> {
    let (brokers, topic) = (brokers(), topic.to_string());
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &topic))
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn read_if_exists(topic: &str) -> Option<Vec<AnyRecord>> {
    let (brokers, name) = (brokers(), topic.to_string());
    let raw = tokio::task::spawn_blocking(move || read_blocking(&brokers, &name))
        .await
        .unwrap()?;
    let json = |b: Option<Vec<u8>>| {
        b.map(|b| {
            serde_json::from_slice(&b).unwrap_or_else(|e| {
                panic!(
                    "record of {topic} is not JSON ({e}): {}",
                    String::from_utf8_lossy(&b)
                )
            })
        })
    };
    Some(
        raw.into_iter()
            .map(|r| AnyRecord {
                partition: r.partition,
                offset: r.offset,
                key: json(r.key),
                value: json(r.value),
                headers: r.headers,
                timestamp_ms: r.timestamp_ms,
            })
            .collect(),
    )
}

fn read_blocking(brokers: &str, topic: &str) -> Option<Vec<RawRecord>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "courier-e2e-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("create a Kafka consumer");
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .unwrap_or_else(|e| panic!("metadata of topic {topic}: {e}"));
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return None;
    }
    let mut list = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout).unwrap();
        if high > low {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            ends.push((p, high));
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Some(out);
    }
    consumer.assign(&list).unwrap();
    let started = Instant::now();
    loop {
        let position = consumer.position().unwrap();
        let done = ends.iter().all(|(p, high)| {
            position
                .find_partition(topic, *p)
                .and_then(|e| e.offset().to_raw())
                .is_some_and(|o| o >= *high)
        });
        if done {
            break;
        }
        assert!(
            started.elapsed() < READ_TIMEOUT,
            "reading topic {topic} did not reach its end offsets {ends:?} within {READ_TIMEOUT:?} \
             (a transaction left open?); at {position:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap_or_else(|e| panic!("read topic {topic}: {e}"));
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_string(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(RawRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Some(out)
}

/// How a record's key and value are read: plain JSON (`format = "json"`),
/// or Kafka Connect's `{"schema", "payload"}` (`format = "json-schema"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonSchema,
}

impl Format {
    /// The row's key, as `pg_rows` writes it (the `id` column's JSON text).
    pub fn key_of(self, r: &Record) -> String {
        let key = r.key.as_ref().expect("a row's record has a key");
        match self {
            Format::Json => key["id"].to_string(),
            Format::JsonSchema => key["payload"]["id"].to_string(),
        }
    }

    /// The change envelope (`before`, `after`, `source`, `op`) of a record
    /// that is not a tombstone, values in Courier's JSON mapping.
    pub fn envelope(self, r: &Record) -> Option<Value> {
        let value = r.value.as_ref()?;
        Some(match self {
            Format::Json => value.clone(),
            Format::JsonSchema => {
                let mut env = value["payload"].clone();
                let fields = value["schema"]["fields"].as_array().cloned();
                for side in ["before", "after"] {
                    let schema = fields
                        .iter()
                        .flatten()
                        .find(|f| f["field"] == side)
                        .unwrap_or_else(|| panic!("envelope schema has no {side}: {value}"));
                    let row = env[side].take();
                    env[side] = connect_row(schema, row);
                }
                env
            }
        })
    }
}

/// A Connect struct's payload in Courier's JSON mapping: `Decimal` bytes
/// (base64 of the unscaled big-endian two's-complement value) become the
/// decimal text; everything else the load writes maps as it is.
fn connect_row(schema: &Value, row: Value) -> Value {
    let Value::Object(mut row) = row else {
        return row;
    };
    for field in schema["fields"].as_array().into_iter().flatten() {
        let name = field["field"].as_str().unwrap();
        if field["name"] == "org.apache.kafka.connect.data.Decimal" {
            if let Some(Value::String(b64)) = row.get(name) {
                let scale: u32 = field["parameters"]["scale"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("Decimal without a scale: {field}"));
                row.insert(name.into(), Value::String(decimal_text(b64, scale)));
            }
        }
    }
    Value::Object(row)
}

/// A Connect `Decimal` (the base64 of its unscaled big-endian two's
/// complement value) with `scale` digits after the point, as text.
pub fn decimal_text(b64: &str, scale: u32) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("Decimal {b64:?} is not base64: {e}"));
    assert!(
        !bytes.is_empty() && bytes.len() <= 16,
        "Decimal of {} bytes",
        bytes.len()
    );
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut be = [fill; 16];
    be[16 - bytes.len()..].copy_from_slice(&bytes);
    let unscaled = i128::from_be_bytes(be);
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Folds records (in partition, offset order) into the rows a consumer
/// holds: per key the record with the greatest commit LSN, the later one
/// on a tie; a delete or a tombstone removes the row.
pub fn fold(records: &[Record], format: Format) -> BTreeMap<String, Value> {
    let mut rows: HashMap<String, (u64, Option<Value>)> = HashMap::new();
    for r in records {
        let env = format.envelope(r);
        if let Some(env) = &env {
            assert_eq!(
                env["source"]["lsn"].as_u64(),
                Some(r.lsn),
                "source.lsn and the courier.lsn header differ: {env}"
            );
        }
        let row = match &env {
            Some(env) if env["op"] != "d" => Some(env["after"].clone()),
            _ => None,
        };
        let entry = rows.entry(format.key_of(r)).or_insert((0, None));
        if r.lsn >= entry.0 {
            *entry = (r.lsn, row);
        }
    }
    rows.into_iter()
        .filter_map(|(k, (_, row))| row.map(|row| (k, row)))
        .collect()
}

/// The records of each key, in offset order.
pub fn by_key(records: &[Record], format: Format) -> BTreeMap<String, Vec<&Record>> {
    let mut keys: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        keys.entry(format.key_of(r)).or_default().push(r);
    }
    keys
}

/// The record's `op`, or `None` for a tombstone.
pub fn op(r: &Record) -> Option<&str> {
    r.value.as_ref().map(|v| {
        v["op"]
            .as_str()
            .or_else(|| v["payload"]["op"].as_str())
            .unwrap_or_else(|| panic!("record without op: {v}"))
    })
}

/// Deletes the run's topics (best effort: the broker keeps them otherwise).
pub fn delete_topics(prefix: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/kafka.sh");
    if std::env::var_os("COURIER_TEST_KAFKA").is_none() && script.exists() {
        let _ = Command::new("bash")
            .arg(script)
            .args(["topics", "--delete", "--topic", &format!("{prefix}\\..*")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Produces `lines` (one `key|value` record per non-empty line, in order)
/// to `topic`, waiting until the broker acknowledged every one.
pub fn produce_lines(topic: &str, lines: &str) {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("create a Kafka producer");
    for line in lines.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line.split_once('|').expect("a key|value line");
        producer
            .send(BaseRecord::to(topic).key(key).payload(value))
            .map_err(|(e, _)| e)
            .expect("enqueue a record");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the broker acknowledged the records");
}

/// Produces one record with `headers` to `topic`, waiting until the
/// broker acknowledged it.
pub fn produce_with_headers(topic: &str, key: &[u8], value: &[u8], headers: &[(&str, &str)]) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("create a Kafka producer");
    let mut h = OwnedHeaders::new();
    for (key, value) in headers {
        h = h.insert(Header {
            key,
            value: Some(*value),
        });
    }
    producer
        .send(BaseRecord::to(topic).key(key).payload(value).headers(h))
        .map_err(|(e, _)| e)
        .expect("enqueue a record");
    producer
        .flush(Duration::from_secs(30))
        .expect("the broker acknowledged the record");
}

/// The offset `group` committed for `topic`'s `partition`, if any.
pub fn committed_offset(group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a Kafka consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("read the group's committed offsets");
    committed
        .find_partition(topic, partition)
        .and_then(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
}

/// Each partition of `topic` with its end offset (the next record's).
pub fn end_offsets(topic: &str) -> Vec<(i32, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("create a Kafka consumer");
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .unwrap_or_else(|e| panic!("metadata of topic {topic}: {e}"));
    md.topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .map(|p| (p, consumer.fetch_watermarks(topic, p, timeout).unwrap().1))
        .collect()
}

/// Whether `group` committed the end of every partition of `topic`.
pub fn group_caught_up(group: &str, topic: &str) -> bool {
    end_offsets(topic)
        .into_iter()
        .all(|(p, end)| end == 0 || committed_offset(group, topic, p) == Some(end))
}
