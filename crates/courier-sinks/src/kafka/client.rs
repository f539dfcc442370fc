//! The I/O: an idempotent (optionally transactional) librdkafka producer,
//! the admin client that creates topics, and how Kafka's errors become a
//! [`SinkErrorKind`] and words.

use std::collections::HashSet;
use std::time::Duration;

use courier_core::SinkErrorKind;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, ThreadedProducer};

use super::config::Settings;
use super::deliveries::Deliveries;

/// The sink's producer: librdkafka's, polled on its own thread, reporting
/// deliveries to a counting context.
pub(crate) type KafkaProducer = ThreadedProducer<Deliveries>;

/// How long start-up and topic checks wait for the brokers.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure as a kind and words that never hold row values or secrets.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: SinkErrorKind,
    pub message: String,
    /// librdkafka's error code, when it gave one.
    pub code: Option<RDKafkaErrorCode>,
}

impl Failure {
    pub fn new(kind: SinkErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            code: None,
        }
    }
}

impl From<&KafkaError> for Failure {
    fn from(e: &KafkaError) -> Self {
        let message = match e {
            // librdkafka's text for a bad setting quotes the value, which
            // may be a secret: name the setting only.
            KafkaError::ClientConfig(_, _, key, _) => {
                return Failure::new(
                    SinkErrorKind::Config,
                    format!("librdkafka refused the setting {key:?}"),
                )
            }
            KafkaError::ClientCreation(text) => {
                return Failure::new(SinkErrorKind::Config, format!("client not created: {text}"))
            }
            KafkaError::Transaction(t) => t.to_string(),
            other => other.to_string(),
        };
        let code = e.rdkafka_error_code();
        Failure {
            kind: code.map_or(SinkErrorKind::Unavailable, kind_of),
            message,
            code,
        }
    }
}

/// The kind of a Kafka error code: retriable for what a broker coming back,
/// a new leader or time can fix; fatal for what a person must change.
pub(crate) fn kind_of(code: RDKafkaErrorCode) -> SinkErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve | C::NetworkException => {
            SinkErrorKind::Unreachable
        }
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => SinkErrorKind::TimedOut,
        C::QueueFull => SinkErrorKind::Overloaded,
        // An unknown partition is one an outbox event's column chose.
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidRecord
        | C::PolicyViolation
        | C::UnknownPartition => SinkErrorKind::Rejected,
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownTopicId
        | C::ProducerFenced
        | C::Fenced
        | C::InvalidTransactionTimeout
        | C::InvalidConfig
        | C::InvalidReplicationFactor
        | C::InvalidPartitions => SinkErrorKind::Config,
        // Leader elections, too few in-sync replicas, coordinators moving,
        // storage trouble, and anything unknown: the broker may recover.
        _ => SinkErrorKind::Unavailable,
    }
}

/// What to do about a record the broker refused for good, by code.
pub(crate) fn fix_for(code: Option<RDKafkaErrorCode>, topic: &str) -> String {
    use RDKafkaErrorCode as C;
    match code {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize) => format!(
            "raise the topic's max.message.bytes (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config max.message.bytes=...) and librdkafka.\"message.max.bytes\""
        ),
        Some(C::TopicAuthorizationFailed) => {
            format!("grant this client WRITE and DESCRIBE on topic {topic}")
        }
        Some(C::ClusterAuthorizationFailed | C::TransactionalIdAuthorizationFailed) => {
            "grant this client IDEMPOTENT_WRITE on the cluster (and WRITE on its transactional id)"
                .into()
        }
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownTopicId) => format!(
            "create topic {topic}, or set create_topics = true so Courier creates it"
        ),
        Some(C::UnknownPartition) => format!(
            "an outbox column (placement = \"partition\") chose a partition topic {topic} does not have: \
             keep its values below the topic's partition count, or add partitions to the topic"
        ),
        Some(C::ProducerFenced | C::Fenced) => {
            "another Courier uses the same transactional_id; run one per id".into()
        }
        // The usual cause: a record without a key (a TRUNCATE's, as
        // Debezium writes it) sent to a compacted topic.
        Some(C::InvalidRecord) => format!(
            "if topic {topic} is compacted, it refuses records without a key, such as a TRUNCATE's: \
             avoid TRUNCATE on this table, or use cleanup.policy=delete for the topic (compact = false \
             when Courier creates it); otherwise see the broker's log"
        ),
        _ => "check the broker's logs".into(),
    }
}

