//! `[outbox.NAME]`: a router's settings as written, and the validated
//! [`Router`] they become.

use courier_core::{TableFilter, TableId};
use serde::Deserialize;

/// One `[outbox.NAME]` table as written (unknown keys are errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The outbox table, `schema.table` (or `table` in `public`).
    pub table: Option<String>,
    /// Instead of a table: the prefix of the `pg_logical_emit_message`
    /// messages whose content is the event.
    pub messages: Option<String>,
    /// The sink the events go to (`kafka`, `stdout` or `file`).
    pub sink: String,
    /// The topic of an event, with `{field}` for any column (or message
    /// field); default `outbox.event.{<route_by>}`, Debezium's
    /// `route.topic.replacement`.
    pub topic: Option<String>,
    /// Which column holds what (Debezium's `table.field.event.*`).
    #[serde(default)]
    pub columns: ColumnsConfig,
    /// Columns copied into a header, the value's envelope or the partition
    /// (Debezium's `table.fields.additional.placement`).
    #[serde(default)]
    pub additional: Vec<AdditionalConfig>,
    /// The payload (`json`, `jsonb` or `text` holding JSON) travels as a
    /// JSON value rather than a string holding it (Debezium's
    /// `table.expand.json.payload`).
    #[serde(default)]
    pub expand_json_payload: bool,
    /// What an UPDATE of an outbox row does: `warn`, `error` or `route`.
    pub on_update: Option<String>,
    /// A null or blank payload makes a tombstone (null value), also when
    /// the value has envelope fields (Debezium's
    /// `route.tombstone.on.empty.payload`).
    #[serde(default)]
    pub tombstone_on_empty_payload: bool,
    /// Where an event that cannot be routed goes instead of stopping
    /// Courier (a topic of the router's sink).
    pub dead_letter_topic: Option<String>,
}

/// `columns = { ... }`: the column (or message field) of each part of an
/// event; Debezium's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnsConfig {
    pub id: Option<String>,
    pub key: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub payload: Option<String>,
    pub route_by: Option<String>,
    pub timestamp: Option<String>,
}

/// One item of `additional = [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdditionalConfig {
    pub column: String,
    /// `header`, `envelope` or `partition`.
    pub placement: String,
    /// The header's or envelope field's name (default: the column's).
    pub name: Option<String>,
}

/// Where a router's events come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Rows inserted into this table.
    Table(TableId),
    /// Transactional `pg_logical_emit_message` messages with this prefix.
    Messages(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Table(t) => write!(f, "table {t}"),
            Source::Messages(p) => write!(f, "messages of prefix {p:?}"),
        }
    }
}

/// The column (or message field) of each part of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    /// The event id, sent as header `id` (consumers deduplicate on it).
    pub id: String,
    /// The record key (the aggregate id).
    pub key: String,
    /// The event type; like Debezium's, it reaches the record only when
    /// named in `additional`.
    pub event_type: String,
    /// The record value.
    pub payload: String,
    /// The column of the default topic, `outbox.event.{route_by}`.
    pub route_by: String,
    /// The record timestamp (default: the commit time).
    pub timestamp: Option<String>,
}

/// Where an additional column goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A record header.
    Header,
    /// A field of the value, beside `payload`.
    Envelope,
    /// The record's partition (an integer column).
    Partition,
}

/// An additional column and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Additional {
    pub column: String,
    pub placement: Placement,
    /// The header or envelope field name.
    pub name: String,
}

/// What an UPDATE of an outbox row does. Outbox rows are meant to be
/// inserted (and deleted) only; an update is usually a mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUpdate {
    /// Skip it, count it and log a warning (Debezium's default).
    Warn,
    /// Stop Courier, naming the router and LSN.
    Error,
    /// Route the new row as an event.
    Route,
}

/// A topic name with `{field}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    /// Literal text and placeholders, in order.
    parts: Vec<TopicPart>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TopicPart {
    Literal(String),
    Field(String),
}

