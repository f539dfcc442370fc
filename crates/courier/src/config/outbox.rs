//! `[outbox.NAME]`: the outbox event routers, each validated by the sinks
//! crate and checked against the rest of the configuration.

use std::collections::BTreeMap;

use courier_sinks::outbox::{Router, RouterConfig, Source};

use super::check_name;

/// The `[outbox.NAME]` routers, each checked and sent to a sink that can
/// carry events; they read PostgreSQL, and an outbox table is never one of
/// `source.tables` too.
pub(super) fn routers(
    raw: BTreeMap<String, toml::Table>,
    sinks: &BTreeMap<String, (String, toml::Table)>,
    source: &super::Source,
) -> Result<Vec<Router>, String> {
    let source_tables = match (source, raw.keys().next()) {
        (_, None) => return Ok(Vec::new()),
        (super::Source::Postgres(s), _) => &s.tables,
        (super::Source::Kafka(_), Some(name)) => {
            return Err(format!(
                "outbox.{name}: outbox routers read PostgreSQL's WAL, but this configuration's source is Kafka \
                 (source.type = \"kafka\"): route the events in the Courier that captures PostgreSQL"
            ))
        }
    };
    let mut routers = Vec::new();
    for (name, table) in raw {
        check_name(&format!("outbox.{name}"), &name, 100)?;
        let config: RouterConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("outbox.{name}: {}", e.message()))?;
        let router = config.validate(&name)?;
        match sinks.get(&router.sink) {
            None => {
                return Err(format!(
                    "outbox.{name}.sink = {:?}: there is no [sinks.{}]; add one of type {}",
                    router.sink,
                    router.sink,
                    courier_sinks::OUTBOX_SINK_TYPES.join(", ")
                ))
            }
            Some((kind, _)) if !courier_sinks::OUTBOX_SINK_TYPES.contains(&kind.as_str()) => {
                return Err(format!(
                    "outbox.{name}.sink = {:?} is a {kind} sink, which cannot carry events; use a sink of type {}",
                    router.sink,
                    courier_sinks::OUTBOX_SINK_TYPES.join(", ")
                ))
            }
            Some(_) => {}
        }
        if let Source::Table(t) = &router.source {
            if source_tables.exact_tables().any(|e| e == *t) {
                return Err(format!(
                    "outbox.{name}.table = \"{t}\" is also in source.tables: an outbox table's rows are events, \
                     not rows to capture (and are never snapshotted); remove it from source.tables"
                ));
            }
        }
        routers.push(router);
    }
    Ok(routers)
}
