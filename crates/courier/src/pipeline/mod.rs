//! `courier run`: one source feeding every sink, acknowledging only what
//! every sink applied (DESIGN §1.1, §2).
//!
//! The core does not know where changes come from. A source turns what it
//! reads into [`courier_core::Batch`]es whose `through` is its own
//! [`courier_core::Position`], hands them to the [`Fanout`] (one bounded
//! queue per sink, `start_sinks`), and acknowledges upstream only the
//! position every sink's watermark has reached. Two sources exist:
//! PostgreSQL (`postgres.rs`: the first snapshot, then the replication
//! stream beside the catch-up snapshot; positions are LSNs) and Kafka
//! (`kafka.rs`: a consumer-group worker over change topics; positions
//! number its batches, each mapped back to the partition offsets it
//! completes). [`prepare`] checks the source; [`run`] starts the sinks and
//! the source and supervises them all until shutdown or a failure
//! (`supervise`).

mod batcher;
#[cfg(feature = "kafka")]
mod dead_letter;
mod errors;
mod fanout;
mod housekeeping;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(test)]
mod memory_sink;
mod metrics;
mod postgres;
mod sink_task;
mod snapshot;
mod stream;
mod supervise;

use courier_sinks::envelope::SourceInfo;
use tokio::sync::{mpsc, watch};

pub use fanout::Fanout;
pub use sink_task::error_chain;
use sink_task::run_sink;
use supervise::{supervise, SinkTasks};

use crate::config::{Config, Source};
use crate::status::Status;

/// A source checked and ready: what [`run`] starts from.
pub struct Prepared {
    config: Config,
    /// What sinks write as the envelope's `source` (and the Kafka sink's
    /// default topic prefix).
    envelope_source: SourceInfo,
    status: Status,
    source: PreparedSource,
}

enum PreparedSource {
    Postgres(Box<postgres::PgSource>),
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaSource),
}

impl Prepared {
    /// The status the run updates (for the admin API).
    pub fn status(&self) -> &Status {
        &self.status
    }
}

/// Checks the source (PostgreSQL: privileges, tables, keys, the
/// publication, the state store; Kafka: the settings) before anything
/// runs. Errors name what a person must fix.
pub async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let sink_kinds: Vec<(String, String)> = config
        .sinks
        .iter()
        .map(|(n, (k, _))| (n.clone(), k.clone()))
        .collect();
    match &config.source {
        Source::Postgres(_) => {
            let (source, envelope_source, status) =
                postgres::prepare(&config, &sink_kinds).await?;
            Ok(Prepared {
                config,
                envelope_source,
                status,
                source: PreparedSource::Postgres(Box::new(source)),
            })
        }
        #[cfg(feature = "kafka")]
        Source::Kafka(k) => {
            let (source, status) = kafka::prepare(k, &sink_kinds)?;
            Ok(Prepared {
                envelope_source: SourceInfo {
                    name: k.group.clone(),
                    database: String::new(),
                },
                config,
                status,
                source: PreparedSource::Kafka(source),
            })
        }
        #[cfg(not(feature = "kafka"))]
        Source::Kafka(_) => anyhow::bail!(
            "source.type = \"kafka\" needs a Courier built with the kafka feature (cargo build --features kafka)"
        ),
    }
}

/// Runs Courier until shutdown is signalled; returns an error for a failure
/// a person must fix (the message says what).
pub async fn run(p: Prepared, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (fanout, sinks) = start_sinks(&p);
    let timeout = p.config.pipeline.shutdown_timeout;
    match &p.source {
        PreparedSource::Postgres(pg) => {
            // The source owns its fan-out clone: when it ends, dropping it
            // (and the supervisor's) closes the queues.
            let capture =
                postgres::capture(&p.config, pg, fanout.clone(), &p.status, shutdown.clone());
            supervise(capture, sinks, fanout, &p.status, shutdown, timeout).await
        }
        #[cfg(feature = "kafka")]
        PreparedSource::Kafka(k) => {
            let consume = kafka::consume(&p.config, k, fanout.clone(), &p.status, shutdown.clone());
            supervise(consume, sinks, fanout, &p.status, shutdown, timeout).await
        }
    }
}

/// One task per sink, each behind its own bounded queue. A sink connects
/// inside its task, so a store that is down at start is retried like one
/// that goes away later.
fn start_sinks(p: &Prepared) -> (Fanout, SinkTasks) {
    let mut queues = Vec::new();
    let mut tasks = SinkTasks::new();
    for (name, (kind, settings)) in &p.config.sinks {
        let (tx, rx) = mpsc::channel(p.config.pipeline.queue_batches);
        queues.push(tx);
        let outbox: Vec<_> = (p.config.outbox.iter())
            .filter(|r| r.sink == *name)
            .cloned()
            .collect();
        let (name, kind, settings, source) = (
            name.clone(),
            kind.clone(),
            settings.clone(),
            p.envelope_source.clone(),
        );
        let build = {
            let name = name.clone();
            move || {
                let (name, kind, settings, source, outbox) = (
                    name.clone(),
                    kind.clone(),
                    settings.clone(),
                    source.clone(),
                    outbox.clone(),
                );
                async move { courier_sinks::build_sink(&name, &kind, settings, &source, outbox).await }
            }
        };
        tasks.spawn(name.clone(), run_sink(name, build, rx, p.status.clone()));
    }
    (Fanout::new(queues), tasks)
}
