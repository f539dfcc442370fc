//! The Kafka source: a worker in a consumer group that reads change topics
//! (its own Courier's or Debezium's), turns each record back into a change
//! (`courier_kafka::decode`) and hands batches to the sinks like the
//! PostgreSQL source does.
//!
//! Progress: every batch carries the next [`Position`]; `Progress`
//! remembers the partition offsets each batch completes, and an offset is
//! committed only once every sink's watermark passed its batch. The group
//! rebalances cooperatively: a partition taken away first commits what the
//! sinks applied of it, and its records still queued here are applied but
//! never committed from here, so the new owner replays from the committed
//! offset and skips nothing. Records are read `read_committed`, so a
//! transactional producer's aborted records never arrive.
//!
//! Lag: per owned partition, in records (the partition's end minus what
//! every sink applied) and in time (how old, by record time, the oldest
//! record read and not yet applied by every sink is; see
//! [`PartitionStatus`]). A batch waiting for room in a full queue waits
//! beside the commit timer, so offsets and lag keep being reported while a
//! sink holds the worker back.
//!
//! A record that cannot be decoded stops the worker with an error naming
//! it, or, with `source.dead_letter_topic`, goes to that topic
//! (`dead_letter.rs`) and counts as handled once the broker acknowledged it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use courier_core::{Batch, Change, Position};
use courier_kafka::decode::{Decoder, Format, Record};
use courier_kafka::progress::{Partition, Progress, Span};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};
use tokio::sync::watch;
use tokio::time::{Instant, Interval};

use super::dead_letter::DeadLetters;
use super::fanout::Fanout;
use crate::config::{Config, KafkaFormat, KafkaSourceConfig, KafkaStart};
use crate::status::{PartitionStatus, Status};

/// A Kafka source whose settings librdkafka accepted.
pub(super) struct KafkaSource {
    config: KafkaSourceConfig,
}

/// Checks the settings (librdkafka refuses an unknown or malformed one
/// here, before any sink starts).
pub(super) fn prepare(
    k: &KafkaSourceConfig,
    sink_kinds: &[(String, String)],
) -> anyhow::Result<(KafkaSource, Status)> {
    let mut check = client_config(k);
    // Only the settings are checked: no statistics from this consumer.
    check.remove("statistics.interval.ms");
    check.create::<BaseConsumer>().map_err(|e| {
        anyhow::anyhow!("source.kafka: librdkafka refused the consumer's settings: {e}")
    })?;
    Ok((
        KafkaSource { config: k.clone() },
        Status::for_kafka(&k.group, sink_kinds),
    ))
}

/// The consumer's settings: Courier's own, then `[source.kafka]`.
fn client_config(k: &KafkaSourceConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    let reset = match k.start {
        KafkaStart::Committed | KafkaStart::Earliest => "earliest",
        KafkaStart::Latest => "latest",
    };
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", reset)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "statistics.interval.ms",
            k.commit_interval.as_millis().max(100).to_string(),
        )
        // Bounds what librdkafka prefetches per partition (memory).
        .set("queued.max.messages.kbytes", "16384")
        .set("client.id", format!("courier-{}", k.group));
    for (key, value) in &k.settings {
        c.set(key, value);
    }
    c
}

/// What the consumer's callbacks share with the loop.
#[derive(Default)]
struct Shared {
    progress: Progress,
    /// Partitions this process has been assigned before (`start = "earliest"`
    /// reads a partition from its beginning only the first time).
    seen: HashSet<Partition>,
    rebalances: u64,
    /// Per partition, its last stable offset as the statistics last said.
    ends: BTreeMap<Partition, i64>,
    /// Partitions assigned since the loop last looked: the decoder forgets
    /// what it remembered of them (their reading starts afresh).
    newly_assigned: Vec<Partition>,
}

struct WorkerContext {
    shared: Arc<Mutex<Shared>>,
    start: KafkaStart,
}

