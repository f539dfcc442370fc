//! Courier's TOML configuration: parsed once, validated into types that
//! cannot be invalid. `${VAR}` (or `${VAR:-default}`) inside double-quoted
//! strings is replaced by the environment variable before parsing; unknown
//! keys are errors that name the key.

pub mod duration;
mod interpolate;
mod kafka;
mod outbox;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use courier_core::TableFilter;
use courier_postgres::setup::GeneratedColumns;
use courier_sinks::outbox::Router;
use serde::Deserialize;

pub use duration::parse_duration;
pub use kafka::{KafkaFormat, KafkaSourceConfig, KafkaStart};

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Clone)]
pub struct Config {
    pub source: Source,
    pub api: ApiConfig,
    pub state_dir: PathBuf,
    pub pipeline: PipelineConfig,
    /// Sinks by name, in name order: (type, settings without `type` and
    /// `verify_every`).
    pub sinks: BTreeMap<String, (String, toml::Table)>,
    /// `sinks.NAME.verify_every`: how often `courier run` verifies that sink.
    pub verify_every: BTreeMap<String, Duration>,
    /// `[outbox.NAME]`: the outbox event routers, in name order.
    pub outbox: Vec<Router>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sink settings may hold credentials: show only names and types.
        let sinks: Vec<_> = self
            .sinks
            .iter()
            .map(|(n, (k, _))| format!("{n} ({k})"))
            .collect();
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("api", &self.api.listen)
            .field("state_dir", &self.state_dir)
            .field("pipeline", &self.pipeline)
            .field("sinks", &sinks)
            .field(
                "outbox",
                &self.outbox.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `[source]`: where changes come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `type = "postgres"` (the default): capture from PostgreSQL's WAL.
    Postgres(SourceConfig),
    /// `type = "kafka"`: a worker that applies change topics to its sinks.
    Kafka(KafkaSourceConfig),
}

impl Source {
    /// The PostgreSQL source, or an error saying that `what` needs one.
    pub fn postgres(&self, what: &str) -> anyhow::Result<&SourceConfig> {
        match self {
            Source::Postgres(s) => Ok(s),
            Source::Kafka(_) => anyhow::bail!(
                "{what} reads PostgreSQL, but this configuration's source is Kafka (source.type = \"kafka\"): \
                 run it with the configuration of the Courier that captures PostgreSQL"
            ),
        }
    }
}

/// `[source]` with `type = "postgres"`.
#[derive(Clone)]
pub struct SourceConfig {
    /// The connection URL (may carry a password: never print it; use `redacted_url`).
    pub url: String,
    pub slot: String,
    pub publication: String,
    pub tables: TableFilter,
    pub table_patterns: Vec<String>,
    pub snapshot: SnapshotMode,
    /// Connections used to copy tables in parallel during a snapshot.
    pub snapshot_parallelism: usize,
    /// Rows per snapshot chunk (the unit of parallelism and of resuming).
    pub snapshot_chunk_rows: u64,
    /// Emit a WAL message this often so a quiet slot keeps moving.
    pub heartbeat: Option<Duration>,
    /// How often Courier reports its position to PostgreSQL.
    pub status_interval: Duration,
    /// What a run does when PostgreSQL invalidated the slot.
    pub on_slot_lost: OnSlotLost,
    /// Whether the slot is a failover slot (PostgreSQL 17+), which a
    /// standby keeps in step so that Courier resumes after a promotion.
    pub failover: bool,
    /// Which changes to stream by origin (PostgreSQL 16+ for `none`).
    pub origin: Origin,
    /// Whether PostgreSQL sends large transactions while they run.
    pub streaming: Streaming,
    /// `source.generated_columns`: whether the publication publishes stored
    /// generated columns (PostgreSQL 18+), so that rows carry them.
    pub generated_columns: bool,
}

impl SourceConfig {
    /// Which generated columns the publication publishes and snapshots copy.
    pub fn generated_columns(&self) -> GeneratedColumns {
        if self.generated_columns {
            GeneratedColumns::Stored
        } else {
            GeneratedColumns::Omitted
        }
    }
}

/// `source.streaming`: whether PostgreSQL streams a large transaction
/// while it runs (pgoutput protocol 2, PostgreSQL 14+), once its changes
/// exceed the server's `logical_decoding_work_mem`, instead of spilling it
/// on its side and sending it only after the commit. Courier holds the
/// streamed changes (in memory up to a small bound, then in a file under the
/// state directory) and hands them on at the commit, versioned with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Streaming {
    /// On where the server has it (PostgreSQL 14+), off before.
    Auto,
    /// On; a server older than PostgreSQL 14 is an error.
    On,
    /// Off, the default: PostgreSQL sends every transaction after its
    /// commit. Streaming spares PostgreSQL's disk but makes the sinks see a
    /// large transaction no sooner (its first change later, measured), so
    /// it is asked for, not assumed.
    #[default]
    Off,
}

