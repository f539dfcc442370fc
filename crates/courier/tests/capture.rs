//! End to end: PostgreSQL → courier → file sink, against the real server.

mod support;

use std::time::Duration;

use rand::Rng;
use support::fold::fold_file;
use support::load::{create_table, pg_rows, Load};
use support::seed::seeded_rng;
use support::*;

const CATCH_UP: Duration = Duration::from_secs(120);

/// The snapshot hands off to the stream without losing or resurrecting a
/// row while writers keep changing the table throughout.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_stream_under_concurrent_writes() {
    let db = "e2e_handoff";
    let client = fresh_db(db).await;
    create_table(&client, "items", 20_000).await;
    let dir = scratch("handoff");
    let config = file_config(
        db,
        "handoff",
        &["public.items"],
        &dir,
        "snapshot_chunk_rows = 2000",
    );

    // The writers change the table before Courier starts, throughout its
    // snapshot, and after it streams.
    let load = Load::start(db, "items", 3);
    load.commit_more(50, CATCH_UP).await;
    let mut courier = CourierProc::start(&dir, &config);
    wait_until("courier to stream", CATCH_UP, || async {
        courier.log().contains("streaming changes")
    })
    .await;
    load.commit_more(200, CATCH_UP).await;
    load.stop().await;

    wait_caught_up(&client, "handoff", CATCH_UP).await;
    assert!(
        courier.stop().success(),
        "courier exit status; log:\n{}",
        courier.log()
    );
    let derived = fold_file(&dir.join("out.jsonl"));
    let expected = pg_rows(&client, "items").await;
    assert_eq!(
        derived.get("public.items").cloned().unwrap_or_default(),
        expected
    );
    let log = courier.log();
    assert!(log.contains("snapshot complete"), "{log}");
    drop_db(db).await;
}

/// kill -9 at random moments, several times, under load: after the last
/// restart the sink still equals PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_loses_nothing() {
    let db = "e2e_kill9";
    let client = fresh_db(db).await;
    create_table(&client, "items", 50_000).await;
    let dir = scratch("kill9");
    let config = file_config(
        db,
        "kill9",
        &["public.items"],
        &dir,
        "snapshot_chunk_rows = 5000",
    );

    let mut rng = seeded_rng("kill -9 timings");
    let load = Load::start(db, "items", 3);
    let mut courier = CourierProc::start(&dir, &config);
    for round in 0..5u64 {
        // Kill at varied moments, the first ones during the snapshot.
        let wait_ms = 150 + (round * 397 + rng.gen_range(0..700)) % 1600;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        courier.kill9();
        courier.restart();
    }
    load.commit_more(100, CATCH_UP).await;
    load.stop().await;

    wait_caught_up(&client, "kill9", CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    let derived = fold_file(&dir.join("out.jsonl"));
    let expected = pg_rows(&client, "items").await;
    let got = derived.get("public.items").cloned().unwrap_or_default();
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "rows missing / resurrected after kill -9"
    );
    assert_eq!(got, expected);
    drop_db(db).await;
}