impl WorkerContext {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for WorkerContext {
    fn stats(&self, stats: Statistics) {
        let mut shared = self.shared();
        for (topic, t) in stats.topics {
            for (n, p) in t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if n >= 0 && p.ls_offset >= 0 {
                    shared
                        .ends
                        .insert(Partition::new(topic.clone(), n), p.ls_offset);
                }
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<Partition> = tpl
            .elements()
            .iter()
            .map(|e| Partition::new(e.topic(), e.partition()))
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            rdkafka::consumer::RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                {
                    let mut shared = self.shared();
                    shared.rebalances += 1;
                    for p in &partitions {
                        let first_time = shared.seen.insert(p.clone());
                        if first_time && self.start == KafkaStart::Earliest {
                            if let Err(e) =
                                tpl.set_partition_offset(&p.topic, p.partition, Offset::Beginning)
                            {
                                tracing::warn!(partition = %p, error = %e, "could not start the partition at its beginning");
                            }
                        }
                    }
                    shared.progress.assign(partitions.iter().cloned());
                    shared.newly_assigned.extend(partitions.iter().cloned());
                }
                tracing::info!(partitions = %names(&partitions), "assigned partitions");
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "could not take the assigned partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let commit = {
                    let mut shared = self.shared();
                    shared.rebalances += 1;
                    for p in &partitions {
                        shared.ends.remove(p);
                    }
                    shared.progress.revoke(&partitions)
                };
                // What the sinks applied is committed before the new owner
                // reads, so it replays as little as possible; what is still
                // queued here is never committed from here.
                if !commit.is_empty() && !consumer.assignment_lost() {
                    if let Err(e) = consumer.commit(&offsets_list(&commit), CommitMode::Sync) {
                        tracing::warn!(error = %e, "could not commit the revoked partitions' applied offsets; the new owner replays from the last commit");
                    }
                }
                tracing::info!(partitions = %names(&partitions), "revoked partitions");
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "could not give up the revoked partitions");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; giving up every partition until the group recovers");
                let all = self.shared().progress.owned();
                let all: Vec<Partition> = all.into_iter().map(|(p, _, _)| p).collect();
                self.shared().progress.revoke(&all);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "could not give up the partitions");
                }
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        let list: Vec<(Partition, i64)> = offsets
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((Partition::new(e.topic(), e.partition()), o)),
                _ => None,
            })
            .collect();
        // Commits count as made when they are handed to librdkafka (the
        // loop marks them); a refused one is made again at the next tick.
        if let Err(e) = result {
            tracing::warn!(error = %e, "committing offsets failed; retrying at the next commit");
            self.shared().progress.commit_failed(&list);
        }
    }
}

fn names(partitions: &[Partition]) -> String {
    let v: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
    v.join(", ")
}

