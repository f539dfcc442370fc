//! End to end under forced overload: PostgreSQL → courier → an OpenSearch
//! node whose write thread pool has one thread and a queue of one
//! (`COURIER_OPENSEARCH_INSTANCE=overload dev/opensearch.sh`, or the server
//! at `COURIER_TEST_SEARCH_OVERLOAD`), while the test floods the same node
//! with `_bulk` requests of its own, so the node refuses many of Courier's
//! documents with 429. Courier must retry exactly those and converge.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use support::bulk_tap::{self, BulkCounts};
use support::load::{create_table, pg_rows, Load};
use support::search::{assert_same_documents, call, documents, started_node, without_nulls};
use support::*;

/// Longest the flood may last while waiting for the node to refuse
/// Courier's documents while it streams: a guard, not what is asserted.
const OVERLOAD_AT_MOST: Duration = Duration::from_secs(300);
const CATCH_UP: Duration = Duration::from_secs(120);
/// Transactions the load commits once the flood is over.
const CALM_TRANSACTIONS: u64 = 100;
/// Concurrent `_bulk` senders of the flood, documents per request, and each
/// sender's pause between requests: enough to keep the node's write pool
/// (one thread, a queue of one) mostly full, with gaps Courier can use.
const NOISE_SENDERS: usize = 3;
const NOISE_DOCS: usize = 300;
const NOISE_PAUSE: Duration = Duration::from_millis(60);

fn overload_url() -> String {
    std::env::var("COURIER_TEST_SEARCH_OVERLOAD")
        .unwrap_or_else(|_| started_node("overload", "http://127.0.0.1:59201"))
}

/// Write-pool rejections the node counted since it started.
async fn write_rejections(base: &str) -> u64 {
    let (status, stats) = call(base, Method::GET, "/_nodes/stats/thread_pool", None).await;
    assert_eq!(status, 200, "thread pool stats: {stats}");
    stats["nodes"]
        .as_object()
        .into_iter()
        .flat_map(|nodes| nodes.values())
        .filter_map(|n| n["thread_pool"]["write"]["rejected"].as_u64())
        .sum()
}

/// `NOISE_SENDERS` tasks sending `_bulk` requests to `index` on `base` until
/// `stop`; returns (requests, items refused with 429).
async fn flood(base: String, index: String, stop: Arc<AtomicBool>) -> (u64, u64) {
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for s in 0..NOISE_SENDERS {
        let (http, base, index, stop) = (http.clone(), base.clone(), index.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut requests, mut refused) = (0u64, 0u64);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut body = String::new();
                for i in 0..NOISE_DOCS {
                    // Ids repeat, so the noise index stays small.
                    let id = (s * NOISE_DOCS + i + n) % 5_000;
                    body.push_str(&format!(
                        "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{id}\"}}}}\n"
                    ));
                    body.push_str(&format!(
                        "{{\"sender\":{s},\"n\":{n},\"pad\":\"{}\"}}\n",
                        "x".repeat(200)
                    ));
                }
                n += 1;
                let resp = http
                    .post(format!("{base}/_bulk"))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await;
                requests += 1;
                if let Ok(r) = resp {
                    let text = r.text().await.unwrap_or_default();
                    refused += text.matches("\"status\":429").count() as u64;
                }
                tokio::time::sleep(NOISE_PAUSE).await;
            }
            (requests, refused)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (r, x) = t.await.unwrap();
        total = (total.0 + r, total.1 + x);
    }
    total
}

/// The sink settings of the overload run.
const SINK: &str = r#"
# Three shards: one bulk request becomes three shard requests on the node,
# so some of its items are refused while others are applied.
number_of_shards = 3
number_of_replicas = 0
batch_size = 500
"#;

