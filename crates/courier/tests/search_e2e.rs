//! End to end: PostgreSQL → courier → a search node, against both real nodes:
//! OpenSearch started by `dev/opensearch.sh` (or the server at
//! `COURIER_TEST_SEARCH`) and Elasticsearch started by `dev/elasticsearch.sh`
//! (or the server at `COURIER_TEST_ELASTICSEARCH`).
//!
//! Each test has its own database, slot and index alias per node; the tests
//! run one at a time, as each loads the machine with writers and restarts.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use support::load::{create_table, pg_rows};
use support::search::{
    assert_same_documents, call, documents, started_elasticsearch, started_node, without_nulls,
};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(240);

/// One test at a time in this process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A real search node and the sink `type` Courier's configuration names it by.
#[derive(Clone, Copy)]
enum Node {
    OpenSearch,
    Elasticsearch,
}

impl Node {
    fn url(self) -> String {
        match self {
            Node::OpenSearch => std::env::var("COURIER_TEST_SEARCH")
                .unwrap_or_else(|_| started_node("main", "http://127.0.0.1:59200")),
            Node::Elasticsearch => std::env::var("COURIER_TEST_ELASTICSEARCH")
                .unwrap_or_else(|_| started_elasticsearch("http://127.0.0.1:59210")),
        }
    }

    fn sink_type(self) -> &'static str {
        match self {
            Node::OpenSearch => "opensearch",
            Node::Elasticsearch => "elasticsearch",
        }
    }

    /// The database, slot and index prefix of the kill -9 test on this node.
    fn kill9_db(self) -> &'static str {
        match self {
            Node::OpenSearch => "e2e_search_kill9",
            Node::Elasticsearch => "e2e_es_kill9",
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_opensearch() {
    kill_9_under_load(Node::OpenSearch).await
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_elasticsearch() {
    kill_9_under_load(Node::Elasticsearch).await
}

/// Snapshot, then a concurrent write load with kill -9 restarts of Courier
/// (during the snapshot and while streaming): once caught up, every
/// PostgreSQL row is a document with equal values, no deleted row is found,
/// and a full-text search returns the rows PostgreSQL holds.
async fn kill_9_under_load(node: Node) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let base = node.url();
    let db = node.kill9_db();
    let alias = format!("{db}_items");
    let client = fresh_db(db).await;
    create_table(&client, "items", 20_000).await;
    call(
        &base,
        reqwest::Method::DELETE,
        &format!("/{alias}_v*"),
        None,
    )
    .await;
    let dir = scratch(db);
    let index = format!("index = \"{db}_{{table}}\"");
    let config = search::courier_config(db, &dir, node.sink_type(), &node.url(), &index);

    support::chaos::kill_9_under_load(&client, db, &dir, &config, 4, 300, CATCH_UP).await;

    let expected: BTreeMap<String, Value> = pg_rows(&client, "items")
        .await
        .into_iter()
        .map(|(k, v)| (k, without_nulls(&v)))
        .collect();
    let got = documents(&base, &alias).await;
    assert_same_documents(&expected, &got, "after kill -9");

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
        &base,
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