fn offsets_list(offsets: &[(Partition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (p, next) in offsets {
        // The offsets are the next records to read: never negative here.
        let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(*next));
    }
    tpl
}

/// The batch being filled.
#[derive(Default)]
struct Filling {
    changes: Vec<Change>,
    bytes: usize,
    /// Per partition, the record time of its first record in the batch
    /// and the offset after its newest.
    spans: BTreeMap<Partition, Span>,
    /// The commit time of the newest change (for lag in the status).
    newest_commit_us: i64,
    /// When its first record arrived (the batch waits at most `batch_delay`).
    since: Option<Instant>,
}

impl Filling {
    fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// Reads the topics until shutdown or a failure, applying through the
/// fan-out and committing what every sink applied.
pub(super) async fn consume(
    config: &Config,
    k: &KafkaSource,
    fanout: Fanout,
    status: &Status,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let cfg = &k.config;
    let dead_letters = match cfg.dead_letter_topic.clone() {
        None => None,
        Some(topic) => {
            let c = cfg.clone();
            let connect = tokio::task::spawn_blocking(move || DeadLetters::connect(&c, &topic));
            Some(connect.await.context("prepare the dead-letter topic")??)
        }
    };
    let shared = Arc::new(Mutex::new(Shared::default()));
    let context = WorkerContext {
        shared: shared.clone(),
        start: cfg.start,
    };
    let consumer: StreamConsumer<WorkerContext> =
        client_config(cfg)
            .create_with_context(context)
            .map_err(|e| anyhow::anyhow!("create the Kafka consumer: {e}"))?;
    match &cfg.topic_pattern {
        Some(pattern) => consumer.subscribe(&[pattern.as_str()]),
        None => {
            let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)
        }
    }
    .context("subscribe to the source topics")?;
    tracing::info!(group = %cfg.group, brokers = %cfg.brokers, "joining the consumer group");
    status.set_streaming(true);

    let mut worker = Worker {
        consumer: &consumer,
        shared: &shared,
        fanout,
        status,
        decoder: Decoder::new(match cfg.format {
            KafkaFormat::Auto => Format::Auto,
            KafkaFormat::Json => Format::Json,
            KafkaFormat::JsonSchema => Format::JsonSchema,
        }),
        filling: Filling::default(),
        batch_changes: config.pipeline.batch_changes,
        batch_bytes: config.pipeline.batch_bytes,
        missing_topics: HashSet::new(),
        dead_letters,
    };
    let batch_delay = config.pipeline.batch_delay;
    let mut commit_tick = tokio::time::interval(cfg.commit_interval);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        let deadline = worker.filling.since.map(|t| t + batch_delay);
        tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(()),
            _ = commit_tick.tick() => worker.commit(),
            _ = sleep_until(deadline), if deadline.is_some() => {
                if let Err(e) = worker.send(&mut commit_tick).await {
                    break Err(e);
                }
            }
            m = consumer.recv() => {
                let step = match m {
                    Ok(m) => worker.record(&m).await,
                    Err(e) => worker.consumer_error(e).await,
                };
                let step = match step {
                    Ok(true) => worker.send(&mut commit_tick).await,
                    other => other.map(|_| ()),
                };
                if let Err(e) = step {
                    break Err(e);
                }
            }
        }
    };
    // Stopping, or a record that cannot be applied: what was read before it
    // is applied and committed, so a restart replays as little as possible.
    let finished = async {
        worker.send(&mut commit_tick).await?;
        worker.fanout.barrier().await?;
        worker.commit_sync();
        anyhow::Ok(())
    };
    let finished = finished.await;
    status.set_streaming(false);
    result.and(finished)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

struct Worker<'a> {
    consumer: &'a StreamConsumer<WorkerContext>,
    shared: &'a Arc<Mutex<Shared>>,
    fanout: Fanout,
    status: &'a Status,
    decoder: Decoder,
    filling: Filling,
    batch_changes: usize,
    batch_bytes: usize,
    /// Subscribed topics the broker says do not exist (warned once each).
    missing_topics: HashSet<String>,
    /// Where records that cannot be decoded go (`None`: they stop the worker).
    dead_letters: Option<DeadLetters>,
}