/// The settings every client of the sink shares: brokers, security, the
/// partitioner and the pass-through settings.
pub(crate) fn base_config(settings: &Settings, sink: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", format!("courier-{sink}"))
        // The Java client's partitioner, so a key lands on the partition
        // Debezium's and Kafka Connect's producers would choose.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // librdkafka queues up to 1 GiB by default; a group waits for room
        // instead (the sink waits for half of what is in flight when the
        // queue is full), which bounds memory without slowing a drain.
        .set("queue.buffering.max.kbytes", "32768");
    for (k, v) in &settings.client {
        config.set(k, v);
    }
    config
}

/// An admin client alone, for looking at topics without producing (and,
/// with exactly once, without fencing the Courier that runs).
pub(crate) fn admin(
    settings: &Settings,
    sink: &str,
) -> Result<AdminClient<DefaultClientContext>, Failure> {
    base_config(settings, sink)
        .create()
        .map_err(|e| Failure::from(&e))
}

/// The producer and admin client of one sink.
pub(crate) struct Client {
    pub producer: KafkaProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist.
    topics: HashSet<String>,
}

impl Client {
    /// Creates the clients, checks that a broker answers, and, for exactly
    /// once, registers the transactional id (fencing an older producer with
    /// the same id, whose open transaction the broker aborts).
    pub async fn connect(settings: &Settings, sink: &str) -> Result<Client, Failure> {
        let mut config = base_config(settings, sink);
        let admin: AdminClient<DefaultClientContext> =
            config.create().map_err(|e| Failure::from(&e))?;
        let delivery_ms = settings.delivery_timeout.as_millis().to_string();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", &delivery_ms);
        if let Some((id, _)) = &settings.exactly_once {
            // The broker aborts a transaction left open longer than this.
            let txn_ms = (settings.delivery_timeout + Duration::from_secs(30)).as_millis();
            config
                .set("transactional.id", id)
                .set("transaction.timeout.ms", txn_ms.to_string());
        }
        let producer = KafkaProducer::from_config_and_context(&config, Deliveries::default())
            .map_err(|e| Failure::from(&e))?;
        let client = Client {
            producer,
            admin,
            topics: HashSet::new(),
        };
        client.probe().await?;
        if settings.exactly_once.is_some() {
            let p = client.producer.clone();
            blocking(move || p.init_transactions(METADATA_TIMEOUT)).await?;
        }
        Ok(client)
    }

    /// Asks a broker for the cluster's metadata.
    async fn probe(&self) -> Result<(), Failure> {
        let p = self.producer.clone();
        blocking(move || {
            p.client()
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map(|_| ())
        })
        .await
        .map_err(|f| match f.kind {
            // No answer at all at start means no broker is reachable.
            SinkErrorKind::TimedOut | SinkErrorKind::Unavailable => Failure {
                kind: SinkErrorKind::Unreachable,
                message: format!(
                    "no broker answered within {}s ({})",
                    METADATA_TIMEOUT.as_secs(),
                    f.message
                ),
                code: f.code,
            },
            _ => f,
        })
    }

