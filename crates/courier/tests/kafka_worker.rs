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
use support::redis::{clear, standalone_url, OwnRedis, RedisNodes};
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

/// Polls `read` until it holds exactly `expected`'s rows, panicking with
/// the last (missing, extra, differing) counts and the first differing
/// row after `CATCH_UP`.
async fn wait_rows_equal<F, Fut>(store: &str, expected: &BTreeMap<String, Value>, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = BTreeMap<String, Value>>,
{
    let mut last = (0, 0, 0);
    let mut got = BTreeMap::new();
    let waited = tokio::time::timeout(CATCH_UP, async {
        loop {
            got = read().await;
            last = drift(expected, &got);
            if last == (0, 0, 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let first = expected
        .iter()
        .find(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .map(|(k, v)| (k, v, &got[k]));
    assert!(
        waited.is_ok(),
        "{store} did not reach the expected rows within {CATCH_UP:?}: (missing, extra, differing) = {last:?}; \
         first differing (key, expected, got): {first:?}"
    );
}

/// Waits until Redis under `prefix` holds exactly PostgreSQL's rows of `items`.
async fn wait_redis_equal(client: &tokio_postgres::Client, nodes: &RedisNodes, prefix: &str) {
    let expected = pg_rows(client, "items").await;
    wait_rows_equal("Redis", &expected, || nodes.json_rows(prefix)).await;
}

/// Waits until the index `alias` holds exactly PostgreSQL's rows of `items`.
async fn wait_search_equal(client: &tokio_postgres::Client, base: &str, alias: &str) {
    let expected: BTreeMap<String, Value> = pg_rows(client, "items")
        .await
        .into_iter()
        .map(|(k, v)| (k, without_nulls(&v)))
        .collect();
    wait_rows_equal("the index", &expected, || documents(base, alias)).await;
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
    let database = "courier_e2e_kafka_replay";
    clickhouse(&format!("DROP DATABASE IF EXISTS {database}")).await;
    clickhouse(&format!("CREATE DATABASE {database}")).await;
    for round in ["first", "second"] {
        let dir = scratch(&format!("{db}_{round}"));
        let group = format!("{prefix}-{round}");
        let mut config = worker_config(&dir, &group, &topic, "earliest", 13, &key_prefix, None);
        config.push_str(&format!(
            "\n[sinks.analytics]\ntype = \"clickhouse\"\nurl = \"{CLICKHOUSE}\"\ndatabase = \"{database}\"\n"
        ));
        let mut worker = CourierProc::start(&dir, &config);
        wait_until(
            "the group to apply and commit the whole topic",
            CATCH_UP,
            || async {
                let (group, topic) = (group.clone(), topic.clone());
                tokio::task::spawn_blocking(move || support::kafka::group_caught_up(&group, &topic))
                    .await
                    .unwrap()
            },
        )
        .await;
        wait_redis_equal(&client, &nodes, &key_prefix).await;
        let expected = pg_rows(&client, "items").await;
        let got = clickhouse_items(database).await;
        assert_eq!(
            drift(&expected, &got),
            (0, 0, 0),
            "{round} replay: (missing, extra, differing) rows in ClickHouse"
        );
        assert!(worker.stop().success(), "worker log:\n{}", worker.log());
    }
}

/// The current rows of `database.items`, in the shape of `pg_rows`.
async fn clickhouse_items(database: &str) -> BTreeMap<String, Value> {
    clickhouse(&format!(
        "SELECT id, val, note, toString(amount) AS amount, isNull(amount) AS amount_null \
         FROM {database}.items_current FORMAT JSONEachRow"
    ))
    .await
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| {
        let mut r: Value = serde_json::from_str(l).unwrap();
        let null = r["amount_null"] == serde_json::json!(1);
        let obj = r.as_object_mut().unwrap();
        obj.remove("amount_null");
        if null {
            obj.insert("amount".into(), Value::Null);
        }
        (r["id"].to_string(), r)
    })
    .collect()
}

/// A record that is not a change event stops the worker with an error
/// naming topic, partition and offset; the records before it are applied
/// and committed, nothing after it is, and a restart stops at it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_is_not_a_change_stops_the_worker_naming_it() {
    let db = "e2e_kafka_bad_record";
    let (prefix, topic) = topic_with_a_bad_record(db);

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

/// A one-partition topic of `db`'s `public.items` holding the inserts of
/// ids 1 and 2, then at offset 2 a record that is not JSON (key `{"id":3}`,
/// value `this is not json`, header `origin: test`), then the insert of id
/// 4; returns the topic's prefix and name.
fn topic_with_a_bad_record(db: &str) -> (String, String) {
    let prefix = run_prefix(db);
    let topic = format!("{prefix}.public.items");
    support::kafka::dev_kafka(&["topics", "--create", "--topic", &topic, "--partitions", "1"]);
    let line = |id: i64| format!("{{\"id\":{id}}}|{}\n", insert_record(db, id));
    support::kafka::produce_lines(&topic, &(line(1) + &line(2)));
    support::kafka::produce_with_headers(
        &topic,
        b"{\"id\":3}",
        b"this is not json",
        &[("origin", "test")],
    );
    support::kafka::produce_lines(&topic, &line(4));
    (prefix, topic)
}

/// With `source.dead_letter_topic`, a record that is not a change event
/// goes to that topic as it came (key, value, its headers) with headers
/// naming its topic, partition, offset and the error; the worker applies
/// and commits everything around it, counts it in `/v1/status` and
/// `/metrics`, and goes on running.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_is_not_a_change_goes_to_the_dead_letter_topic() {
    let db = "e2e_kafka_dead_letter";
    let (prefix, topic) = topic_with_a_bad_record(db);
    let dead = format!("{prefix}.dead_letters");
    support::kafka::dev_kafka(&["topics", "--create", "--topic", &dead, "--partitions", "1"]);
    let key_prefix = format!("{db}:");
    let nodes = RedisNodes::connect(&standalone_url(13), false).await;
    clear(&nodes, &key_prefix).await;
    let dir = scratch(db);
    let group = format!("{prefix}-g");
    let api = free_port();
    let config = worker_config(&dir, &group, &topic, "committed", 13, &key_prefix, None)
        .replace(
            "commit_interval = \"200ms\"",
            &format!("commit_interval = \"200ms\"\ndead_letter_topic = \"{dead}\""),
        )
        .replace("listen = \"off\"", &format!("listen = \"127.0.0.1:{api}\""));
    let path = dir.join("check.toml");
    std::fs::write(&path, &config).unwrap();
    let (_, out, err) = courier_cmd(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "ok    source.dead_letter_topic: {dead}: 1 partition(s)"
        )),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    let mut worker = CourierProc::start(&dir, &config);
    wait_until("the group to commit the whole topic", CATCH_UP, || async {
        let (group, topic) = (group.clone(), topic.clone());
        tokio::task::spawn_blocking(move || support::kafka::group_caught_up(&group, &topic))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(support::kafka::committed_offset(&group, &topic, 0), Some(4));
    let got = nodes.json_rows(&key_prefix).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["1", "2", "4"],
        "the records around the bad one are applied"
    );

    let letters = support::kafka::read_raw(&dead).await;
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.key.as_deref(), Some(&b"{\"id\":3}"[..]));
    assert_eq!(letter.value.as_deref(), Some(&b"this is not json"[..]));
    assert_eq!(letter.header("origin"), Some(Some("test")));
    assert_eq!(
        letter.header("courier.dead_letter.topic"),
        Some(Some(topic.as_str()))
    );
    assert_eq!(
        letter.header("courier.dead_letter.partition"),
        Some(Some("0"))
    );
    assert_eq!(letter.header("courier.dead_letter.offset"), Some(Some("2")));
    let error = letter
        .header("courier.dead_letter.error")
        .flatten()
        .unwrap_or_default();
    assert!(error.contains("the value is not JSON"), "{error}");

    let (s, metrics, _, _) = status_and_metrics(api).await.expect("the status answers");
    assert_eq!(s["source"]["kafka"]["dead_letters"], 1, "{s}");
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("courier_kafka_dead_letters_total{") && l.contains(&topic));
    assert!(
        counted.is_some_and(|l| l.ends_with(" 1")),
        "courier_kafka_dead_letters_total: {counted:?}"
    );
    assert!(worker.is_running(), "the worker stopped:\n{}", worker.log());
    let log = worker.log();
    assert!(
        log.contains("went to the dead-letter topic") && !log.contains("this is not json"),
        "the log names the dead letter and never its value:\n{log}"
    );
    assert!(worker.stop().success(), "worker log:\n{log}");

    // A dead-letter topic that does not exist stops the worker at start.
    let missing = format!("{prefix}.no_such_topic");
    let config = config.replace(&dead, &missing);
    let mut worker = CourierProc::start(&dir, &config);
    let status = worker
        .wait_exit("the worker to refuse a missing dead-letter topic", CATCH_UP)
        .await;
    let log = worker.log();
    assert!(
        !status.success() && log.contains(&format!("topic {missing} does not exist")),
        "{log}"
    );
}

/// A `key|value` line of an insert into `public.items` of `db` with id
/// `id`, as a Debezium-shaped producer writes it (for `produce_lines`).
fn insert_record(db: &str, id: i64) -> String {
    serde_json::json!({
        "before": null,
        "after": {"id": id, "val": id, "note": "n", "amount": null},
        "source": {"version": "test", "connector": "postgresql", "name": "x", "db": db,
                    "schema": "public", "table": "items", "lsn": 100 + id, "txId": 1, "ts_ms": 0},
        "op": "c", "ts_ms": 0
    })
    .to_string()
}

/// Milliseconds since the epoch, now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The worker's `/v1/status` and `/metrics` on port `api`, with the
/// times just before the request and just after the answer.
async fn status_and_metrics(api: u16) -> Option<(Value, String, i64, i64)> {
    let asked = now_ms();
    let get = |path: &str| reqwest::get(format!("http://127.0.0.1:{api}{path}"));
    let status = get("/v1/status").await.ok()?.text().await.ok()?;
    let metrics = get("/metrics").await.ok()?.text().await.ok()?;
    let answered = now_ms();
    Some((
        serde_json::from_str(&status).ok()?,
        metrics,
        asked,
        answered,
    ))
}

/// The value of `courier_kafka_lag_ms` for `topic`'s `partition` in a
/// Prometheus text.
fn lag_ms_metric(metrics: &str, topic: &str, partition: i64) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("courier_kafka_lag_ms{"))
        .filter(|l| l.contains(&format!("topic=\"{topic}\"")))
        .find(|l| l.contains(&format!("partition=\"{partition}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Lag in time: while the worker's only store is down, every partition it
/// owns shows in `/v1/status` and in `/metrics` a `lag_ms` of exactly the
/// age of its oldest record not applied (at least the time since the last
/// record was produced, at most the time since the first was), growing;
/// once the store is up and the records applied, it is 0 again and
/// `lag_records` too.
#[tokio::test(flavor = "multi_thread")]
async fn lag_in_ms_is_the_age_of_the_oldest_record_not_applied() {
    let db = "e2e_kafka_lag";
    let prefix = run_prefix(db);
    let topic = format!("{prefix}.public.items");
    support::kafka::dev_kafka(&["topics", "--create", "--topic", &topic, "--partitions", "2"]);
    let lines: Vec<String> = (1..=200)
        .map(|id| format!("{{\"id\":{id}}}|{}", insert_record(db, id)))
        .collect();
    let first_produced = now_ms();
    support::kafka::produce_lines(&topic, &lines.join("\n"));
    let last_produced = now_ms();
    let ends = support::kafka::end_offsets(&topic);
    assert!(
        ends.iter().all(|(_, end)| *end > 0),
        "both partitions hold records: {ends:?}"
    );

    let dir = scratch(db);
    let mut redis = OwnRedis::new(&dir);
    let api = free_port();
    let key_prefix = format!("{db}:");
    let config = worker_config(
        &dir,
        &format!("{prefix}-g"),
        &topic,
        "committed",
        13,
        &key_prefix,
        None,
    )
    .replace(&standalone_url(13), &redis.url())
    .replace("listen = \"off\"", &format!("listen = \"127.0.0.1:{api}\""));
    let mut worker = CourierProc::start(&dir, &config);

    let partitions = |s: &Value| -> Vec<Value> {
        s["source"]["kafka"]["partitions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let lagging = |owned: &[Value], metrics: &str| {
        owned.len() == 2
            && owned.iter().all(|p| {
                let n = p["partition"].as_i64().unwrap_or(-1);
                p["lag_ms"].as_u64().unwrap_or(0) > 0
                    && lag_ms_metric(metrics, &topic, n).is_some_and(|v| v > 0.0)
            })
    };
    let started = std::time::Instant::now();
    let mut readings = Vec::new();
    while readings.is_empty() {
        assert!(
            started.elapsed() < CATCH_UP,
            "both partitions did not show lag while the store is down:\n{}",
            worker.log()
        );
        if let Some((s, metrics, asked, answered)) = status_and_metrics(api).await {
            let owned = partitions(&s);
            if lagging(&owned, &metrics) {
                readings.push((owned, asked, answered));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, _, asked, answered) = status_and_metrics(api).await.expect("the status answers");
    assert_eq!(s["sinks"]["cache"]["state"], "connecting", "{s}");
    readings.push((partitions(&s), asked, answered));
    for (owned, asked, answered) in &readings {
        for p in owned {
            let lag = p["lag_ms"].as_i64().unwrap();
            assert!(
                lag >= asked - last_produced && lag <= answered - first_produced,
                "lag_ms {lag} is not the age of the partition's oldest record: produced \
                 {} to {} ms before the request: {p}",
                asked - first_produced,
                asked - last_produced
            );
        }
    }
    assert!(
        readings[1].0[0]["lag_ms"].as_u64() > readings[0].0[0]["lag_ms"].as_u64(),
        "lag_ms grows while nothing is applied: {readings:?}"
    );

    redis.start().await;
    wait_until(
        "the lag to return to 0 once the store is up",
        CATCH_UP,
        || async {
            let Some((s, metrics, _, _)) = status_and_metrics(api).await else {
                return false;
            };
            let owned = partitions(&s);
            owned.len() == 2
                && owned.iter().all(|p| {
                    let n = p["partition"].as_i64().unwrap();
                    p["lag_ms"] == 0
                        && p["lag_records"] == 0
                        && lag_ms_metric(&metrics, &topic, n) == Some(0.0)
                })
        },
    )
    .await;
    let nodes = RedisNodes::connect(&redis.url(), false).await;
    assert_eq!(nodes.json_rows(&key_prefix).await.len(), 200);
    assert!(worker.stop().success(), "worker log:\n{}", worker.log());
}

/// ClickHouse's HTTP interface of `dev/clickhouse.sh`.
const CLICKHOUSE: &str = "http://127.0.0.1:58123";

async fn clickhouse(sql: &str) -> String {
    let resp = reqwest::Client::new()
        .post(CLICKHOUSE)
        .query(&[("output_format_json_quote_64bit_integers", "0")])
        .body(sql.to_string())
        .send()
        .await
        .expect("ClickHouse answers (dev/clickhouse.sh start)");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "clickhouse: {sql}: {text}");
    text
}

/// Debezium's `VariableScaleDecimal` drops the trailing zeros of an
/// unconstrained `numeric` (12.50 arrives as 12.5, the same number): the
/// direct capture's `nu` written the same way, to compare the rest exactly.
fn unconstrained_numeric_as_debezium(rows: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    rows.into_iter()
        .map(|(k, mut row)| {
            if let Some(Value::String(n)) = row.get("nu") {
                row["nu"] = Value::String(trim_decimal(n));
            }
            (k, row)
        })
        .collect()
}

/// The rows of `database.t_current`, one JSON line each, by id (`nu`, an
/// unconstrained numeric, compared as a number: see
/// `unconstrained_numeric_as_debezium`).
async fn clickhouse_rows(database: &str) -> Vec<String> {
    clickhouse(&format!(
        "SELECT id, i8, toString(n) AS n, toFloat64OrNull(toString(nu)) AS nu, t, b, f8, toString(d) AS d, toString(ts) AS ts, \
         toString(tstz) AS tstz, jb, toString(u) AS u, hex(by) AS by, ta \
         FROM {database}.t_current ORDER BY id FORMAT JSONEachRow"
    ))
    .await
    .lines()
    .map(str::to_string)
    .collect()
}

/// How Debezium's connector writes its records: Kafka Connect's
/// JsonConverter with schemas (its default) or without
/// (`key/value.converter.schemas.enable=false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Converter {
    Schemas,
    Schemaless,
}

impl Converter {
    /// The connector's settings for this converter.
    fn settings(self) -> Value {
        match self {
            Converter::Schemas => serde_json::json!({}),
            Converter::Schemaless => serde_json::json!({
                "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                "key.converter.schemas.enable": "false",
                "value.converter.schemas.enable": "false",
            }),
        }
    }
}

/// Debezium as the producer: its PostgreSQL connector (pgoutput, Kafka
/// Connect JSON with schemas) captures a table of many types while a
/// Courier captures the same table directly; a worker applies Debezium's
/// topic to Redis and ClickHouse. After Debezium's snapshot, then streamed
/// inserts, updates, deletes and a primary-key change, the stores fed from
/// Debezium equal those Courier fed directly, value for value.
#[tokio::test(flavor = "multi_thread")]
async fn debezium_topics_feed_stores_equal_to_direct_capture() {
    debezium_feeds_stores("e2e_kafka_debezium", Converter::Schemas).await;
}

/// The same without schemas (JsonConverter's `schemas.enable=false`):
/// Redis and ClickHouse fed from Debezium's topic hold PostgreSQL's rows
/// (those the direct capture wrote), with the values a schemaless record
/// cannot type as Debezium wrote them (see `SCHEMALESS`).
#[tokio::test(flavor = "multi_thread")]
async fn debezium_schemaless_topics_feed_stores_equal_to_direct_capture() {
    debezium_feeds_stores("e2e_kafka_dbz_schemaless", Converter::Schemaless).await;
}

/// What a schemaless Debezium record holds where Courier's capture has
/// another value, column by column of `debezium_feeds_stores`'s table, and
/// what the comparison does about it. Without a schema the worker types a
/// column by its JSON (the `courier_kafka::decode` module documentation),
/// so these columns reach the stores as Debezium's numbers and strings:
///
/// | column | Courier's capture | the schemaless record | compared as |
/// |---|---|---|---|
/// | `n numeric(12,3)` | `"0.143"` | the base64 of the unscaled value (`Decimal` bytes); the scale is in the schema only | the record's value read with the column's scale, 3 |
/// | `nu numeric` | `"1.25"` | `{"scale": 2, "value": "fQ=="}` (`VariableScaleDecimal`), trailing zeros stripped | the decimal it holds; Courier's without trailing zeros |
/// | `d date` | `"2000-01-26"` | days since 1970-01-01 (`Date`) | days |
/// | `ts timestamp` | `"2024-03-01T00:00:59.5"` | microseconds since 1970-01-01 (`MicroTimestamp`) | microseconds |
/// | `tstz timestamptz` | `"...T06:30:00.5Z"` | `ZonedTimestamp`'s text, the fraction padded to six digits | the text, trailing zeros of the fraction stripped |
/// | `jb jsonb` | the document | the document's text, a string (`Json`) | the document |
///
/// Every other column (integers, text, bool, float8, uuid, bytea as base64,
/// text[]) holds the same JSON. ClickHouse then stores those columns as
/// what was inferred: `Int64` for the numbers, `String` for the strings and
/// for `nu`'s object (its JSON text), read back here in the same forms.
const SCHEMALESS: &[&str] = &["n", "nu", "d", "ts", "tstz", "jb"];

/// One side of the schemaless comparison.
#[derive(Clone, Copy)]
enum Side {
    /// A row as Courier's capture stored it.
    Courier,
    /// A row as the worker stored Debezium's schemaless record.
    Schemaless,
}

/// `row` with the `SCHEMALESS` columns in the forms they are compared as.
fn comparable(mut row: Value, side: Side) -> Value {
    for column in SCHEMALESS {
        let v = row[*column].take();
        row[*column] = if v.is_null() {
            v
        } else {
            match (side, *column) {
                (Side::Courier, "nu") => Value::String(trim_decimal(v.as_str().unwrap())),
                (Side::Courier, "d") => Value::from(days(v.as_str().unwrap())),
                (Side::Courier, "ts") => Value::from(micros(v.as_str().unwrap())),
                (_, "tstz") => Value::String(trim_fraction(v.as_str().unwrap())),
                (Side::Courier, _) => v,
                (Side::Schemaless, "n") => {
                    Value::String(support::kafka::decimal_text(v.as_str().unwrap(), 3))
                }
                (Side::Schemaless, "nu") => {
                    // ClickHouse holds the object as its JSON text.
                    let v = match v {
                        Value::String(s) => serde_json::from_str(&s).unwrap(),
                        v => v,
                    };
                    let scale = v["scale"].as_u64().unwrap() as u32;
                    let text = support::kafka::decimal_text(v["value"].as_str().unwrap(), scale);
                    Value::String(text)
                }
                (Side::Schemaless, "jb") => serde_json::from_str(v.as_str().unwrap()).unwrap(),
                (Side::Schemaless, _) => v,
            }
        };
    }
    row
}

/// A decimal's text without trailing zeros after the point.
fn trim_decimal(n: &str) -> String {
    if n.contains('.') {
        n.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        n.to_string()
    }
}

/// A timestamp's text without trailing zeros in its fraction of a second.
fn trim_fraction(t: &str) -> String {
    let (body, zone) = t.split_at(t.find(['Z', '+']).unwrap_or(t.len()));
    if body.contains('.') {
        format!("{}{zone}", body.trim_end_matches('0').trim_end_matches('.'))
    } else {
        t.to_string()
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian).
fn days(date: &str) -> i64 {
    let mut parts = date.split('-').map(|p| p.parse::<i64>().unwrap());
    let (y, m, d) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since 1970-01-01 of a `YYYY-MM-DDTHH:MM:SS[.f]` timestamp.
fn micros(ts: &str) -> i64 {
    let (date, time) = ts.split_once('T').unwrap();
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let seconds = hms.next().unwrap() * 3600 + hms.next().unwrap() * 60 + hms.next().unwrap();
    let fraction: i64 = format!("{fraction:0<6}").parse().unwrap();
    (days(date) * 86_400 + seconds) * 1_000_000 + fraction
}

/// The rows of `database.t_current` of a worker fed schemaless records, by
/// id, in the JSON Redis holds (ClickHouse's `UInt8` bools as booleans),
/// compared as `comparable` says.
async fn clickhouse_schemaless_rows(database: &str) -> BTreeMap<String, Value> {
    clickhouse(&format!(
        "SELECT id, i8, n, nu, t, b, f8, d, ts, tstz, jb, u, by, ta \
         FROM {database}.t_current FORMAT JSONEachRow"
    ))
    .await
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| {
        let mut row: Value = serde_json::from_str(l).unwrap();
        if let Some(b) = row["b"].as_u64() {
            row["b"] = Value::Bool(b == 1);
        }
        // ClickHouse writes a whole Float64 without its point (1, not 1.0).
        if let Some(f) = row["f8"].as_f64() {
            row["f8"] = Value::from(f);
        }
        (row["id"].to_string(), comparable(row, Side::Schemaless))
    })
    .collect()
}

/// Debezium's connector (converter `converter`) and a direct Courier
/// capture the same table of database `db`; a worker applies Debezium's
/// topic to Redis and ClickHouse. After Debezium's snapshot, then streamed
/// inserts, updates, deletes and a primary-key change, the worker's stores
/// hold the direct capture's rows: value for value with schemas, and
/// without them as `SCHEMALESS` states.
async fn debezium_feeds_stores(db: &'static str, converter: Converter) {
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, i8 bigint, n numeric(12,3), nu numeric, t text, b bool,
               f8 float8, d date, ts timestamp, tstz timestamptz, jb jsonb, u uuid, by bytea, ta text[]);
             INSERT INTO t SELECT g, g::bigint * 1000000000, g / 7.0, g * 1.25, 'row ' || g, g % 2 = 0,
               g / 3.0, DATE '1999-12-25' + g, TIMESTAMP '2024-02-29 23:59:59.5' + g * INTERVAL '1 minute',
               TIMESTAMPTZ '2024-02-29 12:00:00.123456+05:30' + g * INTERVAL '1 hour',
               jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)), md5(g::text)::uuid,
               decode(md5(g::text), 'hex'), ARRAY['x' || g, NULL]
             FROM generate_series(1, 200) g;
             INSERT INTO t (id) VALUES (1000);",
        )
        .await
        .unwrap();
    let prefix = run_prefix(db).replace('-', "_");
    let topic = format!("{prefix}.public.t");
    let (direct_redis, worker_redis) = (format!("{db}:direct:"), format!("{db}:worker:"));
    let (direct_ch, worker_ch) = (
        format!("courier_{db}_direct"),
        format!("courier_{db}_worker"),
    );
    let nodes = RedisNodes::connect(&standalone_url(13), false).await;
    for p in [&direct_redis, &worker_redis] {
        clear(&nodes, p).await;
    }
    for d in [&direct_ch, &worker_ch] {
        clickhouse(&format!("DROP DATABASE IF EXISTS {d}")).await;
        clickhouse(&format!("CREATE DATABASE {d}")).await;
    }

    // Debezium's connector, with its own slot and publication.
    let slot = format!("{prefix}_dbz");
    let settings = support::connect::debezium_postgres(
        db,
        &prefix,
        &slot,
        "public.t",
        2,
        converter.settings(),
    );
    let connector = support::connect::Connector::create(&prefix, settings).await;

    // Courier capturing the same table directly into Redis and ClickHouse.
    let direct_dir = scratch(db);
    let direct = format!(
        r#"
[source]
url = "{url}"
slot = "{db}"
tables = ["public.t"]
status_interval = "200ms"

[api]
listen = "off"

[state]
dir = "{state}"

[sinks.cache]
type = "redis"
url = "{redis}"
key = "{direct_redis}{{pk}}"

[sinks.analytics]
type = "clickhouse"
url = "{CLICKHOUSE}"
database = "{direct_ch}"
"#,
        url = pg_url(db),
        state = direct_dir.join("state").display(),
        redis = standalone_url(13),
    );
    let mut direct = CourierProc::start(&direct_dir, &direct);

    let worker_dir = scratch(&format!("{db}_worker"));
    let mut worker_config = worker_config(
        &worker_dir,
        &format!("{prefix}-g"),
        &topic,
        "committed",
        13,
        &worker_redis,
        None,
    );
    worker_config.push_str(&format!(
        "\n[sinks.analytics]\ntype = \"clickhouse\"\nurl = \"{CLICKHOUSE}\"\ndatabase = \"{worker_ch}\"\n"
    ));
    let mut worker = CourierProc::start(&worker_dir, &worker_config);
    wait_caught_up(&client, db, CATCH_UP).await;
    wait_until(
        "Debezium's snapshot to reach the worker's Redis",
        CATCH_UP,
        || async { nodes.json_rows(&worker_redis).await.len() == 201 },
    )
    .await;

    // Streaming: inserts, updates (to and from NULL), deletes, a key change.
    client
        .batch_execute(
            "INSERT INTO t (id, n, t, jb) VALUES (2000, -1.5, 'new', '[1, null]');
             UPDATE t SET n = n * 2, t = NULL, ta = ARRAY['y'] WHERE id % 10 = 0;
             UPDATE t SET t = 'was null', tstz = '1999-01-01 00:00:00.000001+00' WHERE id = 1000;
             DELETE FROM t WHERE id BETWEEN 50 AND 59;
             UPDATE t SET id = id + 5000 WHERE id = 7;",
        )
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    let direct_rows = unconstrained_numeric_as_debezium(nodes.json_rows(&direct_redis).await);
    assert_eq!(direct_rows.len(), 192, "the direct capture's rows");
    match converter {
        Converter::Schemas => {
            wait_rows_equal("Redis fed from Debezium's topic", &direct_rows, || {
                nodes.json_rows(&worker_redis)
            })
            .await;
            let want = clickhouse_rows(&direct_ch).await;
            let mut got = Vec::new();
            for _ in 0..100 {
                got = clickhouse_rows(&worker_ch).await;
                if got == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            assert_eq!(want.len(), 192);
            let first = want.iter().zip(&got).find(|(a, b)| a != b);
            assert!(
                got.len() == want.len() && first.is_none(),
                "ClickHouse fed from Debezium's topic differs from ClickHouse fed directly ({} vs {} rows); first difference:\n{first:?}",
                got.len(),
                want.len()
            );
        }
        Converter::Schemaless => {
            let expected: BTreeMap<String, Value> = direct_rows
                .into_iter()
                .map(|(k, row)| (k, comparable(row, Side::Courier)))
                .collect();
            wait_rows_equal(
                "Redis fed from Debezium's schemaless topic",
                &expected,
                || async {
                    let rows = nodes.json_rows(&worker_redis).await;
                    rows.into_iter()
                        .map(|(k, row)| (k, comparable(row, Side::Schemaless)))
                        .collect()
                },
            )
            .await;
            wait_rows_equal(
                "ClickHouse fed from Debezium's schemaless topic",
                &expected,
                || clickhouse_schemaless_rows(&worker_ch),
            )
            .await;
        }
    }

    connector.delete().await;
    assert!(worker.stop().success(), "worker log:\n{}", worker.log());
    assert!(direct.stop().success(), "direct log:\n{}", direct.log());
}

/// `courier check` on a worker's configuration reaches the brokers, names a
/// topic that does not exist with the fix, and reports the group; with an
/// unreachable broker it fails naming the brokers.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_brokers_topics_and_group() {
    let db = "e2e_kafka_check";
    let prefix = run_prefix(db);
    let present = format!("{prefix}.public.present");
    support::kafka::dev_kafka(&[
        "topics",
        "--create",
        "--topic",
        &present,
        "--partitions",
        "2",
    ]);
    let dir = scratch(db);
    let config = worker_config(
        &dir,
        &format!("{prefix}-g"),
        &present,
        "committed",
        13,
        "x:",
        None,
    )
    .replace(
        &format!("topics = [\"{present}\"]"),
        &format!(
            "topics = [\"{present}\", \"{prefix}.public.missing\"]\ndead_letter_topic = \"{prefix}.dead\""
        ),
    );
    let path = dir.join("worker.toml");
    std::fs::write(&path, &config).unwrap();
    let (code, out, err) = courier_cmd(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("ok    kafka: brokers"), "{out}");
    assert!(
        out.contains(&format!("ok    topic {present}: 2 partition(s)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "FAIL  topic {prefix}.public.missing: does not exist"
        )),
        "{out}"
    );
    assert!(out.contains("ok    group"), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  source.dead_letter_topic: {prefix}.dead does not exist"
        )),
        "{out}"
    );

    let unreachable = config.replace(&brokers(), &format!("127.0.0.1:{}", free_port()));
    std::fs::write(&path, unreachable).unwrap();
    let (code, out, _) = courier_cmd(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  kafka: brokers 127.0.0.1:") && out.contains("did not answer"),
        "{out}"
    );
}
