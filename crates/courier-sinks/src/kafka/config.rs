//! `[sinks.NAME]` with `type = "kafka"`: the settings as written, and the
//! validated form the sink runs with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use crate::connect::DecimalHandling;
use crate::envelope::SourceInfo;
use crate::selection::TableSelection;

/// The Kafka sink's settings, as written in the configuration (minus `type`).
///
/// Unknown keys are rejected by name. `Debug` hides the SASL password and
/// every pass-through setting's value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port`, a comma-separated list, or a list of them.
    pub brokers: Brokers,
    /// Tables this sink receives: `schema.table` or `schema.*` (default: all).
    pub tables: Option<Vec<String>>,
    /// The first part of topic names and schema names (Debezium's
    /// `topic.prefix`); default: the source's name (the slot).
    pub topic_prefix: Option<String>,
    /// The topic of a table, from `{prefix}`, `{schema}` and `{table}`
    /// (default `{prefix}.{schema}.{table}`, Debezium's naming).
    pub topic: Option<String>,
    /// `json` (the envelope alone, the default) or `json-schema` (Kafka
    /// Connect's JsonConverter with `schemas.enable=true`).
    #[serde(default)]
    pub format: Format,
    /// How `numeric` columns travel with `format = "json-schema"`:
    /// `precise` (the default, Connect's `Decimal`), `string` or `double`.
    #[serde(default)]
    pub decimal_handling: DecimalHandling,
    /// A null-value record after each delete, so log compaction can drop
    /// the key (default true).
    pub tombstones: Option<bool>,
    /// Each group of batches is one Kafka transaction, with the position it
    /// covers written to `offsets_topic` in the same transaction.
    #[serde(default)]
    pub exactly_once: bool,
    /// The transactional id (default `courier-{prefix}-{sink}`); one
    /// running Courier per id.
    pub transactional_id: Option<String>,
    /// The compacted topic of exactly-once positions (default
    /// `courier-offsets`).
    pub offsets_topic: Option<String>,
    /// Create missing topics (default true).
    pub create_topics: Option<bool>,
    /// Partitions, replication factor and `cleanup.policy=compact` of the
    /// topics Courier creates (defaults: the broker's, the broker's, false).
    pub partitions: Option<u32>,
    pub replication_factor: Option<u16>,
    #[serde(default)]
    pub compact: bool,
    /// A PEM file of the certificate authorities to trust; turns TLS on.
    pub tls_ca_file: Option<PathBuf>,
    /// Turns TLS on with the system's certificate authorities.
    #[serde(default)]
    pub tls: bool,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with `sasl_username`
    /// and `sasl_password`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    /// How long a record may wait for the broker's acknowledgement before
    /// the batch is retried (default `30s`).
    #[serde(default, deserialize_with = "crate::settings::opt_duration")]
    pub delivery_timeout: Option<Duration>,
    /// Debezium's transaction metadata: a BEGIN and an END record per
    /// transaction in `transaction_topic`, and a `transaction` block in
    /// every change record (default false).
    #[serde(default)]
    pub transaction_metadata: bool,
    /// The topic of the BEGIN and END records (default `{prefix}.transaction`,
    /// Debezium's).
    pub transaction_topic: Option<String>,
    /// A heartbeat record every interval, so consumers can tell a quiet
    /// database from a stopped pipeline (default: none).
    #[serde(default, deserialize_with = "crate::settings::opt_duration")]
    pub heartbeat_interval: Option<Duration>,
    /// The topic of the heartbeat records (default
    /// `__debezium-heartbeat.{prefix}`, Debezium's).
    pub heartbeat_topic: Option<String>,
    /// Other librdkafka settings, passed through as they are (values are
    /// never shown in messages).
    #[serde(default)]
    pub librdkafka: BTreeMap<String, toml::Value>,
}

/// One broker address or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Brokers {
    /// `"host:port"` or `"host1:port,host2:port"`.
    One(String),
    /// `["host1:port", "host2:port"]`.
    Many(Vec<String>),
}

