//! An outbox change → the records of its events (see [`crate::outbox`]):
//! the outbox's counterpart of [`super::encode`], written by the same
//! producer, in the same transactions, with the same error handling.

use courier_core::{Change, SinkError};

use super::encode::Record;
use crate::outbox::{Event, Routers};

/// Turns outbox changes into records, for the routers of this sink.
#[derive(Default)]
pub(crate) struct OutboxRecords {
    routers: Routers,
    events: Vec<(usize, Event)>,
    records: Vec<Record>,
}

impl OutboxRecords {
    pub fn new(routers: Routers) -> Self {
        OutboxRecords {
            routers,
            ..OutboxRecords::default()
        }
    }

    /// The records of the events `change` makes (none when no router of
    /// this sink routes it), or the error of one that cannot be routed.
    pub fn encode(&mut self, change: &Change) -> Result<&[Record], SinkError> {
        self.events.clear();
        self.records.clear();
        self.routers.route(change, &mut self.events)?;
        for (_, e) in self.events.drain(..) {
            self.records.push(Record {
                topic: e.topic.into(),
                key: e.key,
                value: e.value,
                timestamp_ms: e.timestamp_ms,
                version: change.version(),
                xid: change.xid(),
                other_key: None,
                headers: e.headers,
                partition: e.partition,
            });
        }
        Ok(&self.records)
    }

    /// Every record encoded since the last call reached Kafka (committed,
    /// with exactly once): their events are counted.
    pub fn applied(&mut self) {
        self.routers.applied();
    }

    /// The records encoded since the last call were not applied; the retry
    /// encodes them again.
    pub fn discard(&mut self) {
        self.routers.discard();
    }
}
