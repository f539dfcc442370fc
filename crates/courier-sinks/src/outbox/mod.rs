//! The outbox event router: rows inserted into an outbox table (or
//! transactional `pg_logical_emit_message` messages) in the application's
//! own transactions become events, as Debezium's EventRouter makes them.
//!
//! ```toml
//! [outbox.orders]
//! table = "public.outbox"                 # or messages = "orders"
//! sink = "bus"                            # a kafka, stdout or file sink
//! topic = "outbox.event.{aggregatetype}"  # {field}: any column (message field)
//! # columns = { id = "id", key = "aggregateid", type = "type", payload = "payload", route_by = "aggregatetype", timestamp = "created_at" }
//! # additional = [{ column = "type", placement = "header", name = "eventType" }]
//! # expand_json_payload = true
//! # on_update = "warn"                    # or "error", "route"
//! # dead_letter_topic = "outbox.dead_letter"
//! ```
//!
//! # Events
//!
//! * **Topic**: the template with each `{field}` replaced by the field's
//!   value; the default `outbox.event.{aggregatetype}` is Debezium's
//!   `route.topic.replacement`. A topic Kafka would refuse (a character
//!   outside `[a-zA-Z0-9._-]`, more than 249 characters) is bad input.
//! * **Key**: the key column (`aggregateid`) in its Debezium form, as
//!   JSON: a text id is `"42"`, a bigint `42`, a null one `null`.
//!   The producer partitions by it, so one aggregate's events stay in
//!   commit order.
//! * **Value**: the payload alone, or, with envelope fields,
//!   `{"payload": ..., "<field>": ...}`. A `jsonb` payload is the string
//!   holding the document, or with `expand_json_payload` the document
//!   itself; a null payload is JSON's `null` (a tombstone, a record without
//!   a value, only with `tombstone_on_empty_payload`), as Debezium's
//!   JsonConverter writes them.
//! * **Headers**: `id`, the event id (consumers deduplicate on it), then
//!   the additional header columns, each a string as its text and anything
//!   else as its JSON, as a Connect worker's default header converter
//!   writes Debezium's values.
//! * **Timestamp**: the timestamp column's, else the commit time.
//!
//! Deletes and truncates of outbox rows produce nothing, so a transaction
//! may insert an event row and delete it again: the table stays empty and
//! the event is still published. Updates do what `on_update` says.
//!
//! # Sources
//!
//! The changes arrive as outbox sources ([`Change::outbox`]): the decoder
//! marks the changes of outbox tables and turns each transactional message
//! of an outbox prefix into a change of its own, in its place in the
//! transaction, so events keep the stream's order and versions, and a sink
//! publishes them in the same unit of work as its other records (with the
//! Kafka sink's `exactly_once`, in the same transaction).

mod check;
mod config;
mod event;
mod fields;
mod json;
mod line;

use std::collections::HashMap;

use courier_core::{Change, SinkError, SinkErrorKind};

pub use config::{
    Additional, AdditionalConfig, Columns, ColumnsConfig, OnUpdate, Placement, Router,
    RouterConfig, Source, TopicTemplate,
};
pub use event::Event;
pub(crate) use line::write_line;

use event::{RouteError, Routed};

/// The outbox routers of one sink, and the counts of what they routed
/// since the sink last applied its work.
#[derive(Debug, Default)]
pub struct Routers {
    routers: Vec<Router>,
    pending: Counts,
}