impl TopicTemplate {
    fn parse(key: &str, template: &str) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!("{key}: {template:?} has a '}}' without its '{{'"));
            }
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                return Err(format!("{key}: {template:?} has a '{{' without its '}}'"));
            };
            let field = &rest[open + 1..close];
            if field.is_empty() || field.contains('{') {
                return Err(format!(
                    "{key}: {template:?} has an empty or nested placeholder; write {{column}}"
                ));
            }
            if open > 0 {
                parts.push(TopicPart::Literal(rest[..open].to_string()));
            }
            parts.push(TopicPart::Field(field.to_string()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TopicPart::Literal(rest.to_string()));
        }
        for p in &parts {
            if let TopicPart::Literal(text) = p {
                if !text.chars().all(is_topic_char) {
                    return Err(format!(
                        "{key}: {template:?} has characters Kafka does not allow in a topic name \
                         (use ASCII letters, digits, '.', '_' and '-')"
                    ));
                }
            }
        }
        if parts.is_empty() {
            return Err(format!("{key}: the topic is empty"));
        }
        Ok(TopicTemplate { parts })
    }

    /// The placeholders' fields, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TopicPart::Field(f) => Some(f.as_str()),
            TopicPart::Literal(_) => None,
        })
    }

    /// The topic with each placeholder replaced by `value(field)`, or the
    /// first error `value` returns.
    pub fn render<E>(&self, mut value: impl FnMut(&str) -> Result<String, E>) -> Result<String, E> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                TopicPart::Literal(text) => out.push_str(text),
                TopicPart::Field(f) => out.push_str(&value(f)?),
            }
        }
        Ok(out)
    }
}

/// A character Kafka allows in a topic name.
pub(crate) fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Why `topic` cannot be a Kafka topic name, without quoting it.
pub(crate) fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("is empty")
    } else if topic == "." || topic == ".." {
        Some("is \".\" or \"..\"")
    } else if topic.len() > 249 {
        Some("is longer than the 249 characters Kafka allows")
    } else if !topic.chars().all(is_topic_char) {
        Some("has characters Kafka does not allow in a topic name (ASCII letters, digits, '.', '_' and '-' only)")
    } else {
        None
    }
}

/// A validated outbox router: where its events come from, how they are
/// built and which sink they go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Router {
    pub name: String,
    pub source: Source,
    pub sink: String,
    pub topic: TopicTemplate,
    pub columns: Columns,
    pub additional: Vec<Additional>,
    pub expand_json_payload: bool,
    pub on_update: OnUpdate,
    pub tombstone_on_empty_payload: bool,
    pub dead_letter_topic: Option<String>,
}

