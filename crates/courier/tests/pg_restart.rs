//! PostgreSQL restarted (immediate stop, as after a crash) mid-stream:
//! Courier reconnects, resumes from the slot, and nothing is missing.
//!
//! This binary restarts the shared test server, so it holds no other tests
//! (cargo runs test binaries one at a time).

mod support;

use std::time::Duration;

use support::fold::fold_file;
use support::load::{create_table, pg_rows, Load};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_mid_stream_loses_nothing() {
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
