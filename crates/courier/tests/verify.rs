//! End to end: `courier verify` against real PostgreSQL, Redis and
//! OpenSearch while Courier streams and writers keep committing.
//!
//! Drift is injected behind Courier's back in one table (no writer touches
//! it): verify must report exactly the injected keys, nothing in the table
//! under load, and `--repair` must leave every store equal to PostgreSQL.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ::redis::AsyncCommands;
use reqwest::Method;
use serde_json::{json, Value};
use support::load::{create_table, pg_rows, Load};
use support::redis::{clear, standalone_url, RedisNodes};
use support::search::{call, documents, SearchNode};
use support::verify::courier_verify as verify;
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);
const DB: &str = "e2e_verify";
/// Key prefix of the JSON cache (logical database 14).
const PREFIX: &str = "vfy:";

/// A table of every common type, which no writer touches.
const OTHERS: &str = "
CREATE TABLE others (id int PRIMARY KEY, label text, price numeric(10,2), tags text[], doc jsonb,
                     at timestamptz, day date, ratio float8, flag bool, uid uuid, raw bytea);
INSERT INTO others SELECT g, 'label ' || g, g * 1.25, ARRAY['a' || g, 'b'], jsonb_build_object('n', g, 'nested', jsonb_build_object('x', g % 7)),
                          '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', '2024-01-01'::date + g,
                          g / 3.0, g % 2 = 0, md5(g::text)::uuid, decode(md5(g::text), 'hex')
FROM generate_series(1, 500) g;";

fn config(dir: &std::path::Path, search: &str) -> String {
    let sink = format!(
        "type = \"redis\"\nurl = {:?}\nkey = \"{PREFIX}{{table}}:{{pk}}\"\n\n\
         [sinks.hashes]\ntype = \"redis\"\nurl = {:?}\nformat = \"hash\"\nkey = \"{PREFIX}{{table}}:{{pk}}\"\n\n\
         [sinks.search]\ntype = \"opensearch\"\nurl = {search:?}\nindex = \"e2e_verify_{{table}}\"\n",
        standalone_url(14),
        standalone_url(15),
    );
    sink_config(
        DB,
        DB,
        &["public.items", "public.others"],
        dir,
        "cache",
        &sink,
    )
}

/// `(missing, extra, different)` example keys of `sink`'s `table`.
fn drift(report: &Value, sink: &str, table: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let t = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["sink"] == sink && t["table"] == table)
        .unwrap_or_else(|| panic!("no report of {sink} {table}: {report}"));
    let keys = |kind: &str| -> Vec<String> {
        let mut k: Vec<String> = t["examples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e[0] == kind)
            .map(|e| e[1].as_str().unwrap().to_string())
            .collect();
        k.sort();
        k
    };
    let (m, x, d) = (keys("missing"), keys("extra"), keys("different"));
    assert_eq!(
        t["missing"].as_u64().unwrap()
            + t["extra"].as_u64().unwrap()
            + t["different"].as_u64().unwrap(),
        (m.len() + x.len() + d.len()) as u64,
        "{sink} {table}: counts and examples disagree: {t}"
    );
    (m, x, d)
}

fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_finds_exactly_the_injected_drift_and_repair_removes_it_under_load() {
    let Some(node) = SearchNode::selected("opensearch", 2) else {
        return;
    };
    let search = node.url();
    let client = fresh_db(DB).await;
    create_table(&client, "items", 3000).await;
    client.batch_execute(OTHERS).await.unwrap();
    let json_cache = RedisNodes::connect(&standalone_url(14), false).await;
    let hash_cache = RedisNodes::connect(&standalone_url(15), false).await;
    clear(&json_cache, PREFIX).await;
    clear(&hash_cache, PREFIX).await;
    for index in ["e2e_verify_items", "e2e_verify_others"] {
        call(&search, Method::DELETE, &format!("/{index}*"), None).await;
    }
    let dir = scratch(DB);
    let courier = CourierProc::start(&dir, &config(&dir, &search));
    wait_caught_up(&client, DB, CATCH_UP).await;

    // Equal stores verify as equal, while writers commit.
    let load = Load::start(DB, "items", 2);
    load.commit_more(200, CATCH_UP).await;
    let (code, reports, err) = verify(&dir, &[]);
    assert_eq!(code, 0, "verify of equal stores: {reports:?}\n{err}");
    assert_eq!(
        reports[0]["tables"].as_array().unwrap().len(),
        6,
        "{}",
        reports[0]
    );

    // Drift behind Courier's back, in the table no writer touches.
    let mut r = json_cache.first();
    let key = |id: u32| format!("{PREFIX}others:{id}");
    let _: () = r.del(key(3)).await.unwrap();
    let row: String = r.hget(key(5), "row").await.unwrap();
    let altered = row.replace("label 5", "label five");
    assert_ne!(row, altered);
    let _: () = r.hset(key(5), "row", altered).await.unwrap();
    let _: () = r
        .hset_multiple(
            key(9999),
            &[
                ("_courier_version", "1"),
                ("row", r#"{"id":9999,"label":"ghost"}"#),
            ],
        )
        .await
        .unwrap();
    let alias = "e2e_verify_others";
    call(&search, Method::DELETE, &format!("/{alias}/_doc/7"), None).await;
    let (_, doc) = call(&search, Method::GET, &format!("/{alias}/_doc/8"), None).await;
    let mut source = doc["_source"].clone();
    source["price"] = json!("0.01");
    let version = doc["_version"].as_u64().unwrap();
    let (status, body) = call(
        &search,
        Method::PUT,
        &format!("/{alias}/_doc/8?version={version}&version_type=external_gte"),
        Some(source),
    )
    .await;
    assert!(status < 300, "alter a document: {body}");
    let (status, body) = call(
        &search,
        Method::PUT,
        &format!("/{alias}/_doc/9999?version=1&version_type=external"),
        Some(json!({"id": 9999, "label": "ghost"})),
    )
    .await;
    assert!(status < 300, "add a document: {body}");
    call(&search, Method::POST, &format!("/{alias}/_refresh"), None).await;

    let (code, reports, err) = verify(&dir, &[]);
    assert_eq!(code, 1, "verify of drifted stores: {reports:?}\n{err}");
    let report = &reports[0];
    assert_eq!(
        drift(report, "cache", "public.others"),
        (
            keys(&["vfy:others:3"]),
            keys(&["vfy:others:9999"]),
            keys(&["vfy:others:5"])
        ),
        "{report}"
    );
    assert_eq!(
        drift(report, "search", "public.others"),
        (keys(&["7"]), keys(&["9999"]), keys(&["8"])),
        "{report}"
    );
    for (sink, table) in [
        ("hashes", "public.others"),
        ("cache", "public.items"),
        ("search", "public.items"),
        ("hashes", "public.items"),
    ] {
        assert_eq!(
            drift(report, sink, table),
            (vec![], vec![], vec![]),
            "{sink} {table}: {report}"
        );
    }
    assert!(
        !err.contains("label five") && !err.contains("ghost"),
        "verify logged row values:\n{err}"
    );

    // Only one sink, one table.
    let (code, reports, _) = verify(&dir, &["--sink", "search", "--table", "others"]);
    assert_eq!(code, 1);
    assert_eq!(
        reports[0]["tables"].as_array().unwrap().len(),
        1,
        "{}",
        reports[0]
    );

    // Repair, then the second verification finds nothing.
    let (code, reports, err) = verify(&dir, &["--repair"]);
    assert_eq!(code, 0, "verify --repair: {reports:?}\n{err}");
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0]["when"], "before repair");
    assert_eq!(reports[1]["when"], "after repair");
    let committed = load.stop().await;
    assert!(committed > 200, "the writers stopped early ({committed})");

    // And the stores equal PostgreSQL, compared directly.
    wait_caught_up(&client, DB, CATCH_UP).await;
    let others: Vec<Value> = client
        .query("SELECT id, label FROM others ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| json!({"id": r.get::<_, i32>(0), "label": r.get::<_, String>(1)}))
        .collect();
    let cached = json_cache.json_rows(&format!("{PREFIX}others:")).await;
    let cached: BTreeMap<String, Value> = cached
        .into_iter()
        .map(|(k, v)| (k, json!({"id": v["id"], "label": v["label"]})))
        .collect();
    let want: BTreeMap<String, Value> = others
        .iter()
        .map(|v| (v["id"].to_string(), v.clone()))
        .collect();
    assert_eq!(cached, want, "the JSON cache after repair");
    let docs = documents(&search, alias).await;
    assert_eq!(docs.len(), 500, "documents after repair");
    assert_eq!(docs["8"]["price"], json!("10.00"));
    let items = pg_rows(&client, "items").await;
    assert_eq!(
        json_cache.json_rows(&format!("{PREFIX}items:")).await.len(),
        items.len()
    );
    drop(courier);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_says_what_is_wrong_and_exits_2() {
    let db = "e2e_verify_refusals";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch(db);
    let sink = format!("type = \"redis\"\nurl = {:?}\nkey = \"vfr:{{pk}}\"\n\n[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        standalone_url(14), dir.join("out.jsonl").display());
    std::fs::write(
        dir.join("courier.toml"),
        sink_config(db, db, &["public.items"], &dir, "cache", &sink),
    )
    .unwrap();
    let _ = client
        .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&db])
        .await;

    // Courier never ran: there is no slot whose sinks could have caught up.
    let (code, _, err) = verify(&dir, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not exist") && err.contains("courier run"),
        "{err}"
    );

    let (code, _, err) = verify(&dir, &["--sink", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no sink \"nope\"") && err.contains("cache, out"),
        "{err}"
    );

    let (code, _, err) = verify(&dir, &["--sink", "out"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("keeps no rows"), "{err}");

    let (code, _, err) = verify(&dir, &["--table", "public.missing"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("public.missing"), "{err}");
}

/// One statement on the ClickHouse server at `url`; the response body.
async fn clickhouse(url: &str, sql: &str) -> String {
    let resp = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("clickhouse at {url}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "clickhouse: {sql}: {body}");
    body
}

/// Drift injected into ClickHouse tables behind Courier's back (a row
/// rewritten with a wrong value at its own version, a row deleted at its
/// own version, a stray row), on 18.16 and on 26.9: verify reports exactly
/// those keys (and nothing for a table of every common type that matches),
/// `--repair` removes them.
async fn verify_reads_clickhouse_back(server: &str, url: &str, db: &'static str) {
    let status = std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../dev/clickhouse.sh"
    ))
    .arg("start")
    .env("COURIER_CLICKHOUSE_INSTANCE", server)
    .status()
    .unwrap();
    assert!(status.success(), "dev/clickhouse.sh start ({server})");
    let client = fresh_db(db).await;
    client.batch_execute(OTHERS).await.unwrap();
    clickhouse(url, &format!("DROP DATABASE IF EXISTS {db}")).await;
    let dir = scratch(db);
    let sink = format!("type = \"clickhouse\"\nurl = {url:?}\ndatabase = \"{db}\"\n");
    let courier = CourierProc::start(
        &dir,
        &sink_config(db, db, &["public.others"], &dir, "analytics", &sink),
    );
    wait_caught_up(&client, db, CATCH_UP).await;
    let (code, reports, err) = verify(&dir, &[]);
    assert_eq!(
        code, 0,
        "verify of an equal ClickHouse ({server}): {reports:?}\n{err}"
    );

    let columns: Vec<String> = clickhouse(url, &format!("DESCRIBE TABLE {db}.others"))
        .await
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    let copy_of = |id: u32, set: &[(&str, &str)]| {
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                set.iter()
                    .find(|(n, _)| n == c)
                    .map_or(c.clone(), |(_, v)| format!("{v} AS {c}"))
            })
            .collect();
        format!(
            "INSERT INTO {db}.others SELECT {} FROM {db}.others FINAL WHERE id = {id}",
            select.join(", ")
        )
    };
    clickhouse(url, &copy_of(5, &[("label", "'label five'")])).await;
    clickhouse(url, &copy_of(3, &[("_deleted", "1")])).await;
    clickhouse(
        url,
        &format!(
            "INSERT INTO {db}.others (id, label, _version, _deleted) VALUES (9999, 'ghost', 1, 0)"
        ),
    )
    .await;
    let (code, reports, err) = verify(&dir, &[]);
    assert_eq!(
        code, 1,
        "verify of a drifted ClickHouse ({server}): {reports:?}\n{err}"
    );
    assert_eq!(
        drift(&reports[0], "analytics", "public.others"),
        (
            keys(&[r#"["3"]"#]),
            keys(&[r#"["9999"]"#]),
            keys(&[r#"["5"]"#])
        ),
        "{server}: {}",
        reports[0]
    );
    let (code, reports, err) = verify(&dir, &["--repair"]);
    assert_eq!(
        code, 0,
        "verify --repair of ClickHouse ({server}): {reports:?}\n{err}"
    );
    let scratch_tables = clickhouse(url, &format!("SELECT count() FROM system.tables WHERE database = '{db}' AND name LIKE '%courier_verify%'")).await;
    assert_eq!(scratch_tables.trim(), "0", "verify left its scratch tables");
    drop(courier);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reads_clickhouse_18_back() {
    verify_reads_clickhouse_back("main", "http://127.0.0.1:58123/", "e2e_verify_ch18").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reads_clickhouse_26_back() {
    verify_reads_clickhouse_back("26", "http://127.0.0.1:58124/", "e2e_verify_ch26").await;
}
