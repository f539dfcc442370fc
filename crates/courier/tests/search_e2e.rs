//! End to end: PostgreSQL → courier → a search node, against every real node
//! of `dev/opensearch.sh` (OpenSearch 1, 2, 3) and `dev/elasticsearch.sh`
//! (Elasticsearch 7, 8, 9), or the servers their variables name (see
//! `support::search::SearchNode`); `COURIER_TEST_SEARCH_NODES` narrows the run.
//!
//! Each test has its own database, slot and index alias per node; the tests
//! run one at a time, as each loads the machine with writers and restarts.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use support::load::{create_table, pg_rows};
use support::search::{assert_same_documents, call, documents, without_nulls, SearchNode};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(240);

/// One test at a time in this process.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `kill_9_under_load` once per node, as the tests
/// `kill_9_under_load_opensearch_1`, ..., `kill_9_under_load_elasticsearch_9`.
macro_rules! kill_9_on {
    ($($test:ident: $kind:literal $major:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $test() {
            if let Some(node) = SearchNode::selected($kind, $major) {
                kill_9_under_load(node).await
            }
        }
    )*};
}

kill_9_on!(
    kill_9_under_load_opensearch_1: "opensearch" 1,
    kill_9_under_load_opensearch_2: "opensearch" 2,
    kill_9_under_load_opensearch_3: "opensearch" 3,
    kill_9_under_load_elasticsearch_7: "elasticsearch" 7,
    kill_9_under_load_elasticsearch_8: "elasticsearch" 8,
    kill_9_under_load_elasticsearch_9: "elasticsearch" 9,
);

/// Snapshot, then a concurrent write load with kill -9 restarts of Courier
/// (during the snapshot and while streaming): once caught up, every
/// PostgreSQL row is a document with equal values, no deleted row is found,
/// and a full-text search returns the rows PostgreSQL holds.
async fn kill_9_under_load(node: SearchNode) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let base = node.url();
    // The load runs in spawned tasks, which need the name for good.
    let db: &'static str = format!("e2e_{}_{}_kill9", node.kind, node.major).leak();
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
    let config = search::courier_config(db, &dir, node.kind, &base, &index);

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
