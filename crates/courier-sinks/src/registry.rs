//! The one explicit list of sink types Courier can build from configuration.

use courier_core::Sink;

use crate::envelope::SourceInfo;
use crate::outbox::{Router, Routers};
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
        "stdout" => Ok(Box::new(crate::stdout::StdoutSink::new(
            settings.try_into().map_err(parse_err)?,
            source,
            outbox,
        )?)),
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
            crate::kafka::build(
                name,
                settings.try_into().map_err(parse_err)?,
                source,
                outbox,
            )
            .await?,
        )),
        "file" => Ok(Box::new(crate::file::FileSink::new(
            settings.try_into().map_err(parse_err)?,
            source,
            outbox,
        )?)),
        other => Err(BuildError::UnknownType {
            sink: name.to_string(),
            kind: other.to_string(),
        }),
    }
}
