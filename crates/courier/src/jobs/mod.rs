//! Verifications and rebuilds run by `courier run` itself, on request of
//! the admin API (`POST /v1/sinks/{name}/verify`, `.../rebuild`) or on a
//! sink's `verify_every` period ([`schedule`]). Each job runs in a task of
//! its own with the instance's configuration, beside the stream; at most one
//! job runs on a sink at a time. The registry remembers the running jobs and
//! the last [`KEPT`] finished ones, with their progress and reports, and the
//! last verification of each sink.

pub mod schedule;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::Config;
use crate::verify::progress::ProgressReport;
use crate::verify::rebuild::RebuildReport;
use crate::verify::{self, Progress, Report};

/// Finished jobs remembered (the oldest are forgotten first).
pub const KEPT: usize = 50;

/// How long a verification waits for the sinks to apply through its
/// snapshot when the request names no timeout.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a search index stays after its alias moved, when the request
/// names no grace period.
pub const REBUILD_GRACE: Duration = Duration::from_secs(30);

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Verify,
    Rebuild,
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    /// It ran to the end (a verification that found drift succeeded too:
    /// its report says what it found).
    Succeeded,
    /// It stopped on an error, in `error`.
    Failed,
}

/// Who asked for a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A request to the admin API.
    Api,
    /// The sink's `verify_every`.
    Schedule,
}

/// A job asked for, its options checked.
#[derive(Clone, Debug)]
pub enum Request {
    Verify {
        /// Only these tables (`schema.table` or `table`; empty: all).
        tables: Vec<String>,
        /// Rewrite what drifted, then verify again.
        repair: bool,
        /// How long to wait for the sinks to apply through a snapshot.
        timeout: Duration,
    },
    Rebuild {
        tables: Vec<String>,
        /// How long a search sink's old index stays after its alias moved.
        grace: Duration,
    },
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Verify => "verify",
            Kind::Rebuild => "rebuild",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Api => "a request",
            Trigger::Schedule => "verify_every",
        })
    }
}

impl Request {
    fn kind(&self) -> Kind {
        match self {
            Request::Verify { .. } => Kind::Verify,
            Request::Rebuild { .. } => Kind::Rebuild,
        }
    }
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("there is no sink {sink:?} on this Courier (sinks: {known})")]
    UnknownSink { sink: String, known: String },
    /// The job cannot run with this configuration (a Kafka source).
    #[error("{0}")]
    Unsupported(String),
    #[error(
        "sink {sink} already runs job {id} (a {kind} started by {trigger}): one job runs on a sink at a time; \
         follow it at /v1/jobs/{id} and ask again once it finished"
    )]
    Busy {
        sink: String,
        id: u64,
        kind: Kind,
        trigger: Trigger,
    },
}

/// A job as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct JobDoc {
    pub id: u64,
    pub kind: Kind,
    pub sink: String,
    pub trigger: Trigger,
    pub state: State,
    /// The tables asked for (empty: every table of the sink).
    pub tables: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<bool>,
    /// Unix time in milliseconds.
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub seconds: f64,
    /// Rows read from the snapshot per table, of the rows expected.
    pub progress: ProgressReport,
    /// On success: the report `courier verify --format json` or `courier
    /// rebuild --format json` prints (for a repair, the verification that
    /// found what was repaired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// A repair's second verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_repair: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The last verification of a sink, for `/v1/status`.
#[derive(Clone, Debug, Serialize)]
pub struct LastVerify {
    pub job: u64,
    pub finished_at_ms: i64,
    pub state: State,
    /// The snapshot compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Rows that differ from PostgreSQL, over every table (after a repair:
    /// what is left).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_rows: Option<u64>,
    /// The same per table.
    pub tables: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `jobs` section of `/v1/status`.
#[derive(Clone, Debug, Serialize)]
pub struct JobsReport {
    /// Running jobs, with their progress.
    pub running: Vec<JobDoc>,
    /// The newest finished jobs, newest first, without their reports
    /// (`GET /v1/jobs/{id}` has them).
    pub finished: Vec<JobDoc>,
    /// Per sink, its newest verification.
    pub last_verify: BTreeMap<String, LastVerify>,
    /// Per sink with `verify_every`, its period in seconds.
    pub verify_every_seconds: BTreeMap<String, f64>,
}

/// Finished jobs listed in `/v1/status`.
const FINISHED_IN_STATUS: usize = 10;

/// The jobs of one `courier run`; cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    config: Arc<Config>,
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    last_id: u64,
    /// Oldest first.
    jobs: VecDeque<Record>,
    last_verify: BTreeMap<String, LastVerify>,
}

