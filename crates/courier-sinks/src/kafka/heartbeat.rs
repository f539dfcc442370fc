//! Heartbeat records (`heartbeat_interval`): every interval, a record in
//! `heartbeat_topic` (default `__debezium-heartbeat.<prefix>`) with key
//! `{"serverName": "<prefix>"}` and value `{"ts_ms": <now>}`, as Debezium
//! writes them, so a consumer can tell a quiet database from a stopped
//! pipeline.
//!
//! They go through a producer of their own, idempotent and never
//! transactional: the sink's producer may be transactional, and a
//! heartbeat must not wait for a group of changes to commit.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;

use super::client::{base_config, Failure};
use super::config::{Format, Settings};
use crate::envelope::now_ms;

/// The running heartbeat; it stops when dropped.
pub(crate) struct Heartbeat {
    task: JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the heartbeat when the settings ask for one. The topic must
/// exist already.
pub(crate) fn start(settings: &Settings, sink: &str) -> Result<Option<Heartbeat>, Failure> {
    let Some((every, topic)) = settings.heartbeat.clone() else {
        return Ok(None);
    };
    let mut config = base_config(settings, sink);
    // A heartbeat that cannot be delivered within a few intervals is stale:
    // the next one replaces it.
    let timeout = (every * 3).max(Duration::from_secs(5));
    config
        .set("client.id", format!("courier-{sink}-heartbeat"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", timeout.as_millis().to_string());
    let producer: FutureProducer = config.create().map_err(|e| Failure::from(&e))?;
    let key = key(&settings.prefix, settings.format);
    let format = settings.format;
    let sink = sink.to_string();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut failing = false;
        loop {
            tick.tick().await;
            let now = now_ms();
            let value = value(now, format);
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&value)
                .timestamp(now);
            match producer.send(record, Duration::ZERO).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(sink = %sink, topic = %topic, "heartbeats are delivered again");
                }
                Ok(_) => {}
                Err((e, _)) if !failing => {
                    failing = true;
                    tracing::warn!(sink = %sink, topic = %topic, error = %Failure::from(&e).message,
                        "a heartbeat was not delivered; retrying every interval");
                }
                Err(_) => {}
            }
        }
    });
    Ok(Some(Heartbeat { task }))
}

fn key(prefix: &str, format: Format) -> Vec<u8> {
    let field = serde_json::json!({"type": "string", "optional": false, "field": "serverName"});
    document(
        serde_json::json!({ "serverName": prefix }),
        field,
        "io.debezium.connector.common.ServerNameKey",
        format,
    )
}

fn value(now_ms: i64, format: Format) -> Vec<u8> {
    let field = serde_json::json!({"type": "int64", "optional": false, "field": "ts_ms"});
    document(
        serde_json::json!({ "ts_ms": now_ms }),
        field,
        "io.debezium.connector.common.Heartbeat",
        format,
    )
}

/// `payload` alone, or with `json-schema` wrapped with the Connect schema
/// of a one-field struct named `name`.
fn document(
    payload: serde_json::Value,
    field: serde_json::Value,
    name: &str,
    format: Format,
) -> Vec<u8> {
    let doc = match format {
        Format::Json => payload,
        Format::JsonSchema => serde_json::json!({
            "schema": {"type": "struct", "fields": [field], "optional": false, "name": name, "version": 1},
            "payload": payload,
        }),
    };
    doc.to_string().into_bytes()
}