impl Worker<'_> {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes one record into the batch; `Ok(true)` when the batch is full.
    async fn record(&mut self, m: &BorrowedMessage<'_>) -> anyhow::Result<bool> {
        let assigned = std::mem::take(&mut self.shared().newly_assigned);
        for p in assigned {
            self.decoder.reset_partition(&p.topic, p.partition);
        }
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let record = Record {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key(),
            value: m.payload(),
            headers: &headers,
        };
        let decoded = match self.decoder.decode(&record) {
            Ok(decoded) => decoded,
            Err(e) => {
                let Some(dead_letters) = &self.dead_letters else {
                    return Err(e.into());
                };
                dead_letters.send(&record, &e).await?;
                tracing::warn!(
                    topic = record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    dead_letter_topic = dead_letters.topic(),
                    error = %e.kind,
                    "a record that cannot be decoded went to the dead-letter topic"
                );
                self.status.kafka_dead_letter(record.topic);
                None
            }
        };
        let f = &mut self.filling;
        if let Some(change) = decoded {
            f.bytes += change.approx_bytes();
            f.newest_commit_us = f.newest_commit_us.max(change.commit_time_us());
            f.changes.push(change);
        }
        // A record without a timestamp counts from when it was read.
        let time_ms = m.timestamp().to_millis().unwrap_or_else(now_ms);
        f.spans
            .entry(Partition::new(m.topic(), m.partition()))
            .or_insert(Span {
                first_ms: time_ms,
                next: 0,
            })
            .next = m.offset() + 1;
        f.since.get_or_insert_with(Instant::now);
        Ok(f.changes.len() >= self.batch_changes || f.bytes >= self.batch_bytes)
    }

    /// A consumer error: a missing topic is waited for (the capture may
    /// create it later), transient errors are logged, fatal ones end the run.
    async fn consumer_error(&mut self, e: KafkaError) -> anyhow::Result<bool> {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match &e {
            KafkaError::MessageConsumptionFatal(_) => {
                Err(anyhow::anyhow!("the Kafka consumer failed for good: {e}"))
            }
            KafkaError::MessageConsumption(Code::UnknownTopicOrPartition)
            | KafkaError::MessageConsumption(Code::UnknownTopic) => {
                let text = e.to_string();
                if self.missing_topics.insert(text.clone()) {
                    tracing::warn!(error = %text, "a subscribed topic does not exist yet; waiting for it (check source.topics if it should)");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(false)
            }
            _ => {
                tracing::warn!(error = %e, "Kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(false)
            }
        }
    }

    /// Hands the batch being filled to every sink under the next
    /// position; while a queue is full, what the sinks applied meanwhile
    /// is committed at each `tick`.
    async fn send(&mut self, tick: &mut Interval) -> anyhow::Result<()> {
        if self.filling.is_empty() {
            return Ok(());
        }
        let f = std::mem::take(&mut self.filling);
        let position: Position = self.shared().progress.seal(f.spans);
        self.status
            .note_commit_received(position, f.newest_commit_us);
        let fanout = self.fanout.clone();
        let send = fanout.send(Batch {
            changes: f.changes,
            through: Some(position),
        });
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                sent = &mut send => return Ok(sent?),
                _ = tick.tick() => self.commit(),
            }
        }
    }

    /// Commits (asynchronously) what every sink applied, and refreshes the
    /// status's partitions.
    fn commit(&mut self) {
        let offsets = self.acknowledged();
        if !offsets.is_empty() {
            match self
                .consumer
                .commit(&offsets_list(&offsets), CommitMode::Async)
            {
                Ok(()) => self.shared().progress.committed(&offsets),
                Err(e) => {
                    tracing::warn!(error = %e, "committing offsets failed; retrying at the next commit")
                }
            }
        }
        self.publish_partitions();
    }

    /// The final commit, waiting for the broker's answer.
    fn commit_sync(&mut self) {
        let offsets = self.acknowledged();
        if offsets.is_empty() {
            return;
        }
        match self
            .consumer
            .commit(&offsets_list(&offsets), CommitMode::Sync)
        {
            Ok(()) => self.shared().progress.committed(&offsets),
            Err(e) => {
                tracing::warn!(error = %e, "the final commit failed; the next start replays from the last commit")
            }
        }
        self.publish_partitions();
    }

    /// The offsets every sink applied and not yet committed.
    fn acknowledged(&mut self) -> Vec<(Partition, i64)> {
        let through = self.status.watermark.min().unwrap_or(Position::ZERO);
        let mut shared = self.shared();
        shared.progress.acknowledge(through);
        shared.progress.to_commit()
    }

    fn publish_partitions(&self) {
        let shared = self.shared();
        let partitions = shared
            .progress
            .owned()
            .into_iter()
            .map(|(p, committed, applied)| {
                let end = shared.ends.get(&p).copied();
                let read_from = applied.or(committed);
                // Batches sent hold older records than the one being filled.
                let pending_since_ms = shared
                    .progress
                    .pending_since(&p)
                    .or_else(|| self.filling.spans.get(&p).map(|s| s.first_ms));
                PartitionStatus {
                    lag_records: end.zip(read_from).map(|(e, a)| (e - a).max(0)),
                    pending_since_ms,
                    lag_ms: 0,
                    topic: p.topic,
                    partition: p.partition,
                    committed_offset: committed,
                    applied_offset: applied,
                    high_watermark: end,
                }
            })
            .collect();
        self.status
            .set_kafka_partitions(partitions, shared.rebalances);
    }
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
