//! `[source]` with `type = "kafka"`: a worker that reads change topics (its
//! own Courier's or Debezium's) in a consumer group and applies them to its
//! sinks.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[source]` of `type = "kafka"`.
#[derive(Clone)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// The consumer group: every worker with this group shares the partitions.
    pub group: String,
    /// The topics read, by name …
    pub topics: Vec<String>,
    /// … or by a regular expression (librdkafka's `^` subscription).
    pub topic_pattern: Option<String>,
    /// Where a partition starts (see [`KafkaStart`]).
    pub start: KafkaStart,
    pub format: KafkaFormat,
    /// How often applied offsets are committed and the status refreshed.
    pub commit_interval: Duration,
    /// Where a record that cannot be decoded goes (its key, value and
    /// headers, with headers naming its topic, partition, offset and the
    /// error) instead of stopping the worker.
    pub dead_letter_topic: Option<String>,
    /// librdkafka settings passed through (TLS, SASL, timeouts), from
    /// `[source.kafka]`; may hold credentials: never print the values.
    pub settings: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSourceConfig")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("topic_pattern", &self.topic_pattern)
            .field("start", &self.start)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// How records are read (`source.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaFormat {
    /// Detected per record: Kafka Connect JSON with or without schemas.
    Auto,
    /// The bare envelope (Courier's `json`, JsonConverter without schemas).
    Json,
    /// Kafka Connect JSON with schemas (Courier's `json-schema`, Debezium's default).
    JsonSchema,
}

/// Where the worker starts reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaStart {
    /// From the group's committed offset; a partition the group never
    /// committed starts at its beginning, so nothing is skipped.
    Committed,
    /// From the beginning of every partition this process is assigned,
    /// whatever the group committed: a replay that rebuilds the sinks.
    Earliest,
    /// From the group's committed offset; a partition the group never
    /// committed starts at its end (only changes from now on).
    Latest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaSource {
    brokers: Brokers,
    group: String,
    #[serde(default)]
    topics: Vec<String>,
    topic_pattern: Option<String>,
    start: Option<KafkaStart>,
    format: Option<String>,
    commit_interval: Option<String>,
    dead_letter_topic: Option<String>,
    #[serde(default)]
    kafka: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Brokers {
    One(String),
    Many(Vec<String>),
}

/// Settings Courier sets itself: a pass-through value would break what
/// the worker promises (commits after the sinks applied, read_committed).
const OWN_SETTINGS: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "auto.offset.reset",
    "partition.assignment.strategy",
];

pub(super) fn parse(
    table: toml::Table,
    duration: &impl Fn(&str, Option<String>) -> Result<Option<Duration>, ConfigError>,
) -> Result<KafkaSourceConfig, String> {
    let raw: RawKafkaSource = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("source: {}", e.message()))?;
    let brokers = match raw.brokers {
        Brokers::One(b) => b,
        Brokers::Many(v) => v.join(","),
    };
    if brokers.trim().is_empty() {
        return Err(
            "source.brokers is empty: list the brokers, e.g. brokers = \"127.0.0.1:9092\"".into(),
        );
    }
    if raw.group.trim().is_empty() {
        return Err("source.group is empty: name the consumer group the workers share, e.g. group = \"courier-search\"".into());
    }
    match (&raw.topics[..], &raw.topic_pattern) {
        ([], None) => {
            return Err("a Kafka source needs source.topics (e.g. [\"shop.public.products\"]) or source.topic_pattern (e.g. \"^shop\\\\.public\\\\..*\")".into())
        }
        ([_, ..], Some(_)) => {
            return Err("source.topics and source.topic_pattern are both set: keep one".into())
        }
        _ => {}
    }
    if let Some(t) = raw.topics.iter().find(|t| !valid_topic(t)) {
        return Err(format!(
            "source.topics: {t:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
        ));
    }
    if let Some(t) = &raw.dead_letter_topic {
        if !valid_topic(t) {
            return Err(format!(
                "source.dead_letter_topic: {t:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)"
            ));
        }
        if raw.topics.contains(t) {
            return Err(format!(
                "source.dead_letter_topic {t:?} is one of source.topics: the worker would read its own dead letters; name another topic"
            ));
        }
    }
    let topic_pattern = raw.topic_pattern.map(|p| {
        if p.starts_with('^') {
            p
        } else {
            format!("^{p}")
        }
    });
    if let Some(p) = &topic_pattern {
        let re = regex::Regex::new(p)
            .map_err(|e| format!("source.topic_pattern {p:?} is not a regular expression: {e}"))?;
        if let Some(t) = raw.dead_letter_topic.as_deref().filter(|t| re.is_match(t)) {
            return Err(format!(
                "source.dead_letter_topic {t:?} matches source.topic_pattern: the worker would read its own dead letters; name a topic the pattern leaves out"
            ));
        }
    }
    let format = match raw.format.as_deref() {
        None | Some("auto") => KafkaFormat::Auto,
        Some("json") => KafkaFormat::Json,
        Some("json-schema") => KafkaFormat::JsonSchema,
        Some(other) => {
            return Err(format!(
                "source.format = {other:?} is not a format: use \"auto\" (detected per record), \"json\" or \"json-schema\""
            ))
        }
    };
    let mut settings = BTreeMap::new();
    for (k, v) in raw.kafka {
        if OWN_SETTINGS.contains(&k.as_str()) {
            return Err(format!(
                "source.kafka.{k} is set by Courier itself: use source.brokers, source.group or source.start instead"
            ));
        }
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => {
                return Err(format!(
                    "source.kafka.{k}: librdkafka settings are strings, numbers or booleans"
                ))
            }
        };
        settings.insert(k, v);
    }
    let commit_interval = duration("source.commit_interval", raw.commit_interval)
        .map_err(|e| e.to_string())?
        .unwrap_or(Duration::from_secs(1));
    Ok(KafkaSourceConfig {
        brokers,
        group: raw.group,
        topics: raw.topics,
        topic_pattern,
        start: raw.start.unwrap_or(KafkaStart::Committed),
        format,
        commit_interval,
        dead_letter_topic: raw.dead_letter_topic,
        settings,
    })
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a worker's sinks cannot do: republishing to Kafka with exactly
/// once or transaction metadata needs a PostgreSQL source (both follow
/// its transactions by LSN).
pub(super) fn check_sinks(
    _source: &KafkaSourceConfig,
    sinks: &BTreeMap<String, (String, toml::Table)>,
) -> Result<(), String> {
    let on = |table: &toml::Table, key: &str| table.get(key) == Some(&toml::Value::Boolean(true));
    for (name, (kind, table)) in sinks {
        if kind == "kafka" && on(table, "exactly_once") {
            return Err(format!(
                "sinks.{name}.exactly_once = true needs a PostgreSQL source (its transactions record the LSN \
                 they cover); a Kafka source republishes at least once: remove exactly_once"
            ));
        }
        if kind == "kafka" && on(table, "transaction_metadata") {
            return Err(format!(
                "sinks.{name}.transaction_metadata = true needs a PostgreSQL source (it follows PostgreSQL's \
                 transactions); a Kafka source's records keep the transaction blocks they carry: remove \
                 transaction_metadata"
            ));
        }
    }
    Ok(())
}