/// What a record's key and value hold.
///
/// Parsed from its setting's text, so that a wrong value is an error that
/// names the key (serde's own enum error does not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Format {
    /// The key and the envelope as plain JSON, values per Courier's type
    /// mapping.
    #[default]
    Json,
    /// `{"schema": ..., "payload": ...}` as Kafka Connect's JsonConverter
    /// writes it, with Debezium's schema names and semantic types.
    JsonSchema,
}

impl TryFrom<String> for Format {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "json" => Ok(Format::Json),
            "json-schema" => Ok(Format::JsonSchema),
            other => Err(format!(
                "format: {other:?} is not a format; use \"json\" or \"json-schema\""
            )),
        }
    }
}

impl fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSinkConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("topic", &self.topic)
            .field("format", &self.format)
            .field("exactly_once", &self.exactly_once)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<hidden>"),
            )
            .field("librdkafka", &self.librdkafka.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Settings Courier owns, because the sink's guarantees rest on them.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use brokers"),
    (
        "acks",
        "Courier always waits for every in-sync replica (acks=all)",
    ),
    ("request.required.acks", "Courier always uses acks=all"),
    (
        "enable.idempotence",
        "Courier's producer is always idempotent",
    ),
    ("transactional.id", "use transactional_id"),
    (
        "security.protocol",
        "use tls, tls_ca_file and sasl_mechanism",
    ),
    ("sasl.password", "use sasl_password"),
    ("message.timeout.ms", "use delivery_timeout"),
    ("delivery.timeout.ms", "use delivery_timeout"),
];

/// The settings the sink runs with: checked, defaults applied.
#[derive(Clone)]
pub(crate) struct Settings {
    /// `host:port,host:port`.
    pub brokers: String,
    pub selection: TableSelection,
    pub prefix: String,
    pub topic: TopicTemplate,
    pub format: Format,
    pub decimal_handling: DecimalHandling,
    pub tombstones: bool,
    /// `Some((transactional id, offsets topic))` for exactly once.
    pub exactly_once: Option<(String, String)>,
    pub create_topics: bool,
    pub partitions: Option<u32>,
    pub replication_factor: Option<u16>,
    pub compact: bool,
    pub delivery_timeout: Duration,
    /// The topic of transaction metadata records, when they are written.
    pub transaction_topic: Option<String>,
    /// How often, and to which topic, a heartbeat record goes.
    pub heartbeat: Option<(Duration, String)>,
    /// Every librdkafka setting except `bootstrap.servers`, including
    /// secrets: never shown.
    pub client: Vec<(String, String)>,
}

