//! End to end through Kafka: PostgreSQL → Courier (Kafka sink) → Courier
//! workers (`source.type = "kafka"`) → Redis and OpenSearch, on the real
//! broker, Redis and OpenSearch of the `dev/` scripts.
//!
//! Each test has its own database, topic prefix, consumer group, Redis key
//! prefix and index, so they run beside the other tests.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::kafka::{brokers, kafka_config, run_prefix};
use support::load::{create_table, pg_rows, Load};
use support::redis::{clear, standalone_url, RedisNodes};
use support::search::{call, documents, without_nulls, SearchNode};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

/// A worker reading `topic` in consumer group `group` into Redis (keys
/// `<prefix><pk>` in logical database `redis_db`) and, when given, into the
/// search node at `search` (index `<index>`); `start` is `source.start`.
fn worker_config(
    dir: &Path,
    group: &str,
    topic: &str,
    start: &str,
    redis_db: u8,
    prefix: &str,
    search: Option<(&str, &str)>,
) -> String {
    let search = search.map_or(String::new(), |(url, index)| {
        format!("\n[sinks.search]\ntype = \"opensearch\"\nurl = \"{url}\"\nindex = \"{index}\"\n")
    });
    format!(
        r#"
[source]
type = "kafka"
brokers = "{brokers}"
group = "{group}"
topics = ["{topic}"]
start = "{start}"
commit_interval = "200ms"

[source.kafka]
# Fail over quickly when a worker is killed.
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[api]
listen = "off"

[state]
dir = "{state}"

[sinks.cache]
type = "redis"
url = "{redis}"
key = "{prefix}{{pk}}"
{search}"#,
        brokers = brokers(),
        redis = standalone_url(redis_db),
        state = dir.join("state").display(),
    )
}

/// Rows of `expected` that `got` lacks, holds extra, or holds with other values.
fn drift(
    expected: &BTreeMap<String, Value>,
    got: &BTreeMap<String, Value>,
) -> (usize, usize, usize) {
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    let differing = expected
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .count();
    (missing, extra, differing)
}

