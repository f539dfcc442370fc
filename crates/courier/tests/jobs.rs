//! End to end: verify and rebuild as jobs of the running `courier run`,
//! through its admin API (`POST /v1/sinks/{name}/verify`, `.../rebuild`,
//! `GET /v1/jobs/{id}`), and `verify_every`, against real PostgreSQL and
//! Redis while writers commit to another table.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ::redis::AsyncCommands;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::fold::RowDiff;
use support::load::{create_table, pg_rows, Load};
use support::redis::{clear, standalone_url, RedisNodes};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);
const TOKEN: &str = "jobs-test-token";

/// A Redis sink `cache` over `items` (drifted by the tests, no writer
/// touches it) and `busy` (the writers' table), keys `<prefix><table>:<id>`,
/// with the admin API on `api`; `extra` goes into the sink's settings.
fn config(db: &str, dir: &std::path::Path, api: u16, prefix: &str, extra: &str) -> String {
    let sink = format!(
        "type = \"redis\"\nurl = {:?}\nkey = \"{prefix}{{table}}:{{pk}}\"\n{extra}",
        standalone_url(14)
    );
    sink_config(
        db,
        db,
        &["public.items", "public.busy"],
        dir,
        "cache",
        &sink,
    )
    .replace("listen = \"off\"", &format!("listen = \"127.0.0.1:{api}\""))
}

/// An admin API client: `(status, Location header, JSON body)` of a request.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<&'static str>,
}

