//! End to end: PostgreSQL → courier → ClickHouse, against the real servers
//! started by the `dev/` scripts (`dev/clickhouse.sh`: 18.16 on 58123).
//!
//! Each test has its own PostgreSQL database and slot and its own ClickHouse
//! database (`courier_e2e_*`), so they run in parallel.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use support::load::{create_table, pg_rows};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);
const CH: &str = "http://127.0.0.1:58123/";

fn clickhouse_started() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/clickhouse.sh");
        let status = Command::new(script).arg("start").status().unwrap();
        assert!(status.success(), "dev/clickhouse.sh start failed");
    });
}

/// Runs a query; the body (JSONEachRow for SELECTs that ask for it).
async fn ch(sql: &str) -> String {
    clickhouse_started();
    let resp = reqwest::Client::new()
        .post(CH)
        .query(&[("output_format_json_quote_64bit_integers", "0")])
        .body(sql.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "clickhouse: {sql}: {text}");
    text
}

async fn ch_json(sql: &str) -> Vec<Value> {
    ch(&format!("{sql} FORMAT JSONEachRow"))
        .await
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A config with one ClickHouse sink `analytics` writing into `database`.
fn config(db: &str, tables: &[&str], dir: &Path, database: &str) -> String {
    let sink = format!(
        "type = \"clickhouse\"\nurl = \"http://127.0.0.1:58123\"\ndatabase = \"{database}\""
    );
    sink_config(db, db, tables, dir, "analytics", &sink)
}

async fn fresh_ch(database: &str) {
    ch(&format!("DROP DATABASE IF EXISTS {database}")).await;
}

/// The current-rows view of `items`, in the load's JSON shape.
async fn ch_items(database: &str) -> BTreeMap<String, Value> {
    ch_json(&format!(
        "SELECT id, val, note, toString(amount) AS amount, isNull(amount) AS amount_null FROM {database}.items_current"
    ))
    .await
    .into_iter()
    .map(|mut r| {
        let null = r["amount_null"] == json!(1);
        let obj = r.as_object_mut().unwrap();
        obj.remove("amount_null");
        if null {
            obj.insert("amount".into(), Value::Null);
        }
        (r["id"].to_string(), r)
    })
    .collect()
}

/// Snapshot, then a concurrent write load with five kill -9 restarts of
/// Courier (two during the snapshot, three while streaming): once caught
/// up, the current-rows view equals the PostgreSQL table row for row.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load() {
    let db = "e2e_ch_kill9";
    let database = "courier_e2e_kill9";
    let client = fresh_db(db).await;
    fresh_ch(database).await;
    create_table(&client, "items", 20_000).await;
    let dir = scratch(db);
    support::chaos::kill_9_under_load(
        &client,
        db,
        &dir,
        &config(db, &["public.items"], &dir, database),
        5,
        150,
        CATCH_UP,
    )
    .await;

    let expected = pg_rows(&client, "items").await;
    let got = ch_items(database).await;
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "rows missing from / resurrected in ClickHouse"
    );
    let differing: Vec<&String> = expected
        .keys()
        .filter(|k| got[*k] != expected[*k])
        .collect();
    assert!(
        differing.is_empty(),
        "{} rows differ, e.g. id {}: clickhouse {} vs postgres {}",
        differing.len(),
        differing[0],
        got[differing[0]],
        expected[differing[0]]
    );
    // Deletes are rows with _deleted = 1 beside the live ones.
    let deleted = ch(&format!(
        "SELECT count() FROM {database}.items FINAL WHERE _deleted = 1"
    ))
    .await;
    assert!(deleted.trim().parse::<u64>().unwrap() > 0, "no tombstones");
    drop_db(db).await;
}

