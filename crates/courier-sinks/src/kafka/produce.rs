//! The `Sink` implementation: a group of batches is enqueued whole, its
//! delivery reports counted as they come back, and the group is applied
//! once every record is reported delivered (one transaction with exactly
//! once).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use courier_core::{Batch, Change, Grouping, Sink, SinkError, SinkErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

use super::client::{self, blocking, Client, Failure};
use super::config::Settings;
use super::deliveries::{Deliveries, Refused};
use super::encode::{Encoder, Record, LSN_HEADER, TXID_HEADER};
use super::heartbeat::{self, Heartbeat};
use super::offsets::{self, Fence};
use super::outbox::OutboxRecords;
use crate::envelope::{now_ms, SourceInfo};
use crate::outbox::Routers;
use crate::BuildError;

/// Writes the changes of the selected tables to Kafka; see the module
/// documentation.
pub struct KafkaSink {
    name: String,
    settings: Settings,
    pub(super) client: Client,
    encoder: Encoder,
    /// The records of the events of this sink's outbox routers.
    outbox: OutboxRecords,
    /// With exactly once: what to leave out and the position to commit.
    fence: Option<Fence>,
    /// The producer met a fatal error and is rebuilt before the next group.
    broken: bool,
    /// Heartbeat records, when asked for; they stop with the sink.
    _heartbeat: Option<Heartbeat>,
    /// The current round of records: the number of its first record, the
    /// next record's number, and the (batch, change) each record came from.
    round: Round,
}

/// The records enqueued for one group, numbered for their delivery reports.
#[derive(Default)]
struct Round {
    first: u64,
    next: u64,
    /// `None` for transaction metadata records.
    origins: Vec<Option<(usize, usize)>>,
}

impl Round {
    fn start(&mut self) {
        self.first = self.next;
        self.origins.clear();
    }

    fn enqueued(&self) -> u64 {
        self.next - self.first
    }
}

impl KafkaSink {
    pub(crate) async fn start(
        name: &str,
        settings: Settings,
        source: &SourceInfo,
    ) -> Result<KafkaSink, BuildError> {
        let connect_err = |f: Failure| BuildError::Connect {
            sink: name.to_string(),
            kind: f.kind,
            message: format!(
                "connect: kafka at {} {} ({})",
                settings.brokers, f.kind, f.message
            ),
            source: None,
        };
        let mut client = Client::connect(&settings, name)
            .await
            .map_err(connect_err)?;
        let fence = match &settings.exactly_once {
            Some((_, topic)) => {
                client
                    .ensure_topic(topic, &settings, true)
                    .await
                    .map_err(connect_err)?;
                let committed = offsets::read(&settings).await.map_err(connect_err)?;
                Some(Fence::new(committed.unwrap_or_default()))
            }
            None => None,
        };
        if let Some((_, topic)) = &settings.heartbeat {
            client
                .ensure_topic(topic, &settings, false)
                .await
                .map_err(connect_err)?;
        }
        let heartbeat = heartbeat::start(&settings, name).map_err(connect_err)?;
        Ok(KafkaSink {
            name: name.to_string(),
            encoder: Encoder::new(&settings, source)
                .ended_before(fence.as_ref().and_then(Fence::committed_through)),
            outbox: OutboxRecords::default(),
            settings,
            client,
            fence,
            broken: false,
            _heartbeat: heartbeat,
            round: Round::default(),
        })
    }

    /// The sink also writes the events of these outbox routers (see
    /// [`crate::outbox`]), in the same groups and transactions as its
    /// change records.
    pub fn with_outbox(mut self, routers: Routers) -> Self {
        self.outbox = OutboxRecords::new(routers);
        self
    }