/// Routed, skipped and dead-lettered events per router, not yet published
/// as metrics.
#[derive(Debug, Default)]
struct Counts {
    events: HashMap<usize, HashMap<String, u64>>,
    skipped: HashMap<(usize, &'static str), u64>,
    dead_letters: HashMap<usize, u64>,
}

impl Routers {
    pub fn new(routers: Vec<Router>) -> Self {
        Routers {
            routers,
            pending: Counts::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
    }

    /// The name of the router at `index` (as [`Routers::route`] gives it).
    pub fn name(&self, index: usize) -> &str {
        &self.routers[index].name
    }

    /// Appends to `out` the event `change` makes for each router of this
    /// sink that routes it, with the router's index. A change that cannot
    /// become an event goes to its router's dead-letter topic, or is an
    /// error naming the router, source, event id, LSN and fix.
    pub fn route(
        &mut self,
        change: &Change,
        out: &mut Vec<(usize, Event)>,
    ) -> Result<(), SinkError> {
        for (i, r) in self.routers.iter().enumerate() {
            if !r.routes(change) {
                continue;
            }
            match r.route(change) {
                Ok(Routed::Event(e)) => {
                    *self.pending.events.entry(i).or_default().entry(e.topic.clone()).or_default() += 1;
                    out.push((i, e));
                }
                Ok(Routed::Skipped(op)) => {
                    if op == "update" {
                        tracing::warn!(router = %r.name, lsn = %change.version(),
                            "an UPDATE of an outbox row is not an event (on_update = \"warn\"); skipped");
                    }
                    *self.pending.skipped.entry((i, op)).or_default() += 1;
                }
                Err(RouteError::Update) => {
                    return Err(error(
                        r,
                        change,
                        format!(
                            "outbox {} ({}): an UPDATE of an outbox row; fix: insert (and delete) outbox rows only, \
                             or set outbox.{}.on_update = \"warn\" (skip updates) or \"route\" (publish the new row)",
                            r.name, r.source, r.name
                        ),
                    ))
                }
                Err(RouteError::Bad { id, bad }) => {
                    let event = match &id {
                        Some(id) => format!("event {id:?}"),
                        None => "an event".to_string(),
                    };
                    let reason = format!("{event}: {}", bad.reason);
                    match &r.dead_letter_topic {
                        Some(topic) => {
                            tracing::warn!(router = %r.name, lsn = %change.version(), %topic,
                                "an outbox event cannot be routed; sent to the dead-letter topic");
                            *self.pending.dead_letters.entry(i).or_default() += 1;
                            out.push((i, r.dead_letter(change, topic, id.as_deref(), &reason)));
                        }
                        None => {
                            return Err(error(
                                r,
                                change,
                                format!(
                                    "outbox {} ({}): {reason}; fix: {}, or set outbox.{}.dead_letter_topic \
                                     to send such events there instead of stopping",
                                    r.name, r.source, bad.fix, r.name
                                ),
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The sink applied everything routed since the last call: the counts
    /// go to `courier_outbox_events_total{router, topic}`,
    /// `courier_outbox_skipped_total{router, op}` and
    /// `courier_outbox_dead_letters_total{router}`.
    pub fn applied(&mut self) {
        let counts = std::mem::take(&mut self.pending);
        for (i, topics) in counts.events {
            for (topic, n) in topics {
                metrics::counter!("courier_outbox_events_total",
                    "router" => self.routers[i].name.clone(), "topic" => topic)
                .increment(n);
            }
        }
        for ((i, op), n) in counts.skipped {
            metrics::counter!("courier_outbox_skipped_total",
                "router" => self.routers[i].name.clone(), "op" => op)
            .increment(n);
        }
        for (i, n) in counts.dead_letters {
            metrics::counter!("courier_outbox_dead_letters_total",
                "router" => self.routers[i].name.clone())
            .increment(n);
        }
    }

    /// The sink failed to apply what was routed: the counts are dropped
    /// (the retry routes the same changes again).
    pub fn discard(&mut self) {
        self.pending = Counts::default();
    }
}

/// A fatal error of `router` for `change`, naming the table (for a table
/// source) and the LSN.
fn error(router: &Router, change: &Change, message: String) -> SinkError {
    let e = SinkError::new(SinkErrorKind::Rejected, message).with_lsn(change.version());
    match &router.source {
        Source::Table(t) => e.with_table(t),
        Source::Messages(_) => e,
    }
}

#[cfg(test)]
mod tests;
