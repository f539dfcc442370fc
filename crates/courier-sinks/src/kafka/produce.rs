//! The `Sink` implementation: a group of batches is enqueued whole, then
//! its delivery reports are awaited (one transaction with exactly once).

use std::time::Duration;

use async_trait::async_trait;
use courier_core::{Batch, Change, Grouping, Sink, SinkError, SinkErrorKind};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};

use super::client::{self, blocking, Client, Failure};
use super::config::Settings;
use super::encode::{Encoder, Record, LSN_HEADER, TXID_HEADER};
use super::offsets::{self, Fence};
use crate::envelope::{now_ms, SourceInfo};
use crate::BuildError;

/// Writes the changes of the selected tables to Kafka; see the module
/// documentation.
pub struct KafkaSink {
    name: String,
    settings: Settings,
    pub(super) client: Client,
    encoder: Encoder,
    /// With exactly once: what to leave out and the position to commit.
    fence: Option<Fence>,
    /// The producer met a fatal error and is rebuilt before the next group.
    broken: bool,
}

/// A record waiting for its delivery report, and the change it came from.
struct Pending {
    delivery: DeliveryFuture,
    batch: usize,
    change: usize,
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
        Ok(KafkaSink {
            name: name.to_string(),
            encoder: Encoder::new(&settings, source),
            settings,
            client,
            fence,
            broken: false,
        })
    }

    /// Produces every record of `batches` and waits for all of them.
    async fn produce(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        let now = now_ms();
        let KafkaSink {
            settings,
            client,
            encoder,
            fence,
            ..
        } = self;
        let mut pending = Vec::new();
        for (bi, batch) in batches.iter().enumerate() {
            for (ci, change) in batch.changes.iter().enumerate() {
                if fence.as_mut().is_some_and(|f| f.already_committed(change))
                    || !settings.selection.includes(&change.relation().id)
                {
                    continue;
                }
                for record in encoder.encode(change, now)? {
                    client
                        .ensure_topic(&record.topic, settings, settings.compact)
                        .await
                        .map_err(|f| record_error(settings, f, change, &record.topic))?;
                    loop {
                        match try_send(client, record) {
                            Ok(delivery) => {
                                pending.push(Pending {
                                    delivery,
                                    batch: bi,
                                    change: ci,
                                });
                                break;
                            }
                            // librdkafka's queue is full: wait for the
                            // oldest half of what is pending, then again.
                            Err(None) => {
                                let half = pending.len().div_ceil(2);
                                if half == 0 {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                                let oldest: Vec<_> = pending.drain(..half).collect();
                                await_all(settings, oldest, batches).await?;
                            }
                            Err(Some(f)) => {
                                return Err(record_error(settings, f, change, &record.topic))
                            }
                        }
                    }
                }
            }
            // Exactly once is offered only over a PostgreSQL source, whose
            // positions are LSNs (the configuration refuses it otherwise).
            if let (Some(fence), Some(t)) = (fence.as_mut(), batch.through) {
                fence.through(t.as_lsn());
            }
        }
        await_all(settings, pending, batches).await
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
            result = self.commit(&id, &topic).await;
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

    async fn commit(&mut self, id: &str, topic: &str) -> Result<(), SinkError> {
        let position = self.fence.as_ref().map(|f| f.position).unwrap_or_default();
        let value = position.to_json();
        let record = FutureRecord::to(topic).key(id).payload(&value);
        let delivery = self
            .client
            .producer
            .send_result(record)
            .map_err(|(e, _)| self.txn_error(Failure::from(&e), "write the position"))?;
        let p = self.client.producer.clone();
        let timeout = self.settings.delivery_timeout + Duration::from_secs(10);
        // A commit that failed retriably may have completed on the broker:
        // librdkafka lets it be retried, never aborted, so the group cannot
        // be aborted after the broker committed it.
        blocking(move || {
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
        .await
        .map_err(|f| self.txn_error(f, "commit"))?;
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(self.txn_error(Failure::from(&e), "write the position")),
            Err(_) => Err(SinkError::new(
                SinkErrorKind::Unavailable,
                "kafka: the producer stopped",
            )),
        }
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

/// Enqueues `record`: `Err(None)` when librdkafka's queue is full.
fn try_send(client: &Client, record: &Record) -> Result<DeliveryFuture, Option<Failure>> {
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
    let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic)
        .timestamp(record.timestamp_ms)
        .headers(headers);
    if let Some(k) = &record.key {
        r = r.key(k.as_slice());
    }
    if let Some(v) = &record.value {
        r = r.payload(v.as_slice());
    }
    match client.producer.send_result(r) {
        Ok(delivery) => Ok(delivery),
        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Err(None),
        Err((e, _)) => Err(Some(Failure::from(&e))),
    }
}

/// Waits for the delivery report of every pending record; the first
/// failure is the group's error.
async fn await_all(
    settings: &Settings,
    pending: Vec<Pending>,
    batches: &[&Batch],
) -> Result<(), SinkError> {
    for p in pending {
        let change = &batches[p.batch].changes[p.change];
        match p.delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, msg))) => {
                use rdkafka::Message;
                return Err(record_error(
                    settings,
                    Failure::from(&e),
                    change,
                    msg.topic(),
                ));
            }
            Err(_) => {
                return Err(SinkError::new(
                    SinkErrorKind::Unavailable,
                    "kafka: the producer stopped before reporting a delivery",
                ))
            }
        }
    }
    Ok(())
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
        let result = self.transaction(batches).await;
        if self.client.producer.client().fatal_error().is_some() {
            self.broken = true;
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