impl Streaming {
    /// Whether to stream against a server of this `server_version_num`;
    /// an error when `on` asks for more than the server has.
    pub fn resolve(self, server_version_num: u32) -> Result<bool, String> {
        let supported = server_version_num >= 140_000;
        match self {
            Streaming::Auto => Ok(supported),
            Streaming::Off => Ok(false),
            Streaming::On if supported => Ok(true),
            Streaming::On => Err(format!(
                "source.streaming = \"on\" needs PostgreSQL 14 or later; this server's version is \
                 {server_version_num}: use \"auto\" or \"off\", or upgrade"
            )),
        }
    }
}

/// What `courier run` does with a slot PostgreSQL invalidated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSlotLost {
    /// Stop, saying what happened and how to recover.
    #[default]
    Stop,
    /// Recover by itself: a new slot and a new snapshot of every table
    /// into the stores as they are, then `verify --repair` of every store
    /// it can read back (rows deleted while the slot was lost go).
    Rebuild,
}

/// `source.origin`: whether changes that logical replication applied (those
/// with a replication origin) are streamed too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Every change (PostgreSQL's default).
    #[default]
    Any,
    /// Only changes made locally, not those replication applied: for
    /// bidirectional setups (PostgreSQL 16+).
    None,
}

impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig")
            .field("url", &redact_url(&self.url))
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("tables", &self.table_patterns)
            .finish_non_exhaustive()
    }
}

/// Whether the first run copies existing rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Copy every table's existing rows, then stream.
    Initial,
    /// Stream only changes made after the slot was created.
    Never,
}

/// `[api]`
#[derive(Clone)]
pub struct ApiConfig {
    /// `None` disables the admin API.
    pub listen: Option<SocketAddr>,
    /// Bearer token required on every request but `/healthz` when set.
    pub token: Option<String>,
}

/// `[pipeline]`
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Changes per batch handed to sinks.
    pub batch_changes: usize,
    /// Bytes of row values per batch, roughly (`Change::approx_bytes`): a
    /// batch ends at whichever of the two limits it reaches first, so a sink
    /// queue holds about `queue_batches × batch_bytes` whatever the rows' width.
    pub batch_bytes: usize,
    /// The longest a change waits for its batch to fill (a batch closes
    /// sooner when the stream goes quiet after a commit).
    pub batch_delay: Duration,
    /// Batches queued per sink before backpressure reaches PostgreSQL.
    pub queue_batches: usize,
    /// How long a stop may take after SIGINT/SIGTERM: past it, Courier
    /// exits non-zero, naming the sinks that did not finish.
    pub shutdown_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: toml::Table,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    sinks: BTreeMap<String, toml::Table>,
    #[serde(default)]
    outbox: BTreeMap<String, toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: String,
    #[serde(default = "default_slot")]
    slot: String,
    publication: Option<String>,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default = "default_snapshot")]
    snapshot: SnapshotMode,
    snapshot_parallelism: Option<usize>,
    snapshot_chunk_rows: Option<u64>,
    heartbeat: Option<String>,
    status_interval: Option<String>,
    #[serde(default)]
    on_slot_lost: OnSlotLost,
    #[serde(default)]
    failover: bool,
    #[serde(default)]
    origin: Origin,
    #[serde(default)]
    streaming: Streaming,
    #[serde(default)]
    generated_columns: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
    token: Option<String>,
    allow_remote_without_token: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    batch_changes: Option<usize>,
    batch_bytes: Option<usize>,
    batch_delay: Option<String>,
    queue_batches: Option<usize>,
    shutdown_timeout: Option<String>,
}

fn default_slot() -> String {
    "courier".into()
}

fn default_snapshot() -> SnapshotMode {
    SnapshotMode::Initial
}

