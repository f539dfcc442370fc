//! The one explicit list of sink types Courier can build from configuration.

use courier_core::{Sink, TableId};

use crate::envelope::SourceInfo;
use crate::inspect::Inspector;
use crate::outbox::{Router, Routers};
use crate::preflight::Finding;
use crate::BuildError;

/// The sink types this build of Courier knows, for error messages.
pub const SINK_TYPES: &[&str] = &[
    "stdout",
    "file",
    #[cfg(feature = "redis")]
    "redis",
    #[cfg(feature = "clickhouse")]
    "clickhouse",
    #[cfg(feature = "search")]
    "elasticsearch",
    #[cfg(feature = "search")]
    "opensearch",
    #[cfg(feature = "kafka")]
    "kafka",
];

/// The sink types that can carry outbox events (`[outbox.NAME] sink = ...`).
pub const OUTBOX_SINK_TYPES: &[&str] = &["kafka", "stdout", "file"];

/// Builds the sink `name` of type `kind` from its config table (without the
/// `type` key), with the outbox routers whose events it carries. Unknown
/// keys are errors that name the key.
pub async fn build_sink(
    name: &str,
    kind: &str,
    settings: toml::Table,
    source: &SourceInfo,
    outbox: Vec<Router>,
) -> Result<Box<dyn Sink>, BuildError> {
    let settings = toml::Value::Table(settings);
    let parse_err = |e: toml::de::Error| BuildError::Config {
        sink: name.to_string(),
        message: e.message().to_string(),
    };
    if let Some(r) = outbox
        .first()
        .filter(|_| !OUTBOX_SINK_TYPES.contains(&kind))
    {
        return Err(BuildError::Config {
            sink: name.to_string(),
            message: format!(
                "outbox.{} routes its events here, but a {kind} sink cannot carry events; use a sink of type {}",
                r.name,
                OUTBOX_SINK_TYPES.join(", ")
            ),
        });
    }
    let outbox = Routers::new(outbox);
    match kind {
        "stdout" => Ok(Box::new(
            crate::stdout::StdoutSink::new(settings.try_into().map_err(parse_err)?, source)?
                .with_outbox(outbox),
        )),
        #[cfg(feature = "redis")]
        "redis" => Ok(Box::new(
            crate::redis::build(name, settings.try_into().map_err(parse_err)?).await?,
        )),
        #[cfg(feature = "clickhouse")]
        "clickhouse" => Ok(Box::new(
            crate::clickhouse::build(name, settings.try_into().map_err(parse_err)?).await?,
        )),
        #[cfg(feature = "search")]
        "elasticsearch" | "opensearch" => Ok(Box::new(
            crate::search::build(name, settings.try_into().map_err(parse_err)?).await?,
        )),
        #[cfg(feature = "kafka")]
        "kafka" => Ok(Box::new(
            crate::kafka::build(name, settings.try_into().map_err(parse_err)?, source)
                .await?
                .with_outbox(outbox),
        )),
        "file" => Ok(Box::new(
            crate::file::FileSink::new(settings.try_into().map_err(parse_err)?, source)?
                .with_outbox(outbox),
        )),
        other => Err(BuildError::UnknownType {
            sink: name.to_string(),
            kind: other.to_string(),
        }),
    }
}

/// `courier check` for the sink `name`: `Err` when it cannot start (as
/// [`build_sink`] would fail), otherwise what it found about the places it
/// will write for `tables` (none for most sinks). A sink that would claim
/// something exclusively at start (a Kafka transactional id) is looked at
/// without claiming it.
pub async fn check_sink(
    name: &str,
    kind: &str,
    settings: toml::Table,
    source: &SourceInfo,
    tables: &[TableId],
) -> Result<Vec<Finding>, BuildError> {
    match kind {
        #[cfg(feature = "kafka")]
        "kafka" => {
            let config =
                toml::Value::Table(settings)
                    .try_into()
                    .map_err(|e: toml::de::Error| BuildError::Config {
                        sink: name.to_string(),
                        message: e.message().to_string(),
                    })?;
            crate::kafka::check(name, config, source, tables).await
        }
        _ => {
            let _ = tables;
            // The outbox routers were checked with the configuration; the
            // sink is built to see that it can start.
            let mut sink = build_sink(name, kind, settings, source, Vec::new()).await?;
            let _ = sink.close().await;
            Ok(Vec::new())
        }
    }
}

/// A reader of what the sink `name` of type `kind` stored, for `courier
/// verify`; an error for a sink type that keeps no rows to compare.
pub async fn build_inspector(
    name: &str,
    kind: &str,
    settings: toml::Table,
) -> Result<Box<dyn Inspector>, BuildError> {
    let settings = toml::Value::Table(settings);
    let parse_err = |e: toml::de::Error| BuildError::Config {
        sink: name.to_string(),
        message: e.message().to_string(),
    };
    match kind {
        #[cfg(feature = "redis")]
        "redis" => Ok(Box::new(
            crate::redis::inspector(name, settings.try_into().map_err(parse_err)?).await?,
        )),
        #[cfg(feature = "clickhouse")]
        "clickhouse" => Ok(Box::new(
            crate::clickhouse::inspector(name, settings.try_into().map_err(parse_err)?).await?,
        )),
        #[cfg(feature = "search")]
        "elasticsearch" | "opensearch" => Ok(Box::new(
            crate::search::inspector(name, settings.try_into().map_err(parse_err)?).await?,
        )),
        other => Err(BuildError::Config {
            sink: name.to_string(),
            message: format!(
                "a {other} sink keeps no rows Courier can read back; verify works on redis, clickhouse, elasticsearch and opensearch sinks"
            ),
        }),
    }
}