impl RouterConfig {
    /// Checks the settings of router `name`; the error names the key
    /// (`outbox.NAME.key`) and how to fix it.
    pub fn validate(self, name: &str) -> Result<Router, String> {
        let key = |k: &str| format!("outbox.{name}.{k}");
        let source = match (self.table, self.messages) {
            (Some(t), None) => {
                let filter = TableFilter::new(&[&t]).map_err(|e| format!("{}: {e}", key("table")))?;
                let exact = filter.exact_tables().next();
                match exact {
                    Some(id) => Source::Table(id),
                    None => {
                        return Err(format!(
                            "{}: {t:?} is a pattern; name one table, e.g. \"public.outbox\"",
                            key("table")
                        ))
                    }
                }
            }
            (None, Some(prefix)) if !prefix.is_empty() => Source::Messages(prefix),
            (None, Some(_)) => {
                return Err(format!(
                    "{}: give the prefix of pg_logical_emit_message(true, '<prefix>', content)",
                    key("messages")
                ))
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "outbox.{name}: set table or messages, not both (one router per source)"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "outbox.{name}: set table = \"public.outbox\" (an outbox table) or messages = \"<prefix>\" \
                     (pg_logical_emit_message(true, '<prefix>', content))"
                ))
            }
        };
        let c = self.columns;
        let column = |k: &str, v: Option<String>, default: &str| -> Result<String, String> {
            match v {
                Some(v) if v.is_empty() => Err(format!("{}: name a column", key(k))),
                Some(v) => Ok(v),
                None => Ok(default.to_string()),
            }
        };
        let route_by_set = c.route_by.is_some();
        let columns = Columns {
            id: column("columns.id", c.id, "id")?,
            key: column("columns.key", c.key, "aggregateid")?,
            event_type: column("columns.type", c.event_type, "type")?,
            payload: column("columns.payload", c.payload, "payload")?,
            route_by: column("columns.route_by", c.route_by, "aggregatetype")?,
            timestamp: match c.timestamp {
                Some(t) if t.is_empty() => {
                    return Err(format!("{}: name a column", key("columns.timestamp")))
                }
                t => t,
            },
        };
        let topic = match self.topic {
            Some(t) => {
                let template = TopicTemplate::parse(&key("topic"), &t)?;
                if route_by_set && !template.fields().any(|f| f == columns.route_by) {
                    return Err(format!(
                        "{}: columns.route_by = {:?} only chooses the default topic; with topic set, \
                         put {{{}}} in it or leave route_by out",
                        key("columns.route_by"),
                        columns.route_by,
                        columns.route_by
                    ));
                }
                template
            }
            None => TopicTemplate::parse(
                &key("topic"),
                &format!("outbox.event.{{{}}}", columns.route_by),
            )?,
        };
        let mut additional = Vec::new();
        for (i, a) in self.additional.into_iter().enumerate() {
            let at = key(&format!("additional[{i}]"));
            if a.column.is_empty() {
                return Err(format!("{at}.column: name a column"));
            }
            let placement = match a.placement.as_str() {
                "header" => Placement::Header,
                "envelope" => Placement::Envelope,
                "partition" => Placement::Partition,
                other => {
                    return Err(format!(
                        "{at}.placement: {other:?} is not a placement; use \"header\", \"envelope\" or \"partition\""
                    ))
                }
            };
            let item_name = a.name.unwrap_or_else(|| a.column.clone());
            if placement == Placement::Header && item_name == "id" {
                return Err(format!(
                    "{at}.name: header \"id\" is the event id's; choose another name"
                ));
            }
            if placement == Placement::Envelope && item_name == "payload" {
                return Err(format!(
                    "{at}.name: envelope field \"payload\" is the payload's; choose another name"
                ));
            }
            let clash = additional.iter().any(|b: &Additional| {
                b.placement == placement
                    && (b.name == item_name || placement == Placement::Partition)
            });
            if clash {
                return Err(format!(
                    "{at}: a second {} named {item_name:?}",
                    a.placement
                ));
            }
            additional.push(Additional {
                column: a.column,
                placement,
                name: item_name,
            });
        }
        let on_update = match self.on_update.as_deref() {
            None | Some("warn") => OnUpdate::Warn,
            Some("error") => OnUpdate::Error,
            Some("route") => OnUpdate::Route,
            Some(other) => {
                return Err(format!(
                    "{}: {other:?} is not a choice; use \"warn\" (skip and count), \"error\" (stop) or \"route\" (publish the new row)",
                    key("on_update")
                ))
            }
        };
        if let Some(t) = &self.dead_letter_topic {
            if let Some(problem) = topic_problem(t) {
                return Err(format!("{}: the topic {problem}", key("dead_letter_topic")));
            }
        }
        if self.sink.is_empty() {
            return Err(format!("{}: name a sink, e.g. sink = \"bus\"", key("sink")));
        }
        Ok(Router {
            name: name.to_string(),
            source,
            sink: self.sink,
            topic,
            columns,
            additional,
            expand_json_payload: self.expand_json_payload,
            on_update,
            tombstone_on_empty_payload: self.tombstone_on_empty_payload,
            dead_letter_topic: self.dead_letter_topic,
        })
    }
}

