//! One outbox change → the event Debezium's EventRouter makes of it: topic,
//! key, value, headers, partition and timestamp.

use courier_core::{write_json_string, Change, Op, OutboxSource, MESSAGE_SCHEMA};

use super::config::{OnUpdate, Placement, Router, Source};
use super::fields::{Bad, Field, Fields};

/// An event, ready for any sink: the record Debezium's EventRouter would
/// hand to Kafka for the same outbox row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    /// JSON (`null` when the key column is); `None` only for a
    /// dead-letter event.
    pub key: Option<Vec<u8>>,
    /// JSON; `None` for a tombstone (`tombstone_on_empty_payload`).
    pub value: Option<Vec<u8>>,
    /// `id` (the event id) first, then the additional headers in their
    /// order; `None` is a header with a null value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The partition an additional column chose, else the key's.
    pub partition: Option<i32>,
    /// Milliseconds since the epoch: the timestamp column's, else the
    /// transaction's commit time.
    pub timestamp_ms: i64,
}

/// What a router makes of one outbox change.
#[derive(Debug)]
pub(crate) enum Routed {
    Event(Event),
    /// Nothing, by design: a delete or truncate of outbox rows, or an
    /// update with `on_update = "warn"`; the operation, for counting.
    Skipped(&'static str),
}

/// Why a router could not make an event of a change.
#[derive(Debug)]
pub(crate) enum RouteError {
    /// The change cannot become an event (bad input); it may go to the
    /// dead-letter topic.
    Bad {
        /// The event id, when it was read.
        id: Option<String>,
        bad: Bad,
    },
    /// An update of an outbox row with `on_update = "error"`.
    Update,
}

impl Router {
    /// Whether `change` is one of this router's sources.
    pub fn routes(&self, change: &Change) -> bool {
        match (&self.source, change.outbox()) {
            (Source::Table(t), Some(OutboxSource::Table)) => change.relation().id == *t,
            (Source::Messages(p), Some(OutboxSource::Message)) => {
                let id = &change.relation().id;
                id.schema == MESSAGE_SCHEMA && id.name == *p
            }
            _ => false,
        }
    }

    /// The event of `change` (one of [`Router::routes`]'s), or why there is
    /// none.
    pub(crate) fn route(&self, change: &Change) -> Result<Routed, RouteError> {
        match change.op() {
            Op::Delete => return Ok(Routed::Skipped("delete")),
            Op::Truncate => return Ok(Routed::Skipped("truncate")),
            Op::Update => match self.on_update {
                OnUpdate::Warn => return Ok(Routed::Skipped("update")),
                OnUpdate::Error => return Err(RouteError::Update),
                OnUpdate::Route => {}
            },
            Op::Insert | Op::Read => {}
        }
        fn bad(id: Option<&str>) -> impl FnOnce(Bad) -> RouteError + '_ {
            move |bad| RouteError::Bad {
                id: id.map(str::to_string),
                bad,
            }
        }
        let fields = Fields::of(change).map_err(bad(None))?;
        let id_field = self
            .field(&fields, &self.columns.id, || "columns.id".into())
            .map_err(bad(None))?;
        let id = id_field.header().map_err(bad(None))?.ok_or_else(|| {
            bad(None)(Bad::new(
                format!("{}, the event id, is null", id_field.describe()),
                "give every event an id (consumers deduplicate on it)",
            ))
        })?;
        let id_text = String::from_utf8_lossy(&id).into_owned();
        self.event(change, &fields, id)
            .map(Routed::Event)
            .map_err(bad(Some(&id_text)))
    }

