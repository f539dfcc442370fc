//! The Kafka broker stopped for 30 s under a write load, then started
//! again: Courier keeps running, retries, loses nothing, and its memory
//! stays bounded while the changes wait.
//!
//! This binary stops the shared test broker (`dev/kafka.sh stop`), so it
//! holds no other tests (cargo runs test binaries one at a time), and the
//! broker is started again even when the test fails.

mod support;

use std::time::{Duration, Instant};

use support::kafka::{dev_kafka, fold, kafka_config, read_topic, run_prefix, Format};
use support::load::{create_table, pg_rows, Load};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);
const OUTAGE: Duration = Duration::from_secs(30);
/// Courier's peak resident memory must stay under this (MiB).
const PEAK_RSS_MIB: u64 = 300;

/// Starts the broker again when dropped, so a failing test does not leave
/// it down for the tests that follow.
struct BrokerStopped;

impl BrokerStopped {
    fn now() -> BrokerStopped {
        dev_kafka(&["stop"]);
        BrokerStopped
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        dev_kafka(&["start"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_down_for_30s_under_load_loses_nothing() {
    let db = "e2e_kafka_outage";
    let client = fresh_db(db).await;
    create_table(&client, "items", 2_000).await;
    let dir = scratch(db);
    let prefix = run_prefix(db);
    let config = kafka_config(db, &["public.items"], &dir, &prefix, "");
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;

    let load = Load::start(db, "items", 2);
    load.commit_more(50, CATCH_UP).await;
    let down = BrokerStopped::now();
    let (before, started) = (load.committed(), Instant::now());
    while started.elapsed() < OUTAGE {
        assert!(
            courier.is_running(),
            "courier exited while the broker was down:\n{}",
            courier.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let during = load.committed() - before;
    drop(down);
    load.commit_more(100, CATCH_UP).await;
    load.stop().await;

    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(
        courier.is_running(),
        "courier exited instead of retrying:\n{}",
        courier.log()
    );
    let peak_mib = courier.peak_rss_kib() / 1024;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    eprintln!("{during} transactions committed while the broker was down; courier's peak RSS {peak_mib} MiB");
    assert!(
        courier.log().contains("retrying"),
        "courier never retried: was the broker down?\n{}",
        courier.log()
    );
    assert!(during > 0, "the load committed nothing during the outage");
    assert!(
        peak_mib < PEAK_RSS_MIB,
        "courier's peak RSS was {peak_mib} MiB (bound {PEAK_RSS_MIB} MiB)"
    );

    let records = read_topic(&format!("{prefix}.public.items")).await;
    assert_eq!(
        fold(&records, Format::Json),
        pg_rows(&client, "items").await,
        "rows in Kafka differ from PostgreSQL's after the outage"
    );
    drop_db(db).await;
}