/// The types table lands with the documented ClickHouse types (18.16: no
/// DateTime64 or Date32), and its rows read back per the mapping.
#[tokio::test(flavor = "multi_thread")]
async fn types_land_with_the_documented_clickhouse_types() {
    let db = "e2e_ch_types";
    let database = "courier_e2e_types";
    let client = fresh_db(db).await;
    fresh_ch(database).await;
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE TABLE every_type (
               id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
               np numeric(12,3), t text, by bytea, u uuid, d date, tm time, ts timestamp, tstz timestamptz,
               iv interval, j json, jb jsonb, m mood, ia int[], ta text[], inet_c inet, nn int NOT NULL);
             INSERT INTO every_type VALUES (1, true, -32768, 2147483647, 9223372036854775807, 1.5, 'NaN',
               '12345678901234567890.123456789', -1.5, E'tab\\t \"q\" \\\\ é', '\\xdeadbeef',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:45:06', '2024-02-29 23:59:59.75',
               '2024-02-29 23:59:59+05:30', '1 day', '{\"a\": 1}', '{\"b\": [true]}', 'happy', '{1,NULL,3}',
               '{\"a,b\",NULL}', '10.0.0.1', 7);
             INSERT INTO every_type (id, nn) VALUES (2, 0);",
        )
        .await
        .unwrap();
    let dir = scratch(db);
    let mut courier = CourierProc::start(&dir, &config(db, &["public.every_type"], &dir, database));
    wait_caught_up(&client, db, CATCH_UP).await;
    client
        .batch_execute("INSERT INTO every_type (id, d, ts, tstz, nn) VALUES (3, 'infinity', '-infinity', 'infinity', 3)")
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let types: BTreeMap<String, String> = ch_json(&format!(
        "SELECT name, type FROM system.columns WHERE database = '{database}' AND table = 'every_type'"
    ))
    .await
    .into_iter()
    .map(|r| (r["name"].as_str().unwrap().to_string(), r["type"].as_str().unwrap().to_string()))
    .collect();
    let want = [
        ("id", "Int32"),
        ("b", "Nullable(UInt8)"),
        ("i2", "Nullable(Int16)"),
        ("i4", "Nullable(Int32)"),
        ("i8", "Nullable(Int64)"),
        ("f4", "Nullable(Float32)"),
        ("f8", "Nullable(Float64)"),
        ("n", "Nullable(String)"),
        ("np", "Nullable(Decimal(12, 3))"),
        ("t", "Nullable(String)"),
        ("by", "Nullable(String)"),
        ("u", "Nullable(UUID)"),
        ("d", "Nullable(Date)"),
        ("tm", "Nullable(String)"),
        ("ts", "Nullable(DateTime('UTC'))"),
        ("tstz", "Nullable(DateTime('UTC'))"),
        ("iv", "Nullable(String)"),
        ("j", "Nullable(String)"),
        ("jb", "Nullable(String)"),
        ("m", "Nullable(String)"),
        ("ia", "Array(Nullable(Int32))"),
        ("ta", "Array(Nullable(String))"),
        ("inet_c", "Nullable(String)"),
        ("nn", "Int32"),
        ("_version", "UInt64"),
        ("_deleted", "UInt8"),
        ("_synced_at", "DateTime('UTC')"),
    ];
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(types, want);

    let rows = ch_json(&format!(
        "SELECT id, b, i8, f8, n, toString(np) AS np, t, hex(by) AS by, u, toString(d) AS d, tm, toString(ts) AS ts, \
         toString(tstz) AS tstz, iv, j, jb, m, ia, ta, inet_c FROM {database}.every_type_current ORDER BY id"
    ))
    .await;
    assert_eq!(
        rows[0],
        json!({"id": 1, "b": 1, "i8": 9223372036854775807i64, "f8": null, "n": "12345678901234567890.123456789",
               "np": "-1.500", "t": "tab\t \"q\" \\ é", "by": "DEADBEEF", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
               "d": "2024-02-29", "tm": "13:45:06", "ts": "2024-02-29 23:59:59", "tstz": "2024-02-29 18:29:59",
               "iv": "P1D", "j": "{\"a\": 1}", "jb": "{\"b\": [true]}", "m": "happy", "ia": [1, null, 3],
               "ta": ["a,b", null], "inet_c": "10.0.0.1"})
    );
    assert_eq!(rows[1]["ia"], json!([]), "a NULL array is stored empty");
    assert_eq!(rows[1]["t"], Value::Null);
    assert_eq!(
        (&rows[2]["d"], &rows[2]["ts"], &rows[2]["tstz"]),
        (
            &json!("2105-12-31"),
            &json!("0000-00-00 00:00:00"),
            &json!("2105-12-31 23:59:59")
        ),
        "infinities become the ends of the range (18.16 prints DateTime 0 as zeros)"
    );
    drop_db(db).await;
}

/// Columns added, dropped and widened while streaming are followed; a type
/// change ClickHouse cannot follow stops Courier with a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_mid_stream() {
    let db = "e2e_ch_schema";
    let database = "courier_e2e_schema";
    let client = fresh_db(db).await;
    fresh_ch(database).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, qty int, old text, label text);
             INSERT INTO t VALUES (1, 1, 'o', 'a');",
        )
        .await
        .unwrap();
    let dir = scratch(db);
    let mut courier = CourierProc::start(&dir, &config(db, &["public.t"], &dir, database));
    wait_caught_up(&client, db, CATCH_UP).await;
    client
        .batch_execute(
            "ALTER TABLE t ADD COLUMN extra numeric(6,2);
             INSERT INTO t VALUES (2, 2, 'o', 'b', 1.25);
             ALTER TABLE t ALTER COLUMN qty TYPE bigint;
             UPDATE t SET qty = 5000000000 WHERE id = 1;
             ALTER TABLE t DROP COLUMN old;
             INSERT INTO t VALUES (3, 3, 'c', NULL);",
        )
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    let rows = ch_json(&format!(
        "SELECT id, qty, old, label, toString(extra) AS extra FROM {database}.t_current ORDER BY id"
    ))
    .await;
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "qty": 5000000000i64, "old": "o", "label": "a", "extra": null}),
            json!({"id": 2, "qty": 2, "old": "o", "label": "b", "extra": "1.25"}),
            json!({"id": 3, "qty": 3, "old": null, "label": "c", "extra": null}),
        ]
    );

    client
        .batch_execute(
            "ALTER TABLE t ALTER COLUMN label TYPE int USING length(label);
             INSERT INTO t VALUES (4, 4, 4, NULL);",
        )
        .await
        .unwrap();
    let status = courier
        .wait_exit("courier to stop after an impossible type change", CATCH_UP)
        .await;
    let log = courier.log();
    assert!(
        !status.success(),
        "courier exited with {status}; log:\n{log}"
    );
    for part in [
        "label",
        "Nullable(String)",
        "Nullable(Int32)",
        "Rebuild",
        "public.t",
    ] {
        assert!(log.contains(part), "{part:?} missing from the log:\n{log}");
    }
    drop_db(db).await;
}
