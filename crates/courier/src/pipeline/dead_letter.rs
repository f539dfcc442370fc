//! A Kafka worker's dead-letter topic (`source.dead_letter_topic`): a
//! record the worker cannot decode is written there as it came (key,
//! value, headers) with headers naming where it came from and why, and
//! the worker goes on. The record counts as handled only once the broker
//! acknowledged its dead letter (`acks=all`, idempotent), so its offset is
//! never committed before the dead letter is durable.

use std::time::Duration;

use courier_kafka::{DecodeError, Record};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::KafkaSourceConfig;

/// The header naming the topic a dead letter was read from.
pub(super) const TOPIC_HEADER: &str = "courier.dead_letter.topic";
/// The header naming its partition.
pub(super) const PARTITION_HEADER: &str = "courier.dead_letter.partition";
/// The header naming its offset.
pub(super) const OFFSET_HEADER: &str = "courier.dead_letter.offset";
/// The header holding why it could not be decoded (never a row value).
pub(super) const ERROR_HEADER: &str = "courier.dead_letter.error";

/// How long a dead letter may wait for the broker's acknowledgement.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer of a worker's dead letters.
pub(super) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    /// A producer for `topic` on the source's brokers (with the source's
    /// `[source.kafka]` settings, for TLS and SASL); fails when the topic
    /// does not exist, naming it and the fix.
    pub(super) fn connect(k: &KafkaSourceConfig, topic: &str) -> anyhow::Result<DeadLetters> {
        let mut c = ClientConfig::new();
        for (key, value) in &k.settings {
            c.set(key, value);
        }
        c.set("bootstrap.servers", &k.brokers)
            .set("client.id", format!("courier-{}-dead-letters", k.group))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        let producer: FutureProducer = c.create().map_err(|e| {
            anyhow::anyhow!("source.dead_letter_topic: create the dead-letter producer: {e}")
        })?;
        let md = producer
            .client()
            .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10)))
            .map_err(|e| {
                anyhow::anyhow!(
                    "source.dead_letter_topic: read the metadata of topic {topic} on {}: {e}",
                    k.brokers
                )
            })?;
        let exists = md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            anyhow::bail!(
                "source.dead_letter_topic: topic {topic} does not exist on {}: create it (e.g. kafka-topics.sh --create --topic {topic}) or remove the setting",
                k.brokers
            );
        }
        Ok(DeadLetters {
            producer,
            topic: topic.to_string(),
        })
    }

    /// The topic dead letters go to.
    pub(super) fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `record` with the reason `error` and waits for the broker's
    /// acknowledgement; an error names the record and the dead-letter topic.
    pub(super) async fn send(
        &self,
        record: &Record<'_>,
        error: &DecodeError,
    ) -> anyhow::Result<()> {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let reason = error.kind.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 4);
        for (key, value) in record.headers {
            headers = headers.insert(Header { key, value: *value });
        }
        for (key, value) in [
            (TOPIC_HEADER, record.topic),
            (PARTITION_HEADER, partition.as_str()),
            (OFFSET_HEADER, offset.as_str()),
            (ERROR_HEADER, reason.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = record.key {
            r = r.key(k);
        }
        if let Some(v) = record.value {
            r = r.payload(v);
        }
        if let Some(t) = record.timestamp_ms {
            r = r.timestamp(t);
        }
        self.producer
            .send(r, Timeout::After(DELIVERY_TIMEOUT))
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                anyhow::anyhow!(
                    "topic {} partition {} offset {}: the record cannot be decoded and writing it to the dead-letter topic {} failed ({e}); it was not applied and nothing after it is committed: {error}",
                    record.topic,
                    record.partition,
                    record.offset,
                    self.topic
                )
            })
    }
}
