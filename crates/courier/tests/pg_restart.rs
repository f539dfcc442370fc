//! PostgreSQL restarted (immediate stop, as after a crash) mid-stream and
//! mid-snapshot: Courier reconnects, resumes from the slot (and the
//! snapshot from its remaining chunks), and nothing is missing.
//!
//! This binary restarts the shared test server, so it holds no other tests
//! (cargo runs test binaries one at a time), and its own tests take turns.

mod support;

use std::time::Duration;

use support::fold::fold_file;
use support::load::{create_table, pg_rows, Load};
use support::*;

/// The tests here restart the one server: one at a time.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_mid_stream_loses_nothing() {
    let _server = SERVER.lock().await;
    let db = "e2e_pgrestart";
    let client = fresh_db(db).await;
    create_table(&client, "items", 5_000).await;
    let dir = scratch("pgrestart");
    let mut courier = CourierProc::start(
        &dir,
        &file_config(db, "pgrestart", &["public.items"], &dir, ""),
    );
    wait_caught_up(&client, "pgrestart", Duration::from_secs(60)).await;
    drop(client);

    // Changes before the crash, and after it from writers that reconnect.
    let load = Load::start(db, "items", 2);
    load.commit_more(50, Duration::from_secs(60)).await;
    dev_pg(&["stop", "immediate"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    dev_pg(&["start"]);
    load.commit_more(50, Duration::from_secs(60)).await;
    load.stop().await;

    let client = connect(db).await;
    wait_caught_up(&client, "pgrestart", Duration::from_secs(120)).await;
    assert!(
        courier.is_running(),
        "courier exited instead of reconnecting:\n{}",
        courier.log()
    );
    assert!(courier.stop().success());
    assert!(courier.log().contains("reconnecting"), "{}", courier.log());
    let derived = fold_file(&dir.join("out.jsonl"));
    assert_eq!(derived["public.items"], pg_rows(&client, "items").await);
    drop_db(db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_mid_snapshot_loses_nothing() {
    let _server = SERVER.lock().await;
    let db = "e2e_pgrestart_snap";
    let client = fresh_db(db).await;
    create_table(&client, "items", 600_000).await;
    drop(client);
    let dir = scratch("pgrestart_snap");
    let config = file_config(
        db,
        "pgrestart_snap",
        &["public.items"],
        &dir,
        "snapshot_parallelism = 1\nsnapshot_chunk_rows = 20000",
    );
    let mut courier = CourierProc::start(&dir, &config);
    wait_until("the snapshot to start", Duration::from_secs(60), || async {
        courier.log().contains("snapshot started")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !courier.log().contains("snapshot complete"),
        "the snapshot ended before the restart: make the table larger"
    );
    dev_pg(&["stop", "immediate"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    dev_pg(&["start"]);

    let client = connect(db).await;
    wait_caught_up(&client, "pgrestart_snap", Duration::from_secs(300)).await;
    assert!(
        courier.is_running(),
        "courier exited instead of resuming the snapshot:\n{}",
        courier.log()
    );
    assert!(courier.stop().success(), "{}", courier.log());
    assert!(
        courier.log().contains("snapshot interrupted"),
        "{}",
        courier.log()
    );
    let derived = fold_file(&dir.join("out.jsonl"));
    assert_eq!(derived["public.items"], pg_rows(&client, "items").await);
    drop_db(db).await;
}