impl Config {
    /// Reads, interpolates, parses and validates the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` only names it in errors
    /// and anchors a relative state directory.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let text = interpolate::interpolate(text, |k| std::env::var(k).ok()).map_err(invalid)?;
        let raw: RawConfig =
            toml::from_str(&text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;

        let duration = |key: &str, v: Option<String>| -> Result<Option<Duration>, ConfigError> {
            v.map(|v| parse_duration(&v).map_err(|e| invalid(format!("{key}: {e}"))))
                .transpose()
        };
        let mut raw_source = raw.source;
        let routes_outbox = !raw.outbox.is_empty();
        let source = match raw_source.remove("type") {
            None => postgres_source(raw_source, &invalid, &duration, routes_outbox)?,
            Some(toml::Value::String(t)) if t == "postgres" => {
                postgres_source(raw_source, &invalid, &duration, routes_outbox)?
            }
            Some(toml::Value::String(t)) if t == "kafka" => {
                Source::Kafka(kafka::parse(raw_source, &duration).map_err(invalid)?)
            }
            Some(other) => {
                return Err(invalid(format!(
                    "source.type = {other} is not a source type: use \"postgres\" (the default) or \"kafka\""
                )))
            }
        };
        let state_name = match &source {
            Source::Postgres(s) => &s.slot,
            Source::Kafka(k) => &k.group,
        };

        let listen = match raw.api.listen.as_deref() {

            None => Some(SocketAddr::from(([127, 0, 0, 1], 7070))),
            Some("" | "off") => None,
            Some(l) => Some(l.parse().map_err(|_| {
                invalid(format!("api.listen {l:?} is not an address: use IP:PORT, e.g. \"127.0.0.1:7070\", or \"off\""))
            })?),
        };
        let api = ApiConfig {
            listen,
            token: raw.api.token.filter(|t| !t.is_empty()),
        };
        if let Some(addr) = api.listen {
            let open = !addr.ip().is_loopback() && api.token.is_none();
            if open && !raw.api.allow_remote_without_token.unwrap_or(false) {
                return Err(invalid(format!(
                    "api.listen = \"{addr}\" accepts connections from other machines but api.token is not set: \
                     set api.token = \"${{COURIER_API_TOKEN}}\", listen on 127.0.0.1, or set \
                     api.allow_remote_without_token = true if the network is trusted"
                )));
            }
        }

        let state_dir = match raw.state.dir {
            Some(d) if d.is_absolute() => d,
            Some(d) => path.parent().unwrap_or(Path::new(".")).join(d),
            None => path
                .parent()
                .unwrap_or(Path::new("."))
                .join(".courier")
                .join(state_name),
        };

        let p = raw.pipeline;
        let pipeline = PipelineConfig {
            batch_changes: p.batch_changes.unwrap_or(4096).clamp(1, 1_000_000),
            batch_bytes: p.batch_bytes.unwrap_or(1 << 20).clamp(1 << 10, 1 << 30),
            batch_delay: duration("pipeline.batch_delay", p.batch_delay)?
                .unwrap_or(Duration::from_millis(20)),
            queue_batches: p.queue_batches.unwrap_or(8).clamp(1, 1024),
            shutdown_timeout: duration("pipeline.shutdown_timeout", p.shutdown_timeout)?
                .unwrap_or(Duration::from_secs(30)),
        };

        let mut sinks = BTreeMap::new();
        let mut verify_every = BTreeMap::new();
        for (name, mut table) in raw.sinks {
            check_name(&format!("sinks.{name}"), &name, 100).map_err(invalid)?;
            let kind = match table.remove("type") {
                Some(toml::Value::String(k)) => k,
                _ => {
                    return Err(invalid(format!(
                        "sinks.{name}.type is missing: set it to one of {}",
                        courier_sinks::SINK_TYPES.join(", ")
                    )))
                }
            };
            if !courier_sinks::SINK_TYPES.contains(&kind.as_str()) {
                return Err(invalid(format!(
                    "sinks.{name}.type = {kind:?} is not a sink type this Courier knows: use one of {}",
                    courier_sinks::SINK_TYPES.join(", ")
                )));
            }
            if let Some(every) = table.remove("verify_every") {
                let every = sink_verify_every(&name, &kind, every).map_err(invalid)?;
                verify_every.insert(name.clone(), every);
            }
            sinks.insert(name, (kind, table));
        }
        if sinks.is_empty() {
            return Err(invalid(
                "no sinks: add at least one [sinks.NAME] table, e.g. [sinks.log] type = \"stdout\""
                    .into(),
            ));
        }
        if let Source::Kafka(k) = &source {
            kafka::check_sinks(k, &sinks).map_err(invalid)?;
        }
        let outbox = outbox::routers(raw.outbox, &sinks, &source).map_err(invalid)?;
        Ok(Config {
            source,
            api,
            state_dir,
            pipeline,
            sinks,
            verify_every,
            outbox,
        })
    }
}