impl KafkaSinkConfig {
    /// Checks the settings; the error says which key is wrong and how to
    /// fix it. `sink` names the sink (for the default transactional id).
    pub(crate) fn validate(self, sink: &str, source: &SourceInfo) -> Result<Settings, String> {
        let brokers = match &self.brokers {
            Brokers::One(s) => s.split(',').map(str::trim).collect::<Vec<_>>(),
            Brokers::Many(v) => v.iter().map(|s| s.trim()).collect(),
        };
        if brokers.is_empty() || brokers.iter().any(|b| b.is_empty()) {
            return Err("brokers: give host:port, e.g. \"127.0.0.1:9092\"".into());
        }
        if let Some(b) = brokers.iter().find(|b| b.contains("://")) {
            return Err(format!(
                "brokers: {b:?} is a URL; give host:port without a scheme"
            ));
        }
        let selection = TableSelection::from_setting(self.tables.as_deref())
            .map_err(|e| format!("tables: {e}"))?;
        let prefix = self
            .topic_prefix
            .clone()
            .unwrap_or_else(|| source.name.clone());
        check_topic_chars("topic_prefix", &prefix)?;
        let topic = TopicTemplate::parse(
            self.topic.as_deref().unwrap_or("{prefix}.{schema}.{table}"),
            &prefix,
        )?;
        let delivery_timeout = self.delivery_timeout.unwrap_or(Duration::from_secs(30));
        if delivery_timeout < Duration::from_secs(1) {
            return Err("delivery_timeout: must be at least 1s".into());
        }
        let exactly_once = if self.exactly_once {
            let id = self
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("courier-{prefix}-{sink}"));
            let offsets = self
                .offsets_topic
                .clone()
                .unwrap_or_else(|| "courier-offsets".into());
            check_topic_chars("offsets_topic", &offsets)?;
            Some((id, offsets))
        } else {
            if self.transactional_id.is_some() || self.offsets_topic.is_some() {
                return Err("transactional_id and offsets_topic need exactly_once = true".into());
            }
            None
        };
        let transaction_topic = match (self.transaction_metadata, &self.transaction_topic) {
            (true, topic) => {
                let topic = topic
                    .clone()
                    .unwrap_or_else(|| format!("{prefix}.transaction"));
                check_topic_chars("transaction_topic", &topic)?;
                Some(topic)
            }
            (false, Some(_)) => {
                return Err("transaction_topic needs transaction_metadata = true".into())
            }
            (false, None) => None,
        };
        let heartbeat = match (self.heartbeat_interval, &self.heartbeat_topic) {
            (Some(every), topic) => {
                if every < Duration::from_millis(100) {
                    return Err("heartbeat_interval: must be at least 100ms".into());
                }
                let topic = topic
                    .clone()
                    .unwrap_or_else(|| format!("__debezium-heartbeat.{prefix}"));
                check_topic_chars("heartbeat_topic", &topic)?;
                Some((every, topic))
            }
            (None, Some(_)) => return Err("heartbeat_topic needs heartbeat_interval".into()),
            (None, None) => None,
        };
        if self.partitions == Some(0) || self.replication_factor == Some(0) {
            return Err("partitions and replication_factor must be at least 1".into());
        }

        let mut client = self.security()?;
        for (key, value) in &self.librdkafka {
            if let Some((_, why)) = RESERVED.iter().find(|(k, _)| k == key) {
                return Err(format!("librdkafka.{key}: Courier sets it ({why})"));
            }
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "librdkafka.{key}: give a string, number or boolean"
                    ))
                }
            };
            client.push((key.clone(), text));
        }
        Ok(Settings {
            brokers: brokers.join(","),
            selection,
            prefix,
            topic,
            format: self.format,
            decimal_handling: self.decimal_handling,
            tombstones: self.tombstones.unwrap_or(true),
            exactly_once,
            create_topics: self.create_topics.unwrap_or(true),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            compact: self.compact,
            delivery_timeout,
            transaction_topic,
            heartbeat,
            client,
        })
    }

    /// `security.protocol` and the TLS and SASL settings.
    fn security(&self) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let tls = self.tls || self.tls_ca_file.is_some();
        if let Some(ca) = &self.tls_ca_file {
            if !ca.is_file() {
                return Err(format!(
                    "tls_ca_file: {} is not a readable file",
                    ca.display()
                ));
            }
            out.push(("ssl.ca.location".into(), ca.display().to_string()));
        }
        let sasl = match self.sasl_mechanism.as_deref() {
            None => {
                if self.sasl_username.is_some() || self.sasl_password.is_some() {
                    return Err("sasl_username and sasl_password need sasl_mechanism".into());
                }
                false
            }
            Some(m @ ("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")) => {
                let (Some(user), Some(password)) = (&self.sasl_username, &self.sasl_password)
                else {
                    return Err(format!(
                        "sasl_mechanism = {m:?} needs sasl_username and sasl_password"
                    ));
                };
                out.push(("sasl.mechanism".into(), m.into()));
                out.push(("sasl.username".into(), user.clone()));
                out.push(("sasl.password".into(), password.clone()));
                true
            }
            Some(other) => {
                return Err(format!(
                    "sasl_mechanism: {other:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
                ))
            }
        };
        let protocol = match (tls, sasl) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        out.push(("security.protocol".into(), protocol.into()));
        Ok(out)
    }
}

