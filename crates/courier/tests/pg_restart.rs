//! PostgreSQL restarted (immediate stop, as after a crash) mid-stream:
//! Courier reconnects, resumes from the slot, and nothing is missing.
//!
//! This binary restarts the shared test server, so it holds no other tests
//! (cargo runs test binaries one at a time).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::fold::fold_file;
use support::load::{create_table, pg_rows, run_writers};
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

    let stop = Arc::new(AtomicBool::new(false));
    let writers = tokio::spawn(run_writers(db, "items", 2, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    dev_pg(&["stop", "immediate"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    dev_pg(&["start"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let txns = writers.await.unwrap();
    assert!(txns > 50, "the load committed only {txns} transactions");

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