impl Router {
    /// Every column (or message field) the router reads, with what it is
    /// for, in the order an event is built.
    pub fn fields(&self) -> Vec<(&str, String)> {
        let c = &self.columns;
        let mut out = vec![
            (c.id.as_str(), "columns.id".to_string()),
            (c.key.as_str(), "columns.key".to_string()),
            (c.payload.as_str(), "columns.payload".to_string()),
        ];
        for f in self.topic.fields() {
            out.push((f, "topic".to_string()));
        }
        if let Some(t) = &c.timestamp {
            out.push((t.as_str(), "columns.timestamp".to_string()));
        }
        for (i, a) in self.additional.iter().enumerate() {
            out.push((a.column.as_str(), format!("additional[{i}]")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(text: &str) -> Result<Router, String> {
        let config: RouterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate("orders")
    }

    #[test]
    fn defaults_are_debeziums() {
        let r = router("table = \"public.outbox\"\nsink = \"bus\"").unwrap();
        assert_eq!(r.source, Source::Table(TableId::new("public", "outbox")));
        assert_eq!(r.columns.id, "id");
        assert_eq!(r.columns.key, "aggregateid");
        assert_eq!(r.columns.payload, "payload");
        assert_eq!(r.columns.route_by, "aggregatetype");
        assert_eq!(r.on_update, OnUpdate::Warn);
        let topic = r.topic.render(|f| Ok::<_, ()>(format!("<{f}>"))).unwrap();
        assert_eq!(topic, "outbox.event.<aggregatetype>");
        let r = router("table = \"outbox\"\nsink = \"bus\"\ncolumns = { route_by = \"kind\" }")
            .unwrap();
        assert_eq!(r.source, Source::Table(TableId::new("public", "outbox")));
        let topic = r.topic.render(|f| Ok::<_, ()>(format!("<{f}>"))).unwrap();
        assert_eq!(topic, "outbox.event.<kind>");
    }

    #[test]
    fn templates_name_any_field() {
        let r = router(
            "messages = \"orders\"\nsink = \"bus\"\ntopic = \"{tenant}.events.{aggregatetype}-v1\"",
        )
        .unwrap();
        assert_eq!(r.source, Source::Messages("orders".into()));
        assert_eq!(
            r.topic.fields().collect::<Vec<_>>(),
            ["tenant", "aggregatetype"]
        );
        let topic = r.topic.render(|f| Ok::<_, ()>(f.to_uppercase())).unwrap();
        assert_eq!(topic, "TENANT.events.AGGREGATETYPE-v1");
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let cases = [
            ("sink = \"bus\"", "set table"),
            ("table = \"a\"\nmessages = \"b\"\nsink = \"bus\"", "not both"),
            ("table = \"public.*\"\nsink = \"bus\"", "outbox.orders.table"),
            ("table = \"t\"\nsink = \"bus\"\ntopic = \"a b.{x}\"", "outbox.orders.topic"),
            ("table = \"t\"\nsink = \"bus\"\ntopic = \"a.{x\"", "without its '}'"),
            ("table = \"t\"\nsink = \"bus\"\ntopic = \"a.{}\"", "empty or nested"),
            ("table = \"t\"\nsink = \"bus\"\non_update = \"skip\"", "outbox.orders.on_update"),
            (
                "table = \"t\"\nsink = \"bus\"\nadditional = [{ column = \"c\", placement = \"body\" }]",
                "additional[0].placement",
            ),
            (
                "table = \"t\"\nsink = \"bus\"\nadditional = [{ column = \"c\", placement = \"header\", name = \"id\" }]",
                "header \"id\"",
            ),
            (
                "table = \"t\"\nsink = \"bus\"\ntopic = \"events\"\ncolumns = { route_by = \"kind\" }",
                "columns.route_by",
            ),
            ("table = \"t\"\nsink = \"bus\"\ndead_letter_topic = \"dead letters\"", "dead_letter_topic"),
            ("table = \"t\"\nsink = \"bus\"\ncolumns = { idd = \"x\" }", "idd"),
        ];
        for (text, expected) in cases {
            let e = router(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn topic_names_kafka_refuses_are_named() {
        assert_eq!(topic_problem("outbox.event.order"), None);
        assert!(topic_problem("").is_some());
        assert!(topic_problem("..").is_some());
        assert!(topic_problem("a b").is_some());
        assert!(topic_problem("é").is_some());
        assert!(topic_problem(&"a".repeat(250)).is_some());
    }
}