    /// The event's parts, once its id is known.
    fn event(&self, change: &Change, fields: &Fields<'_>, id: Vec<u8>) -> Result<Event, Bad> {
        let c = &self.columns;
        // A null key column is JSON's null too, as JsonConverter writes a
        // null of a known schema: the key bytes `null`, one partition.
        let mut key = Vec::new();
        self.field(fields, &c.key, || "columns.key".into())?
            .write_json(&mut key)?;
        let payload_field = self.field(fields, &c.payload, || "columns.payload".into())?;
        let payload = payload_field.payload(self.expand_json_payload)?;
        let empty = payload.is_none() || payload_field.is_blank();

        let topic = self
            .topic
            .render(|name| self.field(fields, name, || "topic".into())?.topic_text())?;
        if let Some(problem) = super::config::topic_problem(&topic) {
            return Err(Bad::new(
                format!("the topic its fields make ({}) {problem}", self.topic_fields()),
                "keep the routing values to letters, digits, '.', '_' and '-', or change the router's topic",
            ));
        }

        let timestamp_ms = match &c.timestamp {
            Some(name) => self
                .field(fields, name, || "columns.timestamp".into())?
                .timestamp_ms()?,
            None => None,
        }
        .unwrap_or_else(|| change.commit_time_us().div_euclid(1000));

        let mut headers = vec![("id".to_string(), Some(id))];
        let mut envelope: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut partition = None;
        for (i, a) in self.additional.iter().enumerate() {
            let f = self.field(fields, &a.column, || format!("additional[{i}]"))?;
            match a.placement {
                Placement::Header => headers.push((a.name.clone(), f.header()?)),
                Placement::Envelope => {
                    let mut v = Vec::new();
                    f.write_json(&mut v)?;
                    envelope.push((&a.name, v));
                }
                Placement::Partition => partition = f.partition()?,
            }
        }

        let value = if self.tombstone_on_empty_payload && empty {
            None
        } else if envelope.is_empty() {
            // A null payload is JSON's null, not a tombstone: what
            // JsonConverter writes for a null value of a known schema.
            Some(payload.unwrap_or_else(|| b"null".to_vec()))
        } else {
            let mut v = b"{\"payload\":".to_vec();
            v.extend_from_slice(payload.as_deref().unwrap_or(b"null"));
            for (name, json) in envelope {
                v.push(b',');
                write_json_string(&mut v, name);
                v.push(b':');
                v.extend_from_slice(&json);
            }
            v.push(b'}');
            Some(v)
        };
        Ok(Event {
            topic,
            key: Some(key),
            value,
            headers,
            partition,
            timestamp_ms,
        })
    }

    /// The field `name` (read for the setting `setting` names), or an
    /// error naming both.
    fn field<'s>(
        &self,
        fields: &'s Fields<'_>,
        name: &'s str,
        setting: impl FnOnce() -> String,
    ) -> Result<Field<'s>, Bad> {
        fields.get(name).ok_or_else(|| {
            let setting = setting();
            let (what, add) = match fields {
                Fields::Row { .. } => ("row has no column", "add the column to the outbox table"),
                Fields::Message(_) => (
                    "message has no field",
                    "add the field to every message's JSON object",
                ),
            };
            Bad::new(
                format!("the {what} {name:?} ({setting})"),
                format!(
                    "{add}, or set outbox.{}.{} to the one that holds it",
                    self.name,
                    fix_key(&setting)
                ),
            )
        })
    }

    fn topic_fields(&self) -> String {
        let names: Vec<String> = self.topic.fields().map(|f| format!("{f:?}")).collect();
        names.join(", ")
    }

    /// A dead-letter event for `change`, which could not be routed
    /// because of `reason`: on the dead-letter topic, the event id (when
    /// known) as header `id`, and a JSON value naming the router, source,
    /// LSN and reason, with the row (or message) that failed.
    pub(crate) fn dead_letter(
        &self,
        change: &Change,
        topic: &str,
        id: Option<&str>,
        reason: &str,
    ) -> Event {
        let mut v = b"{\"router\":".to_vec();
        write_json_string(&mut v, &self.name);
        match &self.source {
            Source::Table(t) => {
                v.extend_from_slice(b",\"table\":");
                write_json_string(&mut v, &t.to_string());
            }
            Source::Messages(p) => {
                v.extend_from_slice(b",\"prefix\":");
                write_json_string(&mut v, p);
            }
        }
        v.extend_from_slice(b",\"event_id\":");
        match id {
            Some(id) => write_json_string(&mut v, id),
            None => v.extend_from_slice(b"null"),
        }
        v.extend_from_slice(b",\"lsn\":");
        v.extend_from_slice(change.version().as_u64().to_string().as_bytes());
        v.extend_from_slice(b",\"lsn_text\":");
        write_json_string(&mut v, &change.version().to_string());
        v.extend_from_slice(b",\"txId\":");
        v.extend_from_slice(change.xid().to_string().as_bytes());
        v.extend_from_slice(b",\"op\":");
        write_json_string(&mut v, change.op().code());
        v.extend_from_slice(b",\"reason\":");
        write_json_string(&mut v, reason);
        match Fields::of(change) {
            Ok(fields) => {
                v.extend_from_slice(b",\"fields\":");
                fields.write_all(&mut v);
            }
            Err(_) => {
                // A message that is not a JSON object: its content as text.
                v.extend_from_slice(b",\"content\":");
                let content = match change.after().and_then(|r| r.first()) {
                    Some(courier_core::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                write_json_string(&mut v, &content);
            }
        }
        v.push(b'}');
        Event {
            topic: topic.to_string(),
            key: None,
            value: Some(v),
            headers: vec![("id".to_string(), id.map(|i| i.as_bytes().to_vec()))],
            partition: None,
            timestamp_ms: change.commit_time_us().div_euclid(1000),
        }
    }
}

/// The key to change for a field read as `setting`.
fn fix_key(setting: &str) -> &str {
    match setting {
        "topic" => "topic",
        s if s.starts_with("additional") => "additional",
        s => s,
    }
}