    /// Enqueues every record of `batches`, then waits until the broker
    /// acknowledged all of them (with exactly once, the transaction's
    /// commit follows). Enqueueing never waits for a report, except when
    /// librdkafka's queue is full.
    async fn produce(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let now = now_ms();
        let KafkaSink {
            settings,
            client,
            encoder,
            outbox,
            fence,
            round,
            ..
        } = self;
        let deliveries = Arc::clone(client.producer.context());
        round.start();
        deliveries.begin(round.first);
        let mut out = Enqueue {
            settings,
            client,
            deliveries: &deliveries,
            round,
            batches,
        };
        for (bi, batch) in batches.iter().enumerate() {
            for (ci, change) in batch.changes.iter().enumerate() {
                let selected = change.outbox().is_none() && out.settings.selection.selects(change);
                if fence.as_mut().is_some_and(|f| f.already_committed(change)) {
                    if selected {
                        encoder.count_committed(change);
                    }
                    continue;
                }
                // Outbox events go to topics of their own, never compacted.
                let (records, compact) = if change.outbox().is_some() {
                    (outbox.encode(change)?, false)
                } else if selected {
                    (encoder.encode(change, now)?, out.settings.compact)
                } else {
                    continue;
                };
                for record in records {
                    out.send(record, compact, Some((bi, ci))).await?;
                }
            }
            if let Some(t) = batch.through {
                if let Some(end) = encoder.end_through(t.as_lsn()) {
                    out.send(end, false, None).await?;
                }
            }
            // Exactly once is offered only over a PostgreSQL source, whose
            // positions are LSNs (the configuration refuses it otherwise).
            if let (Some(fence), Some(t)) = (fence.as_mut(), batch.through) {
                fence.through(t.as_lsn());
            }
        }
        if fence.is_some() {
            // commit_transaction sends the rest and waits for every report.
            return Ok(());
        }
        deliveries
            .wait_for(round.enqueued())
            .await
            .map_err(|r| refusal(settings, round, batches, r))
    }

    /// One transaction: begin, produce, the position record, commit; on
    /// failure, abort, so the retry starts clean.
    async fn transaction(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let Some((id, topic)) = self.settings.exactly_once.clone() else {
            return self.produce(batches).await;
        };
        let before = self.fence.clone();
        let p = self.client.producer.clone();
        blocking(move || p.begin_transaction())
            .await
            .map_err(|f| self.txn_error(f, "begin"))?;
        let mut result = self.produce(batches).await;
        if result.is_ok() {
            result = self.commit(&id, &topic, batches).await;
        }
        if result.is_err() {
            self.fence = before;
            let p = self.client.producer.clone();
            let timeout = self.settings.delivery_timeout;
            if blocking(move || p.abort_transaction(timeout))
                .await
                .is_err()
            {
                self.broken = true;
            }
        }
        result
    }

    /// Writes the position record and commits the transaction; `Ok` once
    /// the broker committed it, with every record of the round delivered.
    async fn commit(&mut self, id: &str, topic: &str, batches: &[&Batch]) -> Result<(), SinkError> {
        let position = self.fence.as_ref().map(|f| f.position).unwrap_or_default();
        let value = position.to_json();
        let record = BaseRecord::with_opaque_to(topic, self.round.next as usize)
            .key(id)
            .payload(&value);
        self.client
            .producer
            .send(record)
            .map_err(|(e, _)| self.txn_error(Failure::from(&e), "write the position"))?;
        self.round.next += 1;
        let p = self.client.producer.clone();
        let timeout = self.settings.delivery_timeout + Duration::from_secs(10);
        // A commit that failed retriably may have completed on the broker:
        // librdkafka lets it be retried, never aborted, so the group cannot
        // be aborted after the broker committed it.
        let committed = blocking(move || {
            let mut attempts = 0;
            loop {
                match p.commit_transaction(timeout) {
                    Err(KafkaError::Transaction(e)) if e.is_retriable() && attempts < 3 => {
                        attempts += 1;
                    }
                    other => return other,
                }
            }
        })
        .await;
        // A refused record names its table and topic, which the commit's
        // own error (that some record failed) does not.
        committed.map_err(|f| match self.client.producer.context().take_refused() {
            Some(refused) => refusal(&self.settings, &self.round, batches, refused),
            None => self.txn_error(f, "commit"),
        })
    }

