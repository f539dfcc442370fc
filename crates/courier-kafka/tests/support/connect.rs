//! The test Kafka Connect worker (`dev/kafka-connect.sh`, or
//! `COURIER_TEST_KAFKA_CONNECT`) and Debezium's PostgreSQL connector on it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const POSTGRES_CONNECTOR: &str = "io.debezium.connector.postgresql.PostgresConnector";

pub fn url() -> String {
    std::env::var("COURIER_TEST_KAFKA_CONNECT")
        .unwrap_or_else(|_| "http://127.0.0.1:58083".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Why the worker cannot run Debezium's PostgreSQL connector, if it cannot.
pub async fn missing() -> Option<String> {
    let url = url();
    match reqwest::get(format!("{url}/connector-plugins")).await {
        Err(e) => Some(format!("no Kafka Connect worker answers at {url} ({e})")),
        Ok(r) => {
            let text = r.text().await.unwrap_or_default();
            (!text.contains(POSTGRES_CONNECTOR))
                .then(|| format!("the Kafka Connect worker at {url} has no {POSTGRES_CONNECTOR}"))
        }
    }
}

/// Debezium's PostgreSQL connector on database `db`, topics
/// `<prefix>.<schema>.<table>`, its own slot and publication named
/// `prefix`, capturing `tables`; `extra` adds or overrides settings.
pub fn debezium_config(db: &str, prefix: &str, tables: &[&str], extra: Value) -> Value {
    let (host, port) = super::pg::host_port();
    let mut config = json!({
        "connector.class": POSTGRES_CONNECTOR,
        "database.hostname": host,
        "database.port": port.to_string(),
        "database.user": "postgres",
        "database.password": "postgres",
        "database.dbname": db,
        "topic.prefix": prefix,
        "plugin.name": "pgoutput",
        "slot.name": prefix,
        "publication.name": prefix,
        "publication.autocreate.mode": "filtered",
        "table.include.list": tables.join(","),
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
        "tasks.max": "1",
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    config
}

/// A connector of the worker; deleted when dropped, so a failed test
/// leaves no connector reading its database.
pub struct Connector {
    name: String,
    deleted: bool,
}

impl Connector {
    /// Creates the connector and returns at once (its task may still be
    /// starting, or waiting for PostgreSQL to create its slot).
    pub async fn start(name: &str, config: &Value) -> Connector {
        let resp = reqwest::Client::new()
            .put(format!("{}/connectors/{name}/config", url()))
            .header("content-type", "application/json")
            .body(config.to_string())
            .send()
            .await
            .expect("PUT the connector's config");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "the worker refused {name} ({status}): {body}"
        );
        Connector {
            name: name.to_string(),
            deleted: false,
        }
    }

    /// Creates the connector and waits until it and its task run.
    pub async fn create(name: &str, config: &Value) -> Connector {
        let c = Connector::start(name, config).await;
        let started = Instant::now();
        loop {
            let s = c.status().await;
            c.assert_not_failed(&s);
            let tasks = s["tasks"].as_array().cloned().unwrap_or_default();
            if s["connector"]["state"] == "RUNNING"
                && !tasks.is_empty()
                && tasks.iter().all(|t| t["state"] == "RUNNING")
            {
                return c;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "connector {name} does not run after 90 s: {s}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn status(&self) -> Value {
        let Ok(r) = reqwest::get(format!("{}/connectors/{}/status", url(), self.name)).await else {
            return Value::Null;
        };
        serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// Panics with the trace of a failed connector or task.
    pub fn assert_not_failed(&self, s: &Value) {
        let failed = std::iter::once(&s["connector"])
            .chain(s["tasks"].as_array().into_iter().flatten())
            .find(|t| t["state"] == "FAILED");
        if let Some(t) = failed {
            panic!(
                "connector {} failed:\n{}",
                self.name,
                t["trace"].as_str().unwrap_or("(no trace)")
            );
        }
    }

    pub async fn delete(mut self) {
        let _ = reqwest::Client::new()
            .delete(format!("{}/connectors/{}", url(), self.name))
            .send()
            .await;
        self.deleted = true;
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Command::new("curl")
                .args(["-sS", "--max-time", "10", "-X", "DELETE"])
                .arg(format!("{}/connectors/{}", url(), self.name))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