fn check_topic_chars(key: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "{key}: {s:?} must be non-empty ASCII letters, digits, '.', '_' or '-' (Kafka's topic characters)"
        ));
    }
    Ok(())
}

/// A topic name template with `{prefix}` already filled in; `{schema}` and
/// `{table}` are filled per table.
#[derive(Clone, Debug)]
pub(crate) struct TopicTemplate(String);

impl TopicTemplate {
    fn parse(template: &str, prefix: &str) -> Result<Self, String> {
        let filled = template.replace("{prefix}", prefix);
        let probe = filled.replace("{schema}", "s").replace("{table}", "t");
        if probe.contains(['{', '}']) {
            return Err(format!(
                "topic: {template:?} has an unknown placeholder; use {{prefix}}, {{schema}} and {{table}}"
            ));
        }
        check_topic_chars("topic", &probe)?;
        Ok(TopicTemplate(filled))
    }

    /// The topic of `schema.table`. Characters Kafka does not allow in a
    /// topic name become `_`, as Debezium's topic naming does.
    pub fn render(&self, schema: &str, table: &str) -> String {
        let clean = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        self.0
            .replace("{schema}", &clean(schema))
            .replace("{table}", &clean(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SourceInfo {
        SourceInfo {
            name: "courier".into(),
            database: "shop".into(),
        }
    }

    fn parse(text: &str) -> Result<Settings, String> {
        let c: KafkaSinkConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
        c.validate("bus", &source())
    }

    #[test]
    fn defaults_follow_debezium_naming() {
        let s = parse("brokers = \"h1:9092, h2:9092\"").unwrap();
        assert_eq!(s.brokers, "h1:9092,h2:9092");
        assert_eq!(s.topic.render("public", "orders"), "courier.public.orders");
        assert_eq!(
            s.topic.render("public", "my table"),
            "courier.public.my_table"
        );
        assert!(s.tombstones && s.create_topics && s.exactly_once.is_none());
        let s = parse(
            "brokers = [\"h:1\"]\ntopic_prefix = \"shop\"\nexactly_once = true\nformat = \"json-schema\"",
        )
        .unwrap();
        assert_eq!(s.topic.render("a", "b"), "shop.a.b");
        assert_eq!(
            s.exactly_once,
            Some(("courier-shop-bus".into(), "courier-offsets".into()))
        );
        assert_eq!(s.format, Format::JsonSchema);
    }

    #[test]
    fn rejects_bad_settings_by_name() {
        for (text, words) in [
            ("brokers = \"\"", "brokers"),
            ("brokers = \"kafka://h:1\"", "without a scheme"),
            (
                "brokers = \"h:1\"\ntopic = \"{db}.{table}\"",
                "unknown placeholder",
            ),
            (
                "brokers = \"h:1\"\n[librdkafka]\nacks = \"1\"",
                "librdkafka.acks",
            ),
            (
                "brokers = \"h:1\"\nsasl_mechanism = \"PLAIN\"",
                "sasl_username",
            ),
            ("brokers = \"h:1\"\nsasl_mechanism = \"GSSAPI\"", "GSSAPI"),
            (
                "brokers = \"h:1\"\ntransactional_id = \"x\"",
                "exactly_once",
            ),
            ("brokers = \"h:1\"\nformat = \"avro\"", "format: \"avro\""),
            (
                "brokers = \"h:1\"\ndecimal_handling = \"exact\"",
                "decimal_handling: \"exact\"",
            ),
            ("brokers = \"h:1\"\nbogus = 1", "bogus"),
        ] {
            let err = parse(text).err().unwrap_or_else(|| panic!("{text} passed"));
            assert!(err.contains(words), "{text}: {err}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c: KafkaSinkConfig = toml::from_str(
            "brokers = \"h:1\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password = \"hunter2\"\n[librdkafka]\n\"ssl.key.password\" = \"hunter3\"",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        let s = c.validate("bus", &source()).unwrap();
        assert!(s.client.iter().any(|(k, _)| k == "security.protocol"));
    }
}