struct Record {
    doc: JobDoc,
    started: Instant,
    progress: Progress,
}

impl Record {
    fn doc(&self) -> JobDoc {
        let mut doc = self.doc.clone();
        doc.progress = self.progress.report();
        if doc.state == State::Running {
            doc.seconds = self.started.elapsed().as_secs_f64();
        }
        doc
    }
}

/// What a job found or did.
enum Outcome {
    Verify {
        report: Report,
        after_repair: Option<Report>,
    },
    Rebuild(RebuildReport),
}

impl Jobs {
    /// The jobs of the instance whose configuration is `config`.
    pub fn new(config: Arc<Config>) -> Jobs {
        Jobs {
            config,
            registry: Arc::default(),
        }
    }

    /// Starts `request` on `sink` in the background; returns the job's id.
    pub fn start(&self, sink: &str, request: Request, trigger: Trigger) -> Result<u64, StartError> {
        if !self.config.sinks.contains_key(sink) {
            let known: Vec<&str> = self.config.sinks.keys().map(String::as_str).collect();
            return Err(StartError::UnknownSink {
                sink: sink.to_string(),
                known: known.join(", "),
            });
        }
        let what = format!("courier {}", request.kind());
        if let Err(e) = self.config.source.postgres(&what) {
            return Err(StartError::Unsupported(e.to_string()));
        }
        let mut reg = self.lock();
        if let Some(busy) =
            (reg.jobs.iter()).find(|r| r.doc.sink == sink && r.doc.state == State::Running)
        {
            return Err(StartError::Busy {
                sink: sink.to_string(),
                id: busy.doc.id,
                kind: busy.doc.kind,
                trigger: busy.doc.trigger,
            });
        }
        reg.last_id += 1;
        let id = reg.last_id;
        let (tables, repair) = match &request {
            Request::Verify { tables, repair, .. } => (tables.clone(), Some(*repair)),
            Request::Rebuild { tables, .. } => (tables.clone(), None),
        };
        let progress = Progress::default();
        reg.jobs.push_back(Record {
            doc: JobDoc {
                id,
                kind: request.kind(),
                sink: sink.to_string(),
                trigger,
                state: State::Running,
                tables,
                repair,
                started_at_ms: now_ms(),
                finished_at_ms: None,
                seconds: 0.0,
                progress: ProgressReport::default(),
                report: None,
                after_repair: None,
                error: None,
            },
            started: Instant::now(),
            progress: progress.clone(),
        });
        drop(reg);
        tracing::info!(job = id, kind = %request.kind(), sink, trigger = ?trigger, "job started");
        let (jobs, sink) = (self.clone(), sink.to_string());
        tokio::spawn(async move {
            let result = execute(&jobs.config, &sink, &request, &progress).await;
            jobs.finish(id, result);
        });
        Ok(id)
    }

    /// The job `id`, while it is remembered.
    pub fn get(&self, id: u64) -> Option<JobDoc> {
        let reg = self.lock();
        reg.jobs.iter().find(|r| r.doc.id == id).map(Record::doc)
    }

    /// Every remembered job, newest first.
    pub fn list(&self) -> Vec<JobDoc> {
        self.lock().jobs.iter().rev().map(Record::doc).collect()
    }

