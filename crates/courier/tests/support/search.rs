//! Reading a search node (Elasticsearch or OpenSearch) the way the search
//! sink's end-to-end tests compare it with PostgreSQL: requests by URL, every
//! document of an alias, and the nodes of `dev/opensearch.sh` and
//! `dev/elasticsearch.sh` (OpenSearch 1, 2, 3 and the overloaded node;
//! Elasticsearch 7, 8, 9), started on first use.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};

/// Runs `dev/opensearch.sh start` for `instance` (`main` or `overload`) once
/// per test process, and returns `url`.
pub fn started_node(instance: &str, url: &str) -> String {
    start_once(
        &format!("opensearch-{instance}"),
        "opensearch.sh",
        &[("COURIER_OPENSEARCH_INSTANCE", instance)],
    );
    url.to_string()
}

/// A real search node of `dev/opensearch.sh` or `dev/elasticsearch.sh`: the
/// sink `type` that names its flavour and its major version.
#[derive(Clone, Copy, Debug)]
pub struct SearchNode {
    /// `opensearch` or `elasticsearch`.
    pub kind: &'static str,
    pub major: u32,
}

impl SearchNode {
    /// The node when the test run selects it: every node unless
    /// `COURIER_TEST_SEARCH_NODES` lists the names of those to test
    /// (`opensearch-1 elasticsearch-9 ...`). A node left out makes the test
    /// a skip (`super::skip`).
    pub fn selected(kind: &'static str, major: u32) -> Option<SearchNode> {
        let node = SearchNode { kind, major };
        match std::env::var("COURIER_TEST_SEARCH_NODES") {
            Ok(list)
                if !list.trim().is_empty() && !list.split([' ', ',']).any(|n| n == node.name()) =>
            {
                super::skip::skip(
                    &format!(
                        "{} is not in COURIER_TEST_SEARCH_NODES={list:?}",
                        node.name()
                    ),
                    "unset COURIER_TEST_SEARCH_NODES to test every search node",
                );
                None
            }
            _ => Some(node),
        }
    }

    /// `opensearch-2`, `elasticsearch-8`, ...
    pub fn name(self) -> String {
        format!("{}-{}", self.kind, self.major)
    }

    /// The node's URL: the server named by its variable
    /// (`COURIER_TEST_SEARCH` for OpenSearch 2, `COURIER_TEST_ELASTICSEARCH`
    /// for Elasticsearch 8, `COURIER_TEST_OPENSEARCH_<N>` and
    /// `COURIER_TEST_ELASTICSEARCH_<N>` for the others), else the dev node,
    /// started once per test process.
    pub fn url(self) -> String {
        let (var, script, instance, port) = match (self.kind, self.major) {
            ("opensearch", 2) => (
                "COURIER_TEST_SEARCH".to_string(),
                "opensearch.sh",
                "COURIER_OPENSEARCH_INSTANCE",
                59200,
            ),
            ("opensearch", n) => (
                format!("COURIER_TEST_OPENSEARCH_{n}"),
                "opensearch.sh",
                "COURIER_OPENSEARCH_INSTANCE",
                if n == 1 { 59202 } else { 59203 },
            ),
            (_, 8) => (
                "COURIER_TEST_ELASTICSEARCH".to_string(),
                "elasticsearch.sh",
                "COURIER_ELASTICSEARCH_INSTANCE",
                59210,
            ),
            (_, n) => (
                format!("COURIER_TEST_ELASTICSEARCH_{n}"),
                "elasticsearch.sh",
                "COURIER_ELASTICSEARCH_INSTANCE",
                if n == 7 { 59211 } else { 59212 },
            ),
        };
        if let Ok(url) = std::env::var(&var) {
            return url;
        }
        start_once(&self.name(), script, &[(instance, &self.major.to_string())]);
        format!("http://127.0.0.1:{port}")
    }
}

/// Runs `dev/<script> start` with `env` unless a call with the same `key`
/// already did in this process.
fn start_once(key: &str, script: &str, env: &[(&str, &str)]) {
    static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if started.iter().any(|k| k == key) {
        return;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dev")
        .join(script);
    let status = std::process::Command::new("bash")
        .arg(path)
        .arg("start")
        .envs(env.iter().copied())
        .status()
        .unwrap_or_else(|e| panic!("run dev/{script}: {e}"));
    assert!(status.success(), "{env:?} dev/{script} start failed");
    started.push(key.to_string());
}

/// One request to the node at `base`: (HTTP status, JSON body or `null`).
pub async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Every document under `alias` on `base`, NULL fields left out, by `_id`.
pub async fn documents(base: &str, alias: &str) -> BTreeMap<String, Value> {
    call(
        base,
        reqwest::Method::POST,
        &format!("/{alias}/_refresh"),
        None,
    )
    .await;
    let mut out = BTreeMap::new();
    let (_, mut page) = call(
        base,
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
            base,
            reqwest::Method::POST,
            "/_search/scroll",
            Some(json!({"scroll": "1m", "scroll_id": scroll_id})),
        )
        .await
        .1;
    }
    out
}

/// `v` with its `null` fields left out (the sink does not write them).
pub fn without_nulls(v: &Value) -> Value {
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

/// Panics unless `got` holds exactly `expected`'s documents with equal values
/// (no row missing, none deleted in PostgreSQL still found, none differing).
pub fn assert_same_documents(
    expected: &BTreeMap<String, Value>,
    got: &BTreeMap<String, Value>,
    when: &str,
) {
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "(missing, resurrected) documents in the index {when}"
    );
    let differing: Vec<&String> = expected
        .keys()
        .filter(|k| got[*k] != without_nulls(&expected[*k]))
        .collect();
    assert!(
        differing.is_empty(),
        "{} documents differ {when}, e.g. id {}: search {} vs postgres {}",
        differing.len(),
        differing[0],
        got[differing[0]],
        expected[differing[0]]
    );
}

/// A Courier config streaming `public.items` of database `db` into one search
/// sink named `search` of type `kind` at `url`, with the extra sink keys in
/// `sink` (the index template, batch limits, ...).
pub fn courier_config(
    db: &str,
    dir: &std::path::Path,
    kind: &str,
    url: &str,
    sink: &str,
) -> String {
    let sink = format!("type = \"{kind}\"\nurl = \"{url}\"\n{sink}");
    super::sink_config(db, db, &["public.items"], dir, "search", &sink)
}