    /// Makes sure `topic` exists: creates it when missing and `create` (with
    /// the settings' partitions, replication factor and compaction), or
    /// fails with a [`SinkErrorKind::Config`] failure when not. An existing
    /// topic is used as it is.
    pub async fn ensure_topic(
        &mut self,
        topic: &str,
        settings: &Settings,
        compact: bool,
    ) -> Result<(), Failure> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        if !self.topic_exists(topic).await? {
            if !settings.create_topics {
                return Err(Failure {
                    kind: SinkErrorKind::Config,
                    message: format!("topic {topic} does not exist"),
                    code: Some(RDKafkaErrorCode::UnknownTopicOrPartition),
                });
            }
            self.create_topic(topic, settings, compact).await?;
        }
        self.topics.insert(topic.to_string());
        Ok(())
    }

    async fn topic_exists(&self, topic: &str) -> Result<bool, Failure> {
        let p = self.producer.clone();
        let name = topic.to_string();
        let found = blocking(move || {
            let md = p.client().fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == name)
                .map(|t| (t.error(), t.partitions().iter().all(|p| p.leader() >= 0))))
        })
        .await?;
        match found {
            Some((None, led)) => Ok(led),
            Some((Some(e), _)) => {
                let code = RDKafkaErrorCode::from(e);
                match code {
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                        Ok(false)
                    }
                    RDKafkaErrorCode::LeaderNotAvailable => Ok(false),
                    _ => Err(Failure {
                        kind: kind_of(code),
                        message: format!("metadata of topic {topic}: {code}"),
                        code: Some(code),
                    }),
                }
            }
            None => Ok(false),
        }
    }

    async fn create_topic(
        &mut self,
        topic: &str,
        settings: &Settings,
        compact: bool,
    ) -> Result<(), Failure> {
        let partitions = settings.partitions.map_or(-1, |p| p as i32);
        let replication = settings.replication_factor.map_or(-1, i32::from);
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
        if compact {
            new = new.set("cleanup.policy", "compact");
        }
        let opts = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(|e| Failure::from(&e))?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Failure {
                        kind: kind_of(code),
                        message: format!("create topic {name}: {code}"),
                        code: Some(code),
                    })
                }
            }
        }
        // A new topic's partitions get leaders shortly after creation.
        let deadline = tokio::time::Instant::now() + METADATA_TIMEOUT;
        while !self.topic_exists(topic).await? {
            if tokio::time::Instant::now() > deadline {
                return Err(Failure::new(
                    SinkErrorKind::Unavailable,
                    format!("topic {topic} created but its partitions have no leader yet"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// Runs a blocking librdkafka call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| Failure::from(&e)),
        Err(e) => Err(Failure::new(
            SinkErrorKind::Unavailable,
            format!("kafka call failed: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_codes_become_kinds_a_person_can_act_on() {
        use RDKafkaErrorCode as C;
        for (code, kind) in [
            (C::AllBrokersDown, SinkErrorKind::Unreachable),
            (C::BrokerTransportFailure, SinkErrorKind::Unreachable),
            (C::MessageTimedOut, SinkErrorKind::TimedOut),
            (C::QueueFull, SinkErrorKind::Overloaded),
            (C::NotLeaderForPartition, SinkErrorKind::Unavailable),
            (C::NotEnoughReplicas, SinkErrorKind::Unavailable),
            (C::MessageSizeTooLarge, SinkErrorKind::Rejected),
            (C::TopicAuthorizationFailed, SinkErrorKind::Config),
            (C::UnknownTopicOrPartition, SinkErrorKind::Config),
            (C::ProducerFenced, SinkErrorKind::Config),
            (C::UnknownPartition, SinkErrorKind::Rejected),
        ] {
            assert_eq!(kind_of(code), kind, "{code:?}");
        }
        assert!(fix_for(Some(C::MessageSizeTooLarge), "t").contains("max.message.bytes"));
        assert!(fix_for(Some(C::UnknownTopicOrPartition), "t").contains("create_topics"));
        assert!(fix_for(Some(C::InvalidRecord), "t").contains("compact = false"));
        assert!(fix_for(Some(C::UnknownPartition), "t").contains("partition count"));
    }
}