    /// The `jobs` section of `/v1/status`.
    pub fn report(&self) -> JobsReport {
        let reg = self.lock();
        let running = (reg.jobs.iter().rev())
            .filter(|r| r.doc.state == State::Running)
            .map(Record::doc)
            .collect();
        let finished = (reg.jobs.iter().rev())
            .filter(|r| r.doc.state != State::Running)
            .take(FINISHED_IN_STATUS)
            .map(|r| JobDoc {
                report: None,
                after_repair: None,
                ..r.doc()
            })
            .collect();
        JobsReport {
            running,
            finished,
            last_verify: reg.last_verify.clone(),
            verify_every_seconds: (self.config.verify_every.iter())
                .map(|(s, d)| (s.clone(), d.as_secs_f64()))
                .collect(),
        }
    }

    /// The configuration jobs run with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn finish(&self, id: u64, result: anyhow::Result<Outcome>) {
        let mut reg = self.lock();
        let Some(record) = reg.jobs.iter_mut().find(|r| r.doc.id == id) else {
            return;
        };
        let finished_at = now_ms();
        let doc = &mut record.doc;
        doc.finished_at_ms = Some(finished_at);
        doc.seconds = record.started.elapsed().as_secs_f64();
        let mut last_verify = None;
        match result {
            Ok(outcome) => {
                doc.state = State::Succeeded;
                match outcome {
                    Outcome::Verify {
                        report,
                        after_repair,
                    } => {
                        let last = after_repair.as_ref().unwrap_or(&report);
                        tracing::info!(job = id, sink = %doc.sink, drift_rows = last.drift(),
                            seconds = doc.seconds, "verify job finished");
                        last_verify = Some(LastVerify {
                            job: id,
                            finished_at_ms: finished_at,
                            state: State::Succeeded,
                            snapshot: Some(last.snapshot.clone()),
                            drift_rows: Some(last.drift()),
                            tables: (last.tables.iter())
                                .map(|t| (t.table.clone(), t.counts.drift()))
                                .collect(),
                            error: None,
                        });
                        doc.report = serde_json::to_value(&report).ok();
                        doc.after_repair = after_repair.and_then(|r| serde_json::to_value(r).ok());
                    }
                    Outcome::Rebuild(report) => {
                        tracing::info!(job = id, sink = %doc.sink, seconds = doc.seconds, "rebuild job finished");
                        doc.report = serde_json::to_value(&report).ok();
                    }
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::error!(job = id, kind = %doc.kind, sink = %doc.sink, error = %error, "job failed");
                doc.state = State::Failed;
                if doc.kind == Kind::Verify {
                    last_verify = Some(LastVerify {
                        job: id,
                        finished_at_ms: finished_at,
                        state: State::Failed,
                        snapshot: None,
                        drift_rows: None,
                        tables: BTreeMap::new(),
                        error: Some(error.clone()),
                    });
                }
                doc.error = Some(error);
            }
        }
        let sink = doc.sink.clone();
        if let Some(last) = last_verify {
            reg.last_verify.insert(sink, last);
        }
        let finished = reg
            .jobs
            .iter()
            .filter(|r| r.doc.state != State::Running)
            .count();
        let mut excess = finished.saturating_sub(KEPT);
        reg.jobs.retain(|r| {
            let forget = excess > 0 && r.doc.state != State::Running;
            if forget {
                excess -= 1;
            }
            !forget
        });
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs one job to its end.
async fn execute(
    config: &Config,
    sink: &str,
    request: &Request,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    match request {
        Request::Verify {
            tables,
            repair,
            timeout,
        } => {
            let opts = verify::Options {
                sink: Some(sink.to_string()),
                tables: tables.clone(),
                repair: *repair,
                timeout: *timeout,
                progress: progress.clone(),
            };
            let report = verify::verify(config, &opts).await?;
            let after_repair = if *repair && report.drift() > 0 {
                let again = verify::Options {
                    repair: false,
                    ..opts
                };
                Some(verify::verify(config, &again).await?)
            } else {
                None
            };
            Ok(Outcome::Verify {
                report,
                after_repair,
            })
        }
        Request::Rebuild { tables, grace } => {
            progress.stage("rebuild");
            let report = verify::rebuild::rebuild(config, sink, tables, *grace, progress).await?;
            Ok(Outcome::Rebuild(report))
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
