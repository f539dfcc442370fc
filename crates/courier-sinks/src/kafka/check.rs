//! `courier check` for the Kafka sink: the brokers answer, and each topic
//! the sink will write exists as Courier would create it, or can be
//! created; what differs is noted, what cannot work fails, naming the
//! topic and the setting. Nothing is produced and no producer is started,
//! so a check never fences the transactional id of a Courier that runs.

use std::sync::Arc;

use courier_core::TableId;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::client::{self, blocking, fix_for, Failure, METADATA_TIMEOUT};
use super::config::Settings;
use crate::preflight::Finding;

/// What the sink would create a topic with.
struct Wanted<'a> {
    topic: &'a str,
    partitions: Option<u32>,
    replication_factor: Option<u16>,
    compact: bool,
    /// The exactly-once positions topic: only its compaction matters.
    offsets: bool,
}

/// What the brokers say of a topic.
#[derive(Debug)]
enum Found {
    Exists {
        partitions: usize,
        replication_factor: usize,
        /// `cleanup.policy`, or the code the broker refused to tell it with.
        cleanup_policy: Result<String, RDKafkaErrorCode>,
    },
    /// Missing; with creation on, whether the brokers would create it as
    /// asked (a validate-only request).
    Missing {
        creatable: Option<Result<(), RDKafkaErrorCode>>,
    },
    /// The metadata of the topic came back with this error.
    Refused(RDKafkaErrorCode),
}

/// The findings for every topic of `tables` (and the transaction metadata,
/// heartbeat and exactly-once positions topics the settings ask for);
/// `Err` when no broker answers.
pub(crate) async fn check(
    settings: &Settings,
    sink: &str,
    tables: &[TableId],
) -> Result<Vec<Finding>, Failure> {
    let admin = Arc::new(client::admin(settings, sink)?);
    let mut wanted: Vec<Wanted<'_>> = Vec::new();
    let topics: Vec<String> = tables
        .iter()
        .filter(|t| settings.selection.includes(t))
        .map(|t| settings.topic.render(&t.schema, &t.name))
        .collect();
    for topic in &topics {
        if wanted.iter().all(|w| w.topic != topic) {
            wanted.push(Wanted {
                topic,
                partitions: settings.partitions,
                replication_factor: settings.replication_factor,
                compact: settings.compact,
                offsets: false,
            });
        }
    }
    let metadata = [
        settings.transaction_topic.as_deref(),
        settings.heartbeat.as_ref().map(|(_, t)| t.as_str()),
    ];
    for topic in metadata.into_iter().flatten() {
        wanted.push(Wanted {
            topic,
            partitions: settings.partitions,
            replication_factor: settings.replication_factor,
            compact: false,
            offsets: false,
        });
    }
    if let Some((_, offsets)) = &settings.exactly_once {
        wanted.push(Wanted {
            topic: offsets,
            partitions: settings.partitions,
            replication_factor: settings.replication_factor,
            compact: true,
            offsets: true,
        });
    }
    let brokers = broker_count(&admin).await?;
    let mut findings = Vec::new();
    for w in &wanted {
        let found = look_up(&admin, settings, w).await?;
        findings.push(judge(w, settings.create_topics, brokers, &found));
    }
    Ok(findings)
}

/// How many brokers the cluster has; the first request, so an unreachable
/// cluster fails here.
async fn broker_count(admin: &Arc<AdminClient<DefaultClientContext>>) -> Result<usize, Failure> {
    let a = Arc::clone(admin);
    blocking(move || {
        a.inner()
            .fetch_metadata(None, METADATA_TIMEOUT)
            .map(|m| m.brokers().len())
    })
    .await
    .map_err(|f| Failure {
        message: format!(
            "no broker answered within {}s ({})",
            METADATA_TIMEOUT.as_secs(),
            f.message
        ),
        kind: courier_core::SinkErrorKind::Unreachable,
        ..f
    })
}