/// Columns added, dropped and retyped mid-stream show up in the events.
#[tokio::test(flavor = "multi_thread")]
async fn schema_changes_mid_stream() {
    let db = "e2e_schema";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, a int, b text); INSERT INTO t VALUES (1, 1, 'x')",
        )
        .await
        .unwrap();
    let dir = scratch("schema");
    let mut courier = CourierProc::start(&dir, &file_config(db, "schema", &["public.t"], &dir, ""));
    wait_caught_up(&client, "schema", CATCH_UP).await;
    client
        .batch_execute(
            "INSERT INTO t VALUES (2, 2, 'y');
             ALTER TABLE t ADD COLUMN c numeric(8,3) DEFAULT 1.5;
             INSERT INTO t VALUES (3, 3, 'z', 2.25);
             ALTER TABLE t DROP COLUMN b;
             UPDATE t SET a = 30 WHERE id = 3;
             ALTER TABLE t ALTER COLUMN a TYPE bigint;
             INSERT INTO t VALUES (4, 9007199254740993, 4.125);",
        )
        .await
        .unwrap();
    wait_caught_up(&client, "schema", CATCH_UP).await;
    assert!(courier.stop().success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let after = |id: i64, op: &str| {
        lines
            .iter()
            .rev()
            .find(|v| v["after"]["id"] == id && v["op"] == op)
            .map(|v| v["after"].clone())
            .unwrap_or_else(|| panic!("no {op} event for id {id}"))
    };
    assert_eq!(
        after(1, "r"),
        serde_json::json!({"id": 1, "a": 1, "b": "x"})
    );
    assert_eq!(
        after(2, "c"),
        serde_json::json!({"id": 2, "a": 2, "b": "y"})
    );
    assert_eq!(
        after(3, "c"),
        serde_json::json!({"id": 3, "a": 3, "b": "z", "c": "2.250"})
    );
    assert_eq!(
        after(3, "u"),
        serde_json::json!({"id": 3, "a": 30, "c": "2.250"})
    );
    assert_eq!(
        after(4, "c"),
        serde_json::json!({"id": 4, "a": 9007199254740993i64, "c": "4.125"})
    );
    drop_db(db).await;
}

/// A TRUNCATE reaches the sink as an `op: t` event for the table.
#[tokio::test(flavor = "multi_thread")]
async fn truncate_is_streamed() {
    let db = "e2e_truncate";
    let client = fresh_db(db).await;
    create_table(&client, "items", 100).await;
    let dir = scratch("truncate");
    let mut courier = CourierProc::start(
        &dir,
        &file_config(db, "truncate", &["public.items"], &dir, ""),
    );
    wait_caught_up(&client, "truncate", CATCH_UP).await;
    client
        .batch_execute("TRUNCATE items; INSERT INTO items VALUES (7, 7, 'after', 1)")
        .await
        .unwrap();
    wait_caught_up(&client, "truncate", CATCH_UP).await;
    assert!(courier.stop().success());
    let derived = fold_file(&dir.join("out.jsonl"));
    assert_eq!(derived["public.items"], pg_rows(&client, "items").await);
    assert_eq!(derived["public.items"].len(), 1);
    drop_db(db).await;
}

/// A table added to the config later is snapshotted at the next start,
/// under its own exported snapshot, and streamed from then on.
#[tokio::test(flavor = "multi_thread")]
async fn table_added_to_the_config_is_snapshotted() {
    let db = "e2e_added";
    let client = fresh_db(db).await;
    create_table(&client, "first", 1_000).await;
    create_table(&client, "second", 3_000).await;
    let dir = scratch("added");
    let mut courier =
        CourierProc::start(&dir, &file_config(db, "added", &["public.first"], &dir, ""));
    wait_caught_up(&client, "added", CATCH_UP).await;
    assert!(courier.stop().success());
    client
        .batch_execute(
            "UPDATE second SET val = -1 WHERE id <= 10; DELETE FROM second WHERE id > 2990",
        )
        .await
        .unwrap();

    let both = file_config(db, "added", &["public.first", "public.second"], &dir, "");
    std::fs::write(&courier.config, both).unwrap();
    courier.restart();
    wait_caught_up(&client, "added", CATCH_UP).await;
    client
        .batch_execute("UPDATE second SET note = 'streamed' WHERE id = 5")
        .await
        .unwrap();
    wait_caught_up(&client, "added", CATCH_UP).await;
    assert!(courier.stop().success(), "{}", courier.log());
    let derived = fold_file(&dir.join("out.jsonl"));
    assert_eq!(derived["public.first"], pg_rows(&client, "first").await);
    assert_eq!(derived["public.second"], pg_rows(&client, "second").await);
    assert!(
        courier.log().contains("table is new to this slot"),
        "{}",
        courier.log()
    );
    drop_db(db).await;
}
