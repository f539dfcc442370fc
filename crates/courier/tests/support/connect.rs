//! The dev Kafka Connect worker (`dev/kafka-connect.sh`, or the one at
//! `COURIER_TEST_KAFKA_CONNECT`): connectors created and removed through
//! its REST API.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The worker's REST URL.
pub fn connect_url() -> String {
    std::env::var("COURIER_TEST_KAFKA_CONNECT")
        .unwrap_or_else(|_| "http://127.0.0.1:58083".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// Whether the worker answers and has the connector class `plugin`, and
/// the broker (`COURIER_TEST_KAFKA`, else `dev/kafka.sh`'s) accepts
/// connections; otherwise the reason.
pub async fn services_missing(plugin: &str) -> Option<String> {
    let url = connect_url();
    match reqwest::get(format!("{url}/connector-plugins")).await {
        Err(e) => return Some(format!("no Kafka Connect worker answers at {url} ({e})")),
        Ok(r) => {
            if !r.text().await.unwrap_or_default().contains(plugin) {
                return Some(format!(
                    "the Kafka Connect worker at {url} has no {plugin} plugin"
                ));
            }
        }
    }
    let brokers =
        std::env::var("COURIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:59092".to_string());
    let first = brokers.split(',').next().unwrap_or_default().trim();
    if std::net::TcpStream::connect(first).is_err() {
        return Some(format!("no Kafka broker at {first}"));
    }
    None
}

/// A connector of the worker, deleted when dropped (a failed test leaves no
/// connector behind to consume topics no one writes any more).
pub struct Connector {
    url: String,
    name: String,
    deleted: bool,
}

impl Connector {
    /// `PUT /connectors/NAME/config`, then waits until the connector and
    /// its task run.
    pub async fn create(name: &str, config: Value) -> Connector {
        let url = connect_url();
        let c = Connector {
            url: url.clone(),
            name: name.to_string(),
            deleted: false,
        };
        let resp = reqwest::Client::new()
            .put(format!("{url}/connectors/{name}/config"))
            .header("content-type", "application/json")
            .body(config.to_string())
            .send()
            .await
            .expect("PUT the connector's config");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "the worker refused connector {name} ({status}): {body}"
        );
        let start = Instant::now();
        loop {
            let s = c.status().await;
            let states: Vec<&str> = std::iter::once(&s["connector"]["state"])
                .chain(
                    s["tasks"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| &t["state"]),
                )
                .filter_map(Value::as_str)
                .collect();
            if s["tasks"].as_array().is_some_and(|t| !t.is_empty())
                && states.iter().all(|st| *st == "RUNNING")
            {
                return c;
            }
            c.assert_not_failed(&s);
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "connector {name} is not running after 60 s: {s}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `GET /connectors/NAME/status` (null when it does not answer).
    pub async fn status(&self) -> Value {
        let Ok(resp) = reqwest::get(format!("{}/connectors/{}/status", self.url, self.name)).await
        else {
            return Value::Null;
        };
        serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null)
    }

    /// Panics with the trace when the connector or a task failed: the JDBC
    /// sink stops its task on a record it cannot write.
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
        let resp = reqwest::Client::new()
            .delete(format!("{}/connectors/{}", self.url, self.name))
            .send()
            .await
            .expect("DELETE the connector");
        assert!(
            resp.status().is_success(),
            "delete connector {}: {}",
            self.name,
            resp.status()
        );
        self.deleted = true;
        let gone = reqwest::get(format!("{}/connectors/{}", self.url, self.name))
            .await
            .expect("GET the deleted connector")
            .status();
        assert_eq!(gone, 404, "connector {} still listed", self.name);
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Command::new("curl")
                .args(["-sS", "--max-time", "10", "-X", "DELETE"])
                .arg(format!("{}/connectors/{}", self.url, self.name))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The settings of Debezium's PostgreSQL source connector capturing
/// `tables` (`public.t,public.u`) of the test database `db` with pgoutput,
/// under topic prefix `prefix`, with its own slot and publication named
/// `slot` (the topics get `partitions` partitions); `more` adds or
/// overrides settings.
pub fn debezium_postgres(
    db: &str,
    prefix: &str,
    slot: &str,
    tables: &str,
    partitions: u32,
    more: Value,
) -> Value {
    let pg = url::Url::parse(&super::pg_url(db)).expect("the test's PostgreSQL URL");
    let mut settings = serde_json::json!({
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "database.hostname": pg.host_str().unwrap_or("127.0.0.1"),
        "database.port": pg.port().unwrap_or(5432).to_string(),
        "database.user": pg.username(),
        "database.password": pg.password().unwrap_or_default(),
        "database.dbname": db,
        "topic.prefix": prefix,
        "plugin.name": "pgoutput",
        "slot.name": slot,
        "publication.name": slot,
        "publication.autocreate.mode": "filtered",
        "table.include.list": tables,
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": partitions.to_string(),
    });
    if let (Some(all), Value::Object(more)) = (settings.as_object_mut(), more) {
        all.extend(more);
    }
    settings
}
