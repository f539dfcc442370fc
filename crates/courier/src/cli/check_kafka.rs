//! `courier check` for a Kafka source: the brokers answer, the topics
//! exist (or the pattern matches some), and what the group has committed.

use std::time::Duration;

use courier_sinks::envelope::SourceInfo;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

use super::check::Report;
use crate::config::KafkaSourceConfig;
use crate::pipeline::error_chain;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the group and topics look like, read on a blocking thread.
struct Seen {
    metadata: Metadata,
    /// Partitions of the subscribed topics with a committed offset.
    committed: usize,
    /// Members of the group now.
    members: Option<usize>,
}

pub(super) async fn check_kafka_source(r: &mut Report, k: &KafkaSourceConfig) -> SourceInfo {
    let info = SourceInfo {
        name: k.group.clone(),
        database: String::new(),
    };
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group)
        .set("enable.auto.commit", "false");
    for (key, value) in &k.settings {
        c.set(key, value);
    }
    let consumer: BaseConsumer = match c.create() {
        Ok(c) => c,
        Err(e) => {
            r.fail(
                "source.kafka",
                e.to_string(),
                "fix the librdkafka setting it names",
            );
            return info;
        }
    };
    let topics = k.topics.clone();
    let group = k.group.clone();
    let seen = tokio::task::spawn_blocking(move || -> Result<Seen, rdkafka::error::KafkaError> {
        let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
        let members = consumer
            .fetch_group_list(Some(&group), TIMEOUT)
            .ok()
            .and_then(|l| l.groups().first().map(|g| g.members().len()));
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in metadata
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|n| n == t.name()))
        {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
        let committed = if tpl.count() == 0 {
            0
        } else {
            consumer
                .committed_offsets(tpl, TIMEOUT)?
                .elements()
                .iter()
                .filter(|e| matches!(e.offset(), rdkafka::Offset::Offset(_)))
                .count()
        };
        Ok(Seen {
            metadata,
            committed,
            members,
        })
    })
    .await;
    let seen = match seen {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            r.fail(
                "kafka",
                format!("brokers {} did not answer: {}", k.brokers, error_chain(&e)),
                "check that the brokers run and that source.brokers (and TLS/SASL settings in [source.kafka]) are right",
            );
            return info;
        }
        Err(e) => {
            r.fail("kafka", e.to_string(), "report this as a bug");
            return info;
        }
    };
    r.ok(
        "kafka",
        format!(
            "brokers {} answer ({} broker(s))",
            k.brokers,
            seen.metadata.brokers().len()
        ),
    );
    let names: Vec<&str> = seen.metadata.topics().iter().map(|t| t.name()).collect();
    match &k.topic_pattern {
        Some(p) => {
            // The configuration checked that the pattern compiles.
            let matching = regex::Regex::new(p)
                .map(|re| names.iter().filter(|n| re.is_match(n)).count())
                .unwrap_or(0);
            if matching > 0 {
                r.ok(
                    "source.topic_pattern",
                    format!("{p} matches {matching} topic(s)"),
                );
            } else {
                r.ok(
                    "source.topic_pattern",
                    format!("{p} matches no topic yet; the worker waits for one"),
                );
            }
        }
        None => {
            for t in &k.topics {
                match seen.metadata.topics().iter().find(|m| m.name() == t) {
                    Some(m) if m.error().is_none() => r.ok(
                        &format!("topic {t}"),
                        format!("{} partition(s)", m.partitions().len()),
                    ),
                    _ => r.fail(
                        &format!("topic {t}"),
                        "does not exist",
                        "start the capture that writes it (or create it), or fix source.topics",
                    ),
                }
            }
        }
    }
    if let Some(t) = &k.dead_letter_topic {
        match seen.metadata.topics().iter().find(|m| m.name() == t) {
            Some(m) if m.error().is_none() && !m.partitions().is_empty() => r.ok(
                "source.dead_letter_topic",
                format!("{t}: {} partition(s)", m.partitions().len()),
            ),
            _ => r.fail(
                "source.dead_letter_topic",
                format!("{t} does not exist (the worker would not start)"),
                "create the topic, or remove source.dead_letter_topic",
            ),
        }
    }
    r.ok(
        "group",
        format!(
            "{}: {} member(s) now, {} partition(s) with committed offsets",
            k.group,
            seen.members.unwrap_or(0),
            seen.committed
        ),
    );
    info
}