async fn look_up(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    settings: &Settings,
    w: &Wanted<'_>,
) -> Result<Found, Failure> {
    let a = Arc::clone(admin);
    let name = w.topic.to_string();
    let shape = blocking(move || {
        let md = a.inner().fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
        Ok(md.topics().iter().find(|t| t.name() == name).map(|t| {
            (
                t.error().map(RDKafkaErrorCode::from),
                t.partitions().len(),
                t.partitions().first().map_or(0, |p| p.replicas().len()),
            )
        }))
    })
    .await?;
    let opts = AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT));
    match shape {
        Some((None, partitions, replication_factor)) if partitions > 0 => {
            let cleanup_policy = match admin
                .describe_configs([&ResourceSpecifier::Topic(w.topic)], &opts)
                .await
            {
                Ok(results) => match results.into_iter().next() {
                    Some(Ok(resource)) => Ok(resource
                        .get("cleanup.policy")
                        .and_then(|e| e.value.clone())
                        .unwrap_or_else(|| "delete".into())),
                    Some(Err(code)) => Err(code),
                    None => Err(RDKafkaErrorCode::Fail),
                },
                Err(e) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
            };
            Ok(Found::Exists {
                partitions,
                replication_factor,
                cleanup_policy,
            })
        }
        Some((Some(code), _, _))
            if !matches!(
                code,
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
            ) =>
        {
            Ok(Found::Refused(code))
        }
        _ if !settings.create_topics => Ok(Found::Missing { creatable: None }),
        _ => {
            let mut new = NewTopic::new(
                w.topic,
                w.partitions.map_or(-1, |p| p as i32),
                TopicReplication::Fixed(w.replication_factor.map_or(-1, i32::from)),
            );
            if w.compact {
                new = new.set("cleanup.policy", "compact");
            }
            let opts = opts.validate_only(true);
            let creatable = match admin.create_topics([&new], &opts).await {
                Ok(results) => match results.into_iter().next() {
                    Some(Err((_, code))) if code != RDKafkaErrorCode::TopicAlreadyExists => {
                        Err(code)
                    }
                    _ => Ok(()),
                },
                Err(e) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
            };
            Ok(Found::Missing {
                creatable: Some(creatable),
            })
        }
    }
}

