//! End to end: PostgreSQL → courier → OpenSearch, against the real node
//! started by `dev/opensearch.sh` (or the server at `COURIER_TEST_SEARCH`).
//!
//! Each test has its own database, slot and index alias.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use support::load::{create_table, pg_rows};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(240);

fn search_url() -> String {
    static STARTED: OnceLock<()> = OnceLock::new();
    std::env::var("COURIER_TEST_SEARCH").unwrap_or_else(|_| {
        STARTED.get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/opensearch.sh");
            let status = std::process::Command::new("bash")
                .arg(script)
                .arg("start")
                .status()
                .unwrap_or_else(|e| panic!("run dev/opensearch.sh: {e}"));
            assert!(status.success(), "dev/opensearch.sh start failed");
        });
        "http://127.0.0.1:59200".to_string()
    })
}

async fn call(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", search_url()));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Deletes what an earlier run left under `alias`.
async fn drop_index(alias: &str) {
    call(reqwest::Method::DELETE, &format!("/{alias}_v*"), None).await;
}

/// Every document under `alias`, NULL fields left out, by `_id`.
async fn documents(alias: &str) -> BTreeMap<String, Value> {
    call(reqwest::Method::POST, &format!("/{alias}/_refresh"), None).await;
    let mut out = BTreeMap::new();
    let (_, mut page) = call(
        reqwest::Method::POST,
        &format!("/{alias}/_search?scroll=1m"),
        Some(json!({"size": 5000, "sort": ["_doc"]})),
    )
    .await;
    loop {
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        if hits.is_empty() {
            break;
        }
        for h in hits {
            let id = h["_id"].as_str().unwrap().to_string();
            out.insert(id, without_nulls(&h["_source"]));
        }
        let scroll_id = page["_scroll_id"].clone();
        page = call(
            reqwest::Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": scroll_id})),
        )
        .await
        .1;
    }
    out
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A config with one search sink `search` (extra sink keys in `sink`).
fn search_config(db: &str, dir: &Path, sink: &str) -> String {
    format!(
        r#"
[source]
url = "{url}"
slot = "{db}"
tables = ["public.items"]
status_interval = "200ms"
snapshot_chunk_rows = 5000

[api]
listen = "off"

[state]
dir = "{state}"

[sinks.search]
type = "opensearch"
url = "{search}"
{sink}
"#,
        url = pg_url(db),
        state = dir.join("state").display(),
        search = search_url(),
    )
}

/// Snapshot, then a concurrent write load with kill -9 restarts of Courier
/// (during the snapshot and while streaming): once caught up, every
/// PostgreSQL row is a document with equal values, no deleted row is found,
/// and a full-text search returns the rows PostgreSQL holds.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load() {
    let db = "e2e_search_kill9";
    let alias = "e2e_search_kill9_items";
    let client = fresh_db(db).await;
    create_table(&client, "items", 20_000).await;
    drop_index(alias).await;
    let dir = scratch(db);
    let config = search_config(db, &dir, &format!("index = \"{db}_{{table}}\""));

    support::chaos::kill_9_under_load(&client, db, &dir, &config, 4, 300, CATCH_UP).await;

    let expected: BTreeMap<String, Value> = pg_rows(&client, "items")
        .await
        .into_iter()
        .map(|(k, v)| (k, without_nulls(&v)))
        .collect();
    let got = documents(alias).await;
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "documents missing from / resurrected in the index after kill -9"
    );
    let differing: Vec<&String> = expected
        .keys()
        .filter(|k| got[*k] != expected[*k])
        .collect();
    assert!(
        differing.is_empty(),
        "{} documents differ, e.g. id {}: search {} vs postgres {}",
        differing.len(),
        differing[0],
        got[differing[0]],
        expected[differing[0]]
    );

    // Full text: the notes the first writer wrote ("w0 n12", "w0 u7").
    let want: BTreeSet<String> = client
        .query("SELECT id::text FROM items WHERE note LIKE 'w0 %'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!want.is_empty());
    let (_, found) = call(
        reqwest::Method::POST,
        &format!("/{alias}/_search"),
        Some(json!({"size": 10000, "_source": false, "query": {"match": {"note": "w0"}}})),
    )
    .await;
    let found: BTreeSet<String> = found["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        found, want,
        "a match query finds other rows than PostgreSQL holds"
    );
}