/// Snapshot and a concurrent write load while the node's write pool is
/// flooded: the node refuses many of Courier's documents with 429 (often some
/// items of a request while applying the others), during the snapshot and
/// while streaming; Courier keeps running, and once the flood and the load
/// stop the index holds exactly PostgreSQL's rows.
#[tokio::test(flavor = "multi_thread")]
async fn converges_under_forced_overload() {
    let started = Instant::now();
    let db = "e2e_search_overload";
    let alias = "e2e_search_overload_items";
    let noise = "e2e_search_overload_noise";
    let node = overload_url();
    let client = fresh_db(db).await;
    // A small snapshot (the writers insert ids up to 20 000): under the
    // flood it is copied at a fraction of the usual speed.
    create_table(&client, "items", 2_000).await;
    call(&node, Method::DELETE, &format!("/{alias}_v*"), None).await;
    call(&node, Method::DELETE, &format!("/{noise}"), None).await;
    let (status, body) = call(
        &node,
        Method::PUT,
        &format!("/{noise}"),
        Some(json!({"settings": {"number_of_shards": 3, "number_of_replicas": 0}})),
    )
    .await;
    assert_eq!(status, 200, "create the noise index: {body}");
    let rejected_before = write_rejections(&node).await;

    let (tap, counts) = bulk_tap::start(&node).await;
    let dir = scratch(db);
    let stop_noise = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn(flood(node.clone(), noise.to_string(), stop_noise.clone()));
    let load = Load::start(db, "items", 3);
    let sink = format!("index = \"{db}_{{table}}\"\n{SINK}");
    let config = search::courier_config(db, &dir, "opensearch", &tap, &sink);
    let mut courier = CourierProc::start(&dir, &config);

    // Flood until Courier streams, the node refused some of its documents
    // while it streamed (not only during the snapshot), and it applied some
    // items of a request of Courier's while refusing others.
    let refused = |c: &BulkCounts| BulkCounts::get(&c.refused_items);
    let mut refused_at_stream = None;
    loop {
        assert!(
            courier.is_running(),
            "courier exited under overload; log:\n{}",
            courier.log()
        );
        if refused_at_stream.is_none() && courier.log().contains("streaming changes") {
            refused_at_stream = Some(refused(&counts));
        }
        let refused_while_streaming = refused_at_stream.is_some_and(|r| refused(&counts) > r);
        if refused_while_streaming && BulkCounts::get(&counts.partial_requests) > 0 {
            break;
        }
        assert!(
            started.elapsed() < OVERLOAD_AT_MOST,
            "after {OVERLOAD_AT_MOST:?} of flooding the node had not yet refused documents of \
             Courier's while it streams and applied others of the same request: streaming {}, \
             tap counts {counts:?}; log:\n{}",
            refused_at_stream.is_some(),
            courier.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_noise.store(true, Ordering::Relaxed);
    let (noise_requests, noise_refused) = flood.await.unwrap();
    let flood_ended = started.elapsed();
    // The load goes on with the node calm again.
    load.commit_more(CALM_TRANSACTIONS, CATCH_UP).await;
    let txns = load.stop().await;

    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(
        courier.is_running(),
        "courier exited; log:\n{}",
        courier.log()
    );
    let rejected_after = write_rejections(&node).await;

    let expected: BTreeMap<String, Value> = pg_rows(&client, "items")
        .await
        .into_iter()
        .map(|(k, v)| (k, without_nulls(&v)))
        .collect();
    let got = documents(&node, alias).await;
    assert_same_documents(&expected, &got, "after the overload");
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let node_rejected = rejected_after.saturating_sub(rejected_before);
    eprintln!(
        "overload: node write-pool rejections {node_rejected}; flood {noise_requests} requests, {noise_refused} items refused; \
         courier bulk requests {}, refused whole {}, items refused {}, items applied {}, partly refused requests {}; \
         {txns} transactions, {} rows; flood ended at {flood_ended:?}, converged and checked at {:?}",
        BulkCounts::get(&counts.requests),
        BulkCounts::get(&counts.refused_requests),
        BulkCounts::get(&counts.refused_items),
        BulkCounts::get(&counts.applied_items),
        BulkCounts::get(&counts.partial_requests),
        expected.len(),
        started.elapsed(),
    );
    assert!(node_rejected > 0, "the node rejected no writes");
    assert!(
        BulkCounts::get(&counts.refused_items) > 0,
        "the node never refused items of Courier's requests: {counts:?}"
    );
    assert!(
        BulkCounts::get(&counts.partial_requests) > 0,
        "the node never applied some items of a request of Courier's while refusing others: {counts:?}"
    );

    call(&node, Method::DELETE, &format!("/{noise}"), None).await;
    drop_db(db).await;
}
