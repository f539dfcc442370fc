//! The test broker (`dev/kafka.sh`, or `COURIER_TEST_KAFKA`): every record
//! of a topic as a consumer reads it, decoded with Courier's decoder.

use std::time::{Duration, Instant};

use courier_core::Change;
use courier_kafka::{DecodeError, Decoder, Record};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub fn brokers() -> String {
    std::env::var("COURIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:59092".to_string())
}

/// Whether the broker accepts connections.
pub fn available() -> bool {
    let b = brokers();
    let first = b.split(',').next().unwrap_or_default().trim().to_string();
    std::net::TcpStream::connect(first).is_ok()
}

/// A record as read, owning its bytes.
#[derive(Clone, Debug)]
pub struct Owned {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Owned {
    /// The record's value as JSON (`None` for a tombstone).
    pub fn json(&self) -> Option<serde_json::Value> {
        self.value
            .as_deref()
            .map(|v| serde_json::from_slice(v).expect("a JSON value"))
    }

    /// The Debezium payload of the value (the value itself when it has no
    /// schema).
    pub fn payload(&self) -> Option<serde_json::Value> {
        self.json().map(|v| {
            if v.get("payload").is_some() {
                v["payload"].clone()
            } else {
                v
            }
        })
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Decodes the record with `decoder`.
    pub fn decode(&self, decoder: &mut Decoder) -> Result<Option<Change>, DecodeError> {
        let headers: Vec<(&str, Option<&[u8]>)> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        decoder.decode(&Record {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &headers,
        })
    }
}

/// Every record of `topic` (all partitions, in partition then offset order).
pub async fn read(topic: &str) -> Vec<Owned> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || read_blocking(&topic))
        .await
        .unwrap()
}

fn consumer() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "courier-kafka-decode-tests")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("create a Kafka consumer")
}

fn read_blocking(topic: &str) -> Vec<Owned> {
    let consumer = consumer();
    let timeout = Duration::from_secs(10);
    let Ok(md) = consumer.fetch_metadata(Some(topic), timeout) else {
        return Vec::new();
    };
    let mut list = TopicPartitionList::new();
    let mut ends = Vec::new();
    for t in md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
    {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).unwrap();
            if high > low {
                list.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .unwrap();
                ends.push((p.id(), high));
            }
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
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
            started.elapsed() < Duration::from_secs(60),
            "reading {topic} did not reach {ends:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap_or_else(|e| panic!("read {topic}: {e}"));
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Owned {
            topic: topic.to_string(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// Reads `topic` until `done` holds for its records (or panics after
/// `timeout`, naming `what`).
pub async fn wait_for(
    topic: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Owned]) -> bool,
) -> Vec<Owned> {
    let started = Instant::now();
    loop {
        let records = read(topic).await;
        if done(&records) {
            return records;
        }
        assert!(
            started.elapsed() < timeout,
            "{what}: not in {topic} after {timeout:?} ({} records)",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes every topic whose name starts with `prefix`.
pub async fn delete_topics(prefix: &str) {
    let names: Vec<String> = {
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            consumer()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(|md| {
                    md.topics()
                        .iter()
                        .map(|t| t.name().to_string())
                        .filter(|n| n.starts_with(&prefix))
                        .collect()
                })
                .unwrap_or_default()
        })
        .await
        .unwrap()
    };
    if names.is_empty() {
        return;
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("create a Kafka admin client");
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
}