/// `sinks.NAME.verify_every`: a period, on a sink `courier verify` can read back.
fn sink_verify_every(name: &str, kind: &str, every: toml::Value) -> Result<Duration, String> {
    let key = format!("sinks.{name}.verify_every");
    let toml::Value::String(text) = every else {
        return Err(format!(
            "{key} must be a duration string such as \"6h\" or \"30m\""
        ));
    };
    let every = parse_duration(&text).map_err(|e| format!("{key}: {e}"))?;
    if every.is_zero() {
        return Err(format!(
            "{key} = {text:?}: the period must be longer than zero (remove the key to verify only on request)"
        ));
    }
    if !crate::verify::VERIFIABLE.contains(&kind) {
        return Err(format!(
            "{key}: a {kind} sink keeps no rows Courier can read back; verify_every works on {} sinks",
            crate::verify::VERIFIABLE.join(", ")
        ));
    }
    Ok(every)
}

/// `[source]` of `type = "postgres"`; `source.tables` may be empty when
/// `routes_outbox` (the configuration only routes outbox events).
fn postgres_source(
    table: toml::Table,
    invalid: &impl Fn(String) -> ConfigError,
    duration: &impl Fn(&str, Option<String>) -> Result<Option<Duration>, ConfigError>,
    routes_outbox: bool,
) -> Result<Source, ConfigError> {
    if let Some(v) = table.get("generated_columns").filter(|v| !v.is_bool()) {
        return Err(invalid(format!(
            "source.generated_columns = {v} is not a boolean: use true (PostgreSQL 18+: rows carry stored \
             generated columns) or false (the default)"
        )));
    }
    let s: RawSource = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| invalid(format!("source: {}", e.message())))?;
    check_name("source.slot", &s.slot, 63).map_err(invalid)?;
    let publication = s.publication.unwrap_or_else(|| s.slot.clone());
    check_name("source.publication", &publication, 63).map_err(invalid)?;
    if s.tables.is_empty() && !routes_outbox {
        return Err(invalid(
            "source.tables is empty: list the tables to capture, e.g. tables = [\"public.products\"] or [\"public.*\"] \
             (or route outbox events only, with an [outbox.NAME] table)"
                .into(),
        ));
    }
    let tables = TableFilter::new(&s.tables).map_err(|e| invalid(format!("source.tables: {e}")))?;
    let source = SourceConfig {
        url: s.url,
        slot: s.slot,
        publication,
        tables,
        table_patterns: s.tables,
        snapshot: s.snapshot,
        snapshot_parallelism: s.snapshot_parallelism.unwrap_or(4).clamp(1, 64),
        snapshot_chunk_rows: s.snapshot_chunk_rows.unwrap_or(250_000).max(1000),
        heartbeat: duration("source.heartbeat", s.heartbeat)?,
        status_interval: duration("source.status_interval", s.status_interval)?
            .unwrap_or(Duration::from_secs(1)),
        on_slot_lost: s.on_slot_lost,
        failover: s.failover,
        origin: s.origin,
        streaming: s.streaming,
        generated_columns: s.generated_columns,
    };
    if !(source.url.starts_with("postgres://") || source.url.starts_with("postgresql://")) {
        return Err(invalid("source.url must be a postgres:// URL, e.g. postgres://courier:${PGPASSWORD}@127.0.0.1:5432/shop".into()));
    }

    Ok(Source::Postgres(source))
}

pub(crate) fn check_name(key: &str, v: &str, max: usize) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !v.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} = {v:?}: use 1-{max} characters of a-z, 0-9 and _, not starting with a digit"
        ))
    }
}

/// The URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable url>".into(),
    }
}

#[cfg(test)]
mod tests;