    fn txn_error(&self, f: Failure, step: &str) -> SinkError {
        let mut message = format!(
            "kafka at {}: {step} transaction {} {} ({})",
            self.settings.brokers,
            self.settings
                .exactly_once
                .as_ref()
                .map_or("", |(id, _)| id.as_str()),
            f.kind,
            f.message
        );
        if !f.kind.is_retriable() {
            message.push_str(&format!("; fix: {}", client::fix_for(f.code, "")));
        }
        SinkError::new(f.kind, message)
    }

    /// Rebuilds the producer after a fatal producer error (a fenced
    /// producer stays fatal: another Courier holds the id). With exactly
    /// once, the new producer's `init_transactions` aborts whatever the
    /// old one left open.
    async fn repair(&mut self) -> Result<(), SinkError> {
        let fatal = self.client.producer.client().fatal_error();
        if !self.broken && fatal.is_none() {
            return Ok(());
        }
        if let Some((code @ (RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced), _)) =
            fatal
        {
            return Err(self.txn_error(
                Failure {
                    kind: SinkErrorKind::Config,
                    message: "this producer was fenced".into(),
                    code: Some(code),
                },
                "continue",
            ));
        }
        self.client = Client::connect(&self.settings, &self.name)
            .await
            .map_err(|f| {
                SinkError::new(
                    f.kind,
                    format!(
                        "kafka at {}: reconnect: {}",
                        self.settings.brokers, f.message
                    ),
                )
            })?;
        // The fence stays as it was before the failed group: the pipeline
        // retries that group, not the stream from the slot.
        self.broken = false;
        Ok(())
    }
}

/// What enqueueing a round's records needs.
struct Enqueue<'a> {
    settings: &'a Settings,
    client: &'a mut Client,
    deliveries: &'a Deliveries,
    round: &'a mut Round,
    batches: &'a [&'a Batch],
}

impl Enqueue<'_> {
    /// Enqueues `record`, the record of the change at `origin` (batch,
    /// change), or a transaction metadata record when `None`. Waits only
    /// while librdkafka's queue is full.
    async fn send(
        &mut self,
        record: &Record,
        compact: bool,
        origin: Option<(usize, usize)>,
    ) -> Result<(), SinkError> {
        let Enqueue {
            settings,
            client,
            deliveries,
            round,
            batches,
        } = self;
        let error = |f: Failure| match origin {
            Some((b, c)) => record_error(settings, f, &batches[b].changes[c], &record.topic),
            None => metadata_error(settings, f, record),
        };
        client
            .ensure_topic(&record.topic, settings, compact)
            .await
            .map_err(error)?;
        loop {
            match try_send(client, record, round.next) {
                Ok(()) => {
                    round.origins.push(origin);
                    round.next += 1;
                    return Ok(());
                }
                // librdkafka's queue is full: wait until half of what is in
                // flight is reported, then again.
                Err(None) => {
                    let sent = round.enqueued();
                    let in_flight = sent.saturating_sub(deliveries.reported());
                    if in_flight == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        deliveries
                            .wait_for(sent - in_flight / 2)
                            .await
                            .map_err(|r| refusal(settings, round, batches, r))?;
                    }
                }
                Err(Some(f)) => return Err(error(f)),
            }
        }
    }
}

/// Enqueues `record` as number `seq` of its round: `Err(None)` when
/// librdkafka's queue is full.
fn try_send(client: &Client, record: &Record, seq: u64) -> Result<(), Option<Failure>> {
    let mut lsn = itoa::Buffer::new();
    let mut xid = itoa::Buffer::new();
    let mut headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: LSN_HEADER,
            value: Some(lsn.format(record.version.as_u64())),
        })
        .insert(Header {
            key: TXID_HEADER,
            value: Some(xid.format(record.xid)),
        });
    if let Some((name, key)) = &record.other_key {
        headers = headers.insert(Header {
            key: name,
            value: Some(key.as_slice()),
        });
    }
    for (name, value) in &record.headers {
        headers = headers.insert(Header {
            key: name,
            value: value.as_deref(),
        });
    }
    let mut r: BaseRecord<'_, [u8], [u8], usize> =
        BaseRecord::with_opaque_to(&record.topic, seq as usize)
            .timestamp(record.timestamp_ms)
            .headers(headers);
    if let Some(p) = record.partition {
        r = r.partition(p);
    }
    if let Some(k) = &record.key {
        r = r.key(k.as_slice());
    }
    if let Some(v) = &record.value {
        r = r.payload(v.as_slice());
    }
    match client.producer.send(r) {
        Ok(()) => Ok(()),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(None),
        Err((e, _)) => Err(Some(Failure::from(&e))),
    }
}