/// Waits until Redis under `prefix` holds exactly PostgreSQL's rows of `items`.
async fn wait_redis_equal(client: &tokio_postgres::Client, nodes: &RedisNodes, prefix: &str) {
    let expected = pg_rows(client, "items").await;
    let mut last = (0, 0, 0);
    let waited = tokio::time::timeout(CATCH_UP, async {
        loop {
            last = drift(&expected, &nodes.json_rows(prefix).await);
            if last == (0, 0, 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "Redis did not reach PostgreSQL's rows within {CATCH_UP:?}: (missing, extra, differing) = {last:?}"
    );
}

/// Waits until the index `alias` holds exactly PostgreSQL's rows of `items`.
async fn wait_search_equal(client: &tokio_postgres::Client, base: &str, alias: &str) {
    let expected: BTreeMap<String, Value> = pg_rows(client, "items")
        .await
        .into_iter()
        .map(|(k, v)| (k, without_nulls(&v)))
        .collect();
    let mut last = (0, 0, 0);
    let waited = tokio::time::timeout(CATCH_UP, async {
        loop {
            last = drift(&expected, &documents(base, alias).await);
            if last == (0, 0, 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the index did not reach PostgreSQL's rows within {CATCH_UP:?}: (missing, extra, differing) = {last:?}"
    );
}

/// Two workers in one group share a four-partition topic while PostgreSQL
/// is written to; one is killed with SIGKILL (its partitions move to the
/// other) and started again later (they move back). Once the capture
/// caught up, Redis and the search index equal PostgreSQL row for row.
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_in_a_group_survive_kill_9_and_rebalances() {
    let Some(node) = SearchNode::selected("opensearch", 2) else {
        return;
    };
    let base = node.url();
    let db: &'static str = "e2e_kafka_workers";
    let client = fresh_db(db).await;
    create_table(&client, "items", 5_000).await;
    let prefix = run_prefix(db);
    let topic = format!("{prefix}.public.items");
    let key_prefix = format!("{db}:");
    let nodes = RedisNodes::connect(&standalone_url(13), false).await;
    clear(&nodes, &key_prefix).await;
    let alias = format!("{db}_items");
    call(
        &base,
        reqwest::Method::DELETE,
        &format!("/{alias}_v*"),
        None,
    )
    .await;

    let capture_dir = scratch(db);
    let capture = kafka_config(
        db,
        &["public.items"],
        &capture_dir,
        &prefix,
        "partitions = 4",
    );
    let mut capture = CourierProc::start(&capture_dir, &capture);

    let group = format!("{prefix}-workers");
    let index = format!("{db}_{{table}}");
    let workers: Vec<CourierProc> = ["a", "b"]
        .iter()
        .map(|w| {
            let dir = scratch(&format!("{db}_{w}"));
            let config = worker_config(
                &dir,
                &group,
                &topic,
                "committed",
                13,
                &key_prefix,
                Some((&base, &index)),
            );
            CourierProc::start(&dir, &config)
        })
        .collect();
    let [mut a, mut b]: [CourierProc; 2] = workers.try_into().ok().unwrap();

    let load = Load::start(db, "items", 2);
    load.commit_more(300, CATCH_UP).await;
    wait_until("both workers to own partitions", CATCH_UP, || async {
        a.log().contains("assigned partitions") && b.log().contains("assigned partitions")
    })
    .await;
    a.kill9();
    // b takes a's partitions once the group notices a is gone.
    load.commit_more(300, CATCH_UP).await;
    wait_until(
        "the survivor to take the killed worker's partitions",
        CATCH_UP,
        || async { b.log().matches("assigned partitions").count() >= 2 },
    )
    .await;
    a.restart();
    load.commit_more(300, CATCH_UP).await;
    load.stop().await;

    wait_caught_up(&client, db, CATCH_UP).await;
    wait_redis_equal(&client, &nodes, &key_prefix).await;
    wait_search_equal(&client, &base, &alias).await;
    for (name, w) in [("a", &mut a), ("b", &mut b)] {
        assert!(w.stop().success(), "worker {name} log:\n{}", w.log());
    }
    assert!(capture.stop().success(), "capture log:\n{}", capture.log());
}

/// Replay: a new group with `start = "earliest"` rebuilds an empty Redis
/// from the topic alone, with PostgreSQL's current rows (deletes included:
/// the topic holds their records and tombstones).
#[tokio::test(flavor = "multi_thread")]
async fn a_new_group_from_the_earliest_offset_rebuilds_a_store() {
    let db: &'static str = "e2e_kafka_replay";
    let client = fresh_db(db).await;
    create_table(&client, "items", 2_000).await;
    let prefix = run_prefix(db);
    let topic = format!("{prefix}.public.items");
    let capture_dir = scratch(db);
    let capture = kafka_config(
        db,
        &["public.items"],
        &capture_dir,
        &prefix,
        "partitions = 3\nformat = \"json-schema\"",
    );
    let mut capture = CourierProc::start(&capture_dir, &capture);
    let load = Load::start(db, "items", 2);
    load.commit_more(400, CATCH_UP).await;
    load.stop().await;
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(capture.stop().success(), "capture log:\n{}", capture.log());

    // The capture is gone: the topic alone rebuilds the store, twice (a
    // second group replays into the same, already full store: no change).
    let key_prefix = format!("{db}:");
    let nodes = RedisNodes::connect(&standalone_url(13), false).await;
    clear(&nodes, &key_prefix).await;
    for round in ["first", "second"] {
        let dir = scratch(&format!("{db}_{round}"));
        let group = format!("{prefix}-{round}");
        let config = worker_config(&dir, &group, &topic, "earliest", 13, &key_prefix, None);
        let mut worker = CourierProc::start(&dir, &config);
        wait_redis_equal(&client, &nodes, &key_prefix).await;
        assert!(worker.stop().success(), "worker log:\n{}", worker.log());
    }
}

/// A record that is not a change event stops the worker with an error
/// naming topic, partition and offset; the records before it are applied
/// and committed, nothing after it is, and a restart stops at it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_is_not_a_change_stops_the_worker_naming_it() {
    let db = "e2e_kafka_bad_record";
    let prefix = run_prefix(db);
    let topic = format!("{prefix}.public.items");
    support::kafka::dev_kafka(&["topics", "--create", "--topic", &topic, "--partitions", "1"]);
    let good = |id: i64| {
        serde_json::json!({
            "before": null,
            "after": {"id": id, "val": id, "note": "n", "amount": null},
            "source": {"version": "test", "connector": "postgresql", "name": "x", "db": db,
                        "schema": "public", "table": "items", "lsn": 100 + id, "txId": 1, "ts_ms": 0},
            "op": "c", "ts_ms": 0
        })
        .to_string()
    };
    let mut lines = vec![
        format!("{{\"id\":1}}|{}", good(1)),
        format!("{{\"id\":2}}|{}", good(2)),
        "{\"id\":3}|this is not json".to_string(),
        format!("{{\"id\":4}}|{}", good(4)),
    ];
    lines.push(String::new());
    support::kafka::produce_lines(&topic, &lines.join("\n"));

    let key_prefix = format!("{db}:");
    let nodes = RedisNodes::connect(&standalone_url(13), false).await;
    clear(&nodes, &key_prefix).await;
    let dir = scratch(db);
    let group = format!("{prefix}-g");
    let config = worker_config(&dir, &group, &topic, "committed", 13, &key_prefix, None);
    for attempt in ["first", "restarted"] {
        let mut worker = CourierProc::start(&dir, &config);
        let status = worker
            .wait_exit("the worker to stop at the bad record", CATCH_UP)
            .await;
        let log = worker.log();
        assert!(
            !status.success(),
            "{attempt}: the worker went on past a bad record:\n{log}"
        );
        assert!(
            log.contains(&topic) && log.contains("partition 0") && log.contains("offset 2"),
            "{attempt}: the error does not name topic, partition and offset:\n{log}"
        );
        let got = nodes.json_rows(&key_prefix).await;
        let ids: Vec<&String> = got.keys().collect();
        assert_eq!(
            ids,
            ["1", "2"],
            "{attempt}: only the records before the bad one are applied"
        );
    }
    assert_eq!(
        support::kafka::committed_offset(&group, &topic, 0),
        Some(2),
        "the group committed past the bad record"
    );
}