impl Api {
    fn new(port: u16, token: Option<&'static str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            token,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, location, body)
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Option<String>, Value) {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn metrics(&self) -> String {
        let mut req = self.http.get(format!("{}/metrics", self.base));
        if let Some(t) = self.token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().text().await.unwrap()
    }

    /// Polls the job at `location` until it is no longer running.
    async fn finished(&self, location: &str) -> Value {
        let started = Instant::now();
        loop {
            let job = self.get(location).await;
            if job["state"] != "running" {
                return job;
            }
            assert!(
                started.elapsed() < CATCH_UP,
                "the job at {location} still runs: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The value of `courier_verify_drift_rows{sink, table}` on /metrics.
fn drift_metric(metrics: &str, sink: &str, table: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("courier_verify_drift_rows{"))
        .filter(|l| {
            l.contains(&format!("sink=\"{sink}\"")) && l.contains(&format!("table=\"{table}\""))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `(missing, extra, different)` example keys of `table` in a verify report.
fn drift(report: &Value, table: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let t = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no report of {table}: {report}"));
    let keys = |kind: &str| -> Vec<String> {
        let mut k: Vec<String> = (t["examples"].as_array().unwrap().iter())
            .filter(|e| e[0] == kind)
            .map(|e| e[1].as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    (keys("missing"), keys("extra"), keys("different"))
}

fn strings(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

/// Verify and rebuild of a Redis cache as jobs of the running instance:
/// the token is required, an unknown sink is a 404 naming the sinks, a
/// second job on a busy sink a 409 naming the running job; the verify job
/// reports exactly the keys damaged behind Courier's back (with progress,
/// in `/v1/status` and on `/metrics`), and the rebuild job leaves the
/// cache equal to PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn verify_and_rebuild_run_as_jobs_of_the_running_instance() {
    let db = "e2e_jobs";
    let prefix = "jobs:";
    let client = fresh_db(db).await;
    create_table(&client, "items", 20_000).await;
    create_table(&client, "busy", 500).await;
    client.batch_execute("ANALYZE items").await.unwrap();
    let cache = RedisNodes::connect(&standalone_url(14), false).await;
    clear(&cache, prefix).await;
    let dir = scratch(db);
    let port = free_port();
    let config = format!(
        "{}\n",
        config(db, &dir, port, prefix, "").replace(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("listen = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\""),
        )
    );
    let courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    let load = Load::start(db, "busy", 2);
    load.commit_more(50, CATCH_UP).await;
    let api = Api::new(port, Some(TOKEN));

    // The token is required, like on every other /v1 route.
    let anonymous = Api::new(port, None);
    let (status, _, _) = anonymous.post("/v1/sinks/cache/verify", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = Api::new(port, Some("wrong"))
        .post("/v1/sinks/cache/rebuild", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(api.get("/v1/jobs").await["jobs"]
        .as_array()
        .unwrap()
        .is_empty());

    // An unknown sink, and options a job does not take.
    let (status, _, body) = api.post("/v1/sinks/nope/verify", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("\"nope\"") && message.contains("cache"),
        "{body}"
    );
    let (status, _, body) = api
        .post("/v1/sinks/cache/rebuild", Some(json!({"repair": true})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("repair"), "{body}");
    let (status, _, body) = api.post("/v1/sinks/cache/verify?timeout=soon", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("timeout"),
        "{body}"
    );
    let (status, _, body) = api.call(reqwest::Method::GET, "/v1/jobs/12345", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Drift behind Courier's back: a key deleted, one altered, one added.
    let mut r = cache.first();
    let key = |id: u32| format!("{prefix}items:{id}");
    let _: () = r.del(key(3)).await.unwrap();
    let row: String = r.hget(key(5), "row").await.unwrap();
    let altered = row.replace("row 5", "row five");
    assert_ne!(row, altered);
    let _: () = r.hset(key(5), "row", altered).await.unwrap();
    let _: () = r
        .hset_multiple(
            key(99_999),
            &[
                ("_courier_version", "1"),
                (
                    "row",
                    r#"{"id":99999,"val":1,"note":"ghost","amount":null}"#,
                ),
            ],
        )
        .await
        .unwrap();

    // A verify job; a second job on the sink while it runs is refused.
    let (status, location, job) = api.post("/v1/sinks/cache/verify", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let location = location.expect("a Location header");
    assert_eq!(location, format!("/v1/jobs/{}", job["id"]));
    assert_eq!(
        (job["kind"].as_str(), job["state"].as_str()),
        (Some("verify"), Some("running"))
    );
    for kind in ["verify", "rebuild"] {
        let (status, _, body) = api.post(&format!("/v1/sinks/cache/{kind}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "second {kind}: {body}");
        assert_eq!(body["job"], job["id"], "{body}");
        assert!(
            body["error"].as_str().unwrap().contains(&location),
            "{body}"
        );
    }
    // While it runs, /v1/status lists it with its progress.
    let running = api.get("/v1/status").await["jobs"]["running"].clone();
    assert!(
        running
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == job["id"]),
        "{running}"
    );
    let done = api.finished(&location).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let report = &done["report"];
    assert_eq!(
        drift(report, "public.items"),
        (
            strings(&["jobs:items:3"]),
            strings(&["jobs:items:99999"]),
            strings(&["jobs:items:5"])
        ),
        "{report}"
    );
    assert_eq!(
        drift(report, "public.busy"),
        (vec![], vec![], vec![]),
        "{report}"
    );
    let items = (done["progress"]["tables"].as_array().unwrap().iter())
        .find(|t| t["table"] == "public.items")
        .unwrap_or_else(|| panic!("no progress of items: {done}"))
        .clone();
    assert_eq!(items["done"], 20_000, "{done}");
    assert_eq!(items["expected"], 20_000, "{done}");
    assert_eq!(items["finished"], true, "{done}");

    // The status document and the metric have the verification's result.
    let status = api.get("/v1/status").await;
    let last = &status["jobs"]["last_verify"]["cache"];
    assert_eq!(last["job"], job["id"], "{status}");
    assert_eq!(last["drift_rows"], 3, "{status}");
    assert_eq!(last["tables"]["public.items"], 3, "{status}");
    let metrics = api.metrics().await;
    assert_eq!(
        drift_metric(&metrics, "cache", "public.items"),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(drift_metric(&metrics, "cache", "public.busy"), Some(0.0));

    // A rebuild job, asked with a query; the cache then equals PostgreSQL.
    let (status, location, job) = api.post("/v1/sinks/cache/rebuild?tables=items", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let done = api.finished(&location.unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let t = &done["report"]["tables"][0];
    assert_eq!(t["table"], "public.items", "{done}");
    assert_eq!(t["written"], 20_000, "{done}");
    assert_eq!(t["removed"], 1, "{done}");
    let expected = pg_rows(&client, "items").await;
    let got = cache.json_rows(&format!("{prefix}items:")).await;
    let diff = RowDiff::of(&expected, &got);
    assert!(
        diff.missing.is_empty() && diff.extra.is_empty() && diff.differing.is_empty(),
        "after the rebuild job: missing {:?}, extra {:?}, differing {:?}",
        diff.missing,
        diff.extra,
        diff.differing
    );

    // With the writers stopped, a verify job with a JSON body finds nothing.
    load.stop().await;
    wait_caught_up(&client, db, CATCH_UP).await;
    let (status, location, _) = api
        .post(
            "/v1/sinks/cache/verify",
            Some(json!({"tables": ["items", "public.busy"]})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = api.finished(&location.unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    for table in ["public.items", "public.busy"] {
        assert_eq!(
            drift(&done["report"], table),
            (vec![], vec![], vec![]),
            "{done}"
        );
    }
    let busy = pg_rows(&client, "busy").await;
    let got = cache.json_rows(&format!("{prefix}busy:")).await;
    assert_eq!(busy.len(), got.len());
    let listed = api.get("/v1/jobs").await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 3, "{listed}");
    assert!(
        !courier.log().contains("row five") && !courier.log().contains("ghost"),
        "a job logged row values"
    );
    assert!(!courier.log().contains(TOKEN), "the token was logged");
    drop(courier);
}

/// `verify_every = "2s"`: the running instance verifies the sink by
/// itself, and the drift found reaches `/metrics` and `/v1/status`.
#[tokio::test(flavor = "multi_thread")]
async fn verify_every_verifies_by_itself_and_publishes_the_drift() {
    let db = "e2e_jobs_every";
    let prefix = "jobsevery:";
    let client = fresh_db(db).await;
    create_table(&client, "items", 1000).await;
    create_table(&client, "busy", 10).await;
    let cache = RedisNodes::connect(&standalone_url(14), false).await;
    clear(&cache, prefix).await;
    let dir = scratch(db);
    let port = free_port();
    let config = config(db, &dir, port, prefix, "verify_every = \"2s\"\n");
    let courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    let api = Api::new(port, None);

    let mut r = cache.first();
    for id in [10, 11] {
        let _: () = r.del(format!("{prefix}items:{id}")).await.unwrap();
    }
    let started = Instant::now();
    loop {
        let metrics = api.metrics().await;
        if drift_metric(&metrics, "cache", "public.items") == Some(2.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no periodic verification reported the 2 deleted keys:\n{}\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("verify"))
                .collect::<Vec<_>>()
                .join("\n"),
            api.get("/v1/status").await["jobs"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = api.get("/v1/status").await;
    let jobs = &status["jobs"];
    assert_eq!(jobs["verify_every_seconds"]["cache"], 2.0, "{jobs}");
    let last = &jobs["last_verify"]["cache"];
    assert_eq!(last["tables"]["public.items"], 2, "{jobs}");
    let listed = api.get("/v1/jobs").await;
    let scheduled: Vec<&Value> = (listed["jobs"].as_array().unwrap().iter())
        .filter(|j| j["trigger"] == "schedule" && j["sink"] == "cache")
        .collect();
    assert!(!scheduled.is_empty(), "{listed}");
    let by_state: BTreeMap<String, usize> = scheduled.iter().fold(BTreeMap::new(), |mut m, j| {
        *m.entry(j["state"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(by_state.get("failed"), None, "{listed}");
    drop(courier);
}