/// The finding for one topic: a pure function of what was wanted and what
/// the brokers said.
fn judge(w: &Wanted<'_>, create_topics: bool, brokers: usize, found: &Found) -> Finding {
    use RDKafkaErrorCode as C;
    let subject = format!("topic {}", w.topic);
    let topic = w.topic;
    match found {
        Found::Exists {
            partitions,
            replication_factor,
            cleanup_policy,
        } => {
            let mut differs = Vec::new();
            if let Some(p) = w
                .partitions
                .filter(|p| *p as usize != *partitions && !w.offsets)
            {
                differs.push(format!(
                    "{partitions} partition(s), not {p} (partitions = {p})"
                ));
            }
            if let Some(r) = w
                .replication_factor
                .filter(|r| usize::from(*r) != *replication_factor && !w.offsets)
            {
                differs.push(format!(
                    "replication factor {replication_factor}, not {r} (replication_factor = {r})"
                ));
            }
            let compacted = cleanup_policy
                .as_ref()
                .map(|p| p.split(',').any(|p| p.trim() == "compact"));
            match (&compacted, w.compact, w.offsets) {
                (Ok(false), true, true) => {
                    return Finding::fail(
                        subject,
                        format!(
                            "holds the exactly-once positions but is not compacted (cleanup.policy={}), so retention may delete a position",
                            cleanup_policy.as_deref().unwrap_or("?")
                        ),
                        format!(
                            "kafka-configs --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact, or set offsets_topic to a compacted topic"
                        ),
                    );
                }
                (Ok(false), true, false) => differs.push(format!(
                    "cleanup.policy={}, not compact (compact = true): deleted rows stay in the log until retention removes them",
                    cleanup_policy.as_deref().unwrap_or("?")
                )),
                (Ok(true), false, _) => differs.push(
                    "cleanup.policy=compact (compact = false): a TRUNCATE's keyless record will be refused there"
                        .to_string(),
                ),
                _ => {}
            }
            if let Err(code) = cleanup_policy {
                differs.push(format!(
                    "its configuration is not readable ({code}), so cleanup.policy was not compared: grant this client DESCRIBE_CONFIGS on topic {topic}"
                ));
            }
            let shape = format!(
                "{partitions} partition(s), replication factor {replication_factor}{}",
                match cleanup_policy {
                    Ok(p) => format!(", cleanup.policy={p}"),
                    Err(_) => String::new(),
                }
            );
            if differs.is_empty() {
                Finding::ok(subject, format!("exists ({shape})"))
            } else {
                Finding::note(
                    subject,
                    format!(
                        "exists with {}; Courier uses it as it is",
                        differs.join("; ")
                    ),
                )
            }
        }
        Found::Missing { creatable: None } => {
            debug_assert!(!create_topics);
            Finding::fail(
                subject,
                "does not exist, and create_topics = false",
                fix_for(Some(C::UnknownTopicOrPartition), topic),
            )
        }
        Found::Missing {
            creatable: Some(Ok(())),
        } => Finding::ok(
            subject,
            format!(
                "missing; Courier will create it ({}, {}{})",
                w.partitions
                    .map_or("the broker's partition count".into(), |p| format!(
                        "{p} partition(s)"
                    )),
                w.replication_factor
                    .map_or("the broker's replication factor".into(), |r| format!(
                        "replication factor {r}"
                    )),
                if w.compact {
                    ", cleanup.policy=compact"
                } else {
                    ""
                }
            ),
        ),
        Found::Missing {
            creatable: Some(Err(code)),
        } => {
            let fix = match code {
                C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => format!(
                    "grant this client CREATE on the cluster or on topic {topic}, or create the topic yourself"
                ),
                C::InvalidReplicationFactor => format!(
                    "lower replication_factor to at most {brokers} (the brokers this cluster has), or leave it out for the broker's default"
                ),
                C::InvalidPartitions => {
                    "set partitions to at least 1, or leave it out for the broker's default".into()
                }
                C::PolicyViolation => format!(
                    "the brokers' create.topic.policy refuses it: create topic {topic} yourself, or change partitions, replication_factor or compact"
                ),
                other => fix_for(Some(*other), topic),
            };
            Finding::fail(
                subject,
                format!("missing, and the brokers would not create it: {code}"),
                fix,
            )
        }
        Found::Refused(code @ (C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed)) => {
            Finding::fail(
                subject,
                format!("this client may not describe it ({code})"),
                format!("grant this client DESCRIBE and WRITE on topic {topic}"),
            )
        }
        Found::Refused(code) => Finding::fail(
            subject,
            format!("the brokers answered for it with {code}"),
            fix_for(Some(*code), topic),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Verdict;

    fn wanted(partitions: Option<u32>, compact: bool) -> Wanted<'static> {
        Wanted {
            topic: "shop.public.orders",
            partitions,
            replication_factor: None,
            compact,
            offsets: false,
        }
    }

    fn exists(partitions: usize, policy: &str) -> Found {
        Found::Exists {
            partitions,
            replication_factor: 1,
            cleanup_policy: Ok(policy.into()),
        }
    }

    fn text(f: &Finding) -> String {
        match &f.verdict {
            Verdict::Ok(t) | Verdict::Note(t) => t.clone(),
            Verdict::Fail { problem, fix } => format!("{problem} / {fix}"),
        }
    }

    #[test]
    fn a_topic_as_courier_would_create_it_is_ok() {
        let f = judge(&wanted(Some(3), true), true, 1, &exists(3, "compact"));
        assert!(matches!(f.verdict, Verdict::Ok(_)), "{f:?}");
        assert_eq!(f.subject, "topic shop.public.orders");
    }

    #[test]
    fn a_topic_that_differs_is_noted_with_the_setting() {
        let f = judge(&wanted(Some(6), true), true, 1, &exists(2, "delete"));
        assert!(matches!(f.verdict, Verdict::Note(_)), "{f:?}");
        let t = text(&f);
        assert!(t.contains("2 partition(s), not 6 (partitions = 6)"), "{t}");
        assert!(
            t.contains("cleanup.policy=delete, not compact (compact = true)"),
            "{t}"
        );
        assert!(t.contains("uses it as it is"), "{t}");

        let f = judge(&wanted(None, false), true, 1, &exists(1, "compact"));
        assert!(text(&f).contains("compact = false"), "{f:?}");
    }

    #[test]
    fn permissions_and_missing_topics_fail_naming_topic_and_fix() {
        let f = judge(
            &wanted(None, false),
            true,
            1,
            &Found::Refused(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(
            text(&f).contains("grant this client DESCRIBE and WRITE on topic shop.public.orders"),
            "{f:?}"
        );
        let f = judge(
            &wanted(None, false),
            true,
            1,
            &Found::Missing {
                creatable: Some(Err(RDKafkaErrorCode::ClusterAuthorizationFailed)),
            },
        );
        assert!(text(&f).contains("grant this client CREATE"), "{f:?}");
        let f = judge(
            &wanted(None, false),
            false,
            1,
            &Found::Missing { creatable: None },
        );
        assert!(text(&f).contains("create_topics = true"), "{f:?}");
        let f = judge(
            &wanted(None, false),
            true,
            1,
            &Found::Exists {
                partitions: 1,
                replication_factor: 1,
                cleanup_policy: Err(RDKafkaErrorCode::TopicAuthorizationFailed),
            },
        );
        assert!(matches!(f.verdict, Verdict::Note(_)), "{f:?}");
        assert!(text(&f).contains("DESCRIBE_CONFIGS"), "{f:?}");
    }

    #[test]
    fn an_offsets_topic_that_is_not_compacted_fails() {
        let w = Wanted {
            offsets: true,
            ..wanted(Some(6), true)
        };
        let f = judge(&w, true, 1, &exists(1, "delete"));
        assert!(matches!(f.verdict, Verdict::Fail { .. }), "{f:?}");
        let f = judge(&w, true, 1, &exists(1, "compact"));
        assert!(
            matches!(f.verdict, Verdict::Ok(_)),
            "partitions do not matter there: {f:?}"
        );
    }
}
