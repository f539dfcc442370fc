//! Logical decoding on a standby (PostgreSQL 16+): Courier's `source.url`
//! leads to the standby of a primary and standby pair of its own
//! (`dev/pg-failover.sh`, PostgreSQL 17, `hot_standby_feedback = on`), the
//! publication made on the primary. Courier creates its slot on the
//! standby (which waits for a running-transactions record from the
//! primary, so the test has the primary log them with
//! `pg_log_standby_snapshot()`), copies the table under the slot's exported
//! snapshot while writers commit on the primary, streams what follows,
//! and the store ends equal to the primary row for row. A publication
//! missing on the standby, and a heartbeat, which a standby cannot write,
//! are refused naming the fix.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::fold::{fold_file, RowDiff};
use support::load::{create_table, pg_rows};
use support::pair::{connect, Pair};
use support::*;
use tokio_postgres::Client;

const DB: &str = "e2e_standby_source";
const SLOT: &str = "standby_source";
const PATIENCE: Duration = Duration::from_secs(300);

/// A file-sink config reading `DB` on the standby.
fn standby_config(pair: &Pair, dir: &Path, extra: &str) -> String {
    file_config(DB, SLOT, &["public.items"], dir, extra)
        .replace(&pg_url(DB), &Pair::url(pair.standby, DB))
}

/// Waits until the standby replayed everything the primary wrote so far.
async fn replayed(primary: &Client, standby: &Client) {
    let target = current_wal_lsn(primary).await;
    wait_until(
        "the standby to replay the primary's WAL",
        PATIENCE,
        || async {
            standby
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .await
                .is_ok_and(|r| r.get::<_, bool>(0))
        },
    )
    .await;
}

/// Waits until the standby's slot acknowledged everything the primary
/// wrote so far, which Courier does only once its sink applied it.
async fn caught_up(primary: &Client, standby: &Client) {
    let target = current_wal_lsn(primary).await;
    wait_until(
        &format!("slot {SLOT} on the standby to reach {target}"),
        PATIENCE,
        || async {
            standby
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active \
                 AND confirmed_flush_lsn >= $2::text::pg_lsn",
                    &[&SLOT, &target],
                )
                .await
                .ok()
                .flatten()
                .is_some()
        },
    )
    .await;
}

/// Small transactions committed on the primary until stopped.
fn write_until(
    port: u16,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = connect(port, DB).await;
        let mut n: i64 = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            client
                .batch_execute(&format!(
                    "BEGIN;
                     INSERT INTO items VALUES ({id}, {n} % 1000, 'streamed {n}', {n} * 0.25);
                     UPDATE items SET note = 'updated {n}', val = val + 1 WHERE id = {upd};
                     DELETE FROM items WHERE id = {del};
                     COMMIT;",
                    id = 100_000 + n,
                    upd = 1 + (n * 7) % 5000,
                    del = 1 + (n * 13) % 5000,
                ))
                .await
                .unwrap();
            committed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Has the primary log a running-transactions record twice a second until
/// stopped, so slot creation on the standby does not wait for the next
/// one the primary logs by itself.
fn log_standby_snapshots(port: u16, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = connect(port, "postgres").await;
        while !stop.load(Ordering::Relaxed) {
            let _ = client
                .batch_execute("SELECT pg_log_standby_snapshot()")
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_and_stream_from_a_standby_equal_the_primary() {
    let pair = Pair::start("standby-source-pair");
    let primary = pair.create_database(DB).await;
    create_table(&primary, "items", 5000).await;
    replayed(&primary, &connect(pair.standby, "postgres").await).await;
    let standby = connect(pair.standby, DB).await;
    let dir = scratch("standby_source");

    // Nothing can be created on a standby: neither the publication nor a
    // heartbeat's WAL message.
    let path = dir.join("courier.toml");
    for (extra, expected) in [
        (
            "",
            "where a publication can be neither created nor changed: run CREATE PUBLICATION",
        ),
        (
            "heartbeat = \"1s\"",
            "source.heartbeat writes a WAL message, which a standby cannot do",
        ),
    ] {
        std::fs::write(&path, standby_config(&pair, &dir, extra)).unwrap();
        let (code, out, err) = courier_cmd(&["run", "--config", path.to_str().unwrap()]);
        let out = format!("{out}{err}");
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(expected), "{expected:?} is not in:\n{out}");
    }

    primary
        .batch_execute(&format!("CREATE PUBLICATION {SLOT} FOR TABLE items"))
        .await
        .unwrap();
    replayed(&primary, &standby).await;
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let logger = log_standby_snapshots(pair.primary, stop.clone());
    let writer = write_until(pair.primary, stop.clone(), committed.clone());
    let mut courier = CourierProc::start(&dir, &standby_config(&pair, &dir, ""));
    wait_until(
        "the snapshot from the standby to finish",
        PATIENCE,
        || async { snapshot_done(SLOT) },
    )
    .await;
    // Some transactions committed after the snapshot, streamed.
    let at_snapshot = committed.load(Ordering::Relaxed);
    wait_until("more writes on the primary", PATIENCE, || async {
        committed.load(Ordering::Relaxed) >= at_snapshot + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    logger.await.unwrap();
    replayed(&primary, &standby).await;
    caught_up(&primary, &standby).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let slot_on_standby: i64 = standby
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slot_on_standby, 1, "the slot lives on the standby");
    let expected = pg_rows(&primary, "items").await;
    let got = fold_file(&dir.join("out.jsonl"))
        .remove("public.items")
        .unwrap_or_default();
    let diff = RowDiff::of(&expected, &got);
    println!(
        "decoding on a standby: {} rows, {} transactions committed on the primary while Courier started",
        expected.len(),
        committed.load(Ordering::Relaxed)
    );
    assert!(
        diff.missing.is_empty() && diff.extra.is_empty() && diff.differing.is_empty(),
        "the store differs from the primary: missing {:?}, extra {:?}, differing {:?}",
        diff.missing.iter().take(10).collect::<Vec<_>>(),
        diff.extra.iter().take(10).collect::<Vec<_>>(),
        diff.differing.iter().take(10).collect::<Vec<_>>()
    );
    let log = courier.log();
    assert!(
        log.contains("source.url leads to a standby"),
        "the log says Courier reads a standby:\n{log}"
    );
}