/// The error of the round's record the broker refused, with the change it
/// came from (or none: the exactly-once position).
fn refusal(settings: &Settings, round: &Round, batches: &[&Batch], refused: Refused) -> SinkError {
    let origin = usize::try_from(refused.seq - round.first)
        .ok()
        .and_then(|i| round.origins.get(i));
    match origin {
        Some(&Some((b, c))) => record_error(
            settings,
            refused.failure,
            &batches[b].changes[c],
            &refused.topic,
        ),
        Some(None) => SinkError::new(
            refused.failure.kind,
            format!(
                "kafka at {} {} writing transaction metadata to topic {} ({})",
                settings.brokers, refused.failure.kind, refused.topic, refused.failure.message
            ),
        ),
        None => SinkError::new(
            refused.failure.kind,
            format!(
                "kafka at {} {} writing the exactly-once position to topic {} ({})",
                settings.brokers, refused.failure.kind, refused.topic, refused.failure.message
            ),
        ),
    }
}

/// The error of a BEGIN or END record: its kind, the transaction's LSN,
/// and, when retrying cannot help, the fix.
fn metadata_error(settings: &Settings, f: Failure, record: &Record) -> SinkError {
    let message = if f.kind.is_retriable() {
        format!(
            "kafka at {} {} writing transaction metadata to topic {} ({})",
            settings.brokers, f.kind, record.topic, f.message
        )
    } else {
        format!(
            "kafka refused a transaction metadata record for topic {}: {}; fix: {}",
            record.topic,
            f.message,
            client::fix_for(f.code, &record.topic)
        )
    };
    SinkError::new(f.kind, message).with_lsn(record.version)
}

/// The error of a record of `change`: its kind, and, when retrying cannot
/// help, the fix.
fn record_error(settings: &Settings, f: Failure, change: &Change, topic: &str) -> SinkError {
    let message = if f.kind.is_retriable() {
        format!(
            "kafka at {} {} writing to topic {topic} ({})",
            settings.brokers, f.kind, f.message
        )
    } else {
        format!(
            "kafka refused a record for topic {topic}: {}; fix: {}",
            f.message,
            client::fix_for(f.code, topic)
        )
    };
    SinkError::new(f.kind, message)
        .with_table(&change.relation().id)
        .with_lsn(change.version())
}

#[async_trait]
impl Sink for KafkaSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.apply_all(&[batch]).await
    }

    /// Many batches per produce round: enqueueing a whole group before
    /// waiting keeps the brokers' acknowledgements off the critical path
    /// and, with exactly once, makes one transaction of them.
    fn grouping(&self) -> Grouping {
        Grouping {
            max_changes: 50_000,
            max_bytes: 32 << 20,
            max_delay: Duration::from_millis(20),
        }
    }

    async fn apply_all(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        self.repair().await?;
        // A failed group is retried whole: its transactions count again.
        let transactions = self.encoder.transactions();
        let result = self.transaction(batches).await;
        if result.is_err() {
            self.encoder.restore_transactions(transactions);
        }
        if self.client.producer.client().fatal_error().is_some() {
            self.broken = true;
        }
        match &result {
            Ok(()) => self.outbox.applied(),
            Err(_) => self.outbox.discard(),
        }
        result
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let p = self.client.producer.clone();
        let timeout = self.settings.delivery_timeout;
        blocking(move || p.flush(timeout))
            .await
            .map_err(|f| SinkError::new(f.kind, format!("kafka: flush at shutdown: {}", f.message)))
    }
}
