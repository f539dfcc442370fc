//! Streaming of large in-progress transactions (`source.streaming`,
//! PostgreSQL 14+): PostgreSQL sends a transaction while it runs once its
//! changes pass `logical_decoding_work_mem` (set to its 64 kB minimum for
//! each test's database), and Courier hands it on at its commit.

mod support;

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use support::load::create_table;
use support::*;

const ROWS: i64 = 1_000_000;
const RSS_LIMIT_KIB: u64 = 150 * 1024;

/// Whether the server can stream (PostgreSQL 14+); prints SKIPPED if not.
async fn streams(client: &tokio_postgres::Client) -> bool {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap()
        .get(0);
    let streams = version.parse::<u32>().unwrap() >= 140_000;
    if !streams {
        println!("SKIPPED: PostgreSQL {version} cannot stream in-progress transactions");
    }
    streams
}

/// A database whose walsenders stream any transaction past 64 kB.
async fn streaming_db(db: &str) -> tokio_postgres::Client {
    let client = fresh_db(db).await;
    client
        .batch_execute(&format!(
            "ALTER DATABASE {db} SET logical_decoding_work_mem = '64kB'"
        ))
        .await
        .unwrap();
    client
}

/// A file-sink config with the admin API on `port` and `streaming`.
fn config(db: &str, slot: &str, dir: &Path, port: u16, streaming: &str) -> String {
    file_config(
        db,
        slot,
        &["public.items"],
        dir,
        &format!("streaming = \"{streaming}\""),
    )
    .replace(
        "listen = \"off\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    )
}

/// The value of counter `name` in Courier's /metrics (0 when absent).
async fn counter(port: u16, name: &str) -> u64 {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// For each id 1..=rows, how many inserts the file sink wrote, and the
/// set of versions (`source.lsn`) those inserts carry.
fn inserts(path: &Path, rows: i64) -> (Vec<u32>, std::collections::BTreeSet<u64>) {
    let mut counts = vec![0; rows as usize + 1];
    let mut versions = std::collections::BTreeSet::new();
    let Ok(file) = std::fs::File::open(path) else {
        return (counts, versions);
    };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if !line.contains(r#"},"op":"c","ts_ms":"#) {
            continue;
        }
        let id = line
            .strip_prefix(r#"{"before":null,"after":{"id":"#)
            .and_then(|rest| rest.split_once(','))
            .and_then(|(id, _)| id.parse::<usize>().ok())
            .filter(|id| (1..=rows as usize).contains(id))
            .unwrap_or_else(|| panic!("an insert of an id outside 1..={rows}: {line:.200}"));
        counts[id] += 1;
        let lsn = line
            .split_once(r#""lsn":"#)
            .map(|(_, rest)| {
                rest.bytes()
                    .take_while(u8::is_ascii_digit)
                    .collect::<Vec<_>>()
            })
            .and_then(|d| String::from_utf8(d).ok()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("an insert without source.lsn: {line:.200}"));
        versions.insert(lsn);
    }
    (counts, versions)
}

/// (ids with no insert, ids with more than one).
fn missing_and_repeated(counts: &[u32]) -> (usize, usize) {
    let counts = &counts[1..];
    (
        counts.iter().filter(|n| **n == 0).count(),
        counts.iter().filter(|n| **n > 1).count(),
    )
}

async fn current_lsn(client: &tokio_postgres::Client) -> u64 {
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let (hi, lo) = lsn.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// Commits a `ROWS`-row transaction with Courier running with `streaming`;
/// returns (commit → first change applied, commit → last change applied).
async fn million_rows(streaming: &str) -> Option<(Duration, Duration)> {
    let db = format!("e2e_stream_big_{streaming}");
    let slot = format!("stream_big_{streaming}");
    let client = streaming_db(&db).await;
    if !streams(&client).await {
        return None;
    }
    create_table(&client, "items", 0).await;
    let dir = scratch(&slot);
    let port = free_port();
    let mut courier = CourierProc::start(&dir, &config(&db, &slot, &dir, port, streaming));
    wait_caught_up(&client, &slot, Duration::from_secs(60)).await;

    let out = dir.join("out.jsonl");
    let session = connect(&db).await;
    session.batch_execute("BEGIN").await.unwrap();
    session
        .batch_execute(&format!(
            "INSERT INTO items SELECT g, g % 1000, repeat('p', 200) || g, g * 0.01 FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
    let before_commit = current_lsn(&session).await;
    if streaming == "on" {
        // The transaction streams while it is still open.
        wait_until(
            "a streamed block of the open transaction",
            Duration::from_secs(120),
            || async { counter(port, "courier_streamed_blocks_total").await > 0 },
        )
        .await;
    }
    let size_before = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    session.batch_execute("COMMIT").await.unwrap();
    let committed = Instant::now();
    let after_commit = current_lsn(&session).await;
    wait_until("the first change applied", Duration::from_secs(600), || {
        let out = out.clone();
        async move { std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) > size_before }
    })
    .await;
    let first = committed.elapsed();
    wait_caught_up(&client, &slot, Duration::from_secs(900)).await;
    let last = committed.elapsed();
    let blocks = counter(port, "courier_streamed_blocks_total").await;
    let commits = counter(port, "courier_streamed_commits_total").await;
    let peak = courier.peak_rss_kib();
    assert!(courier.stop().success(), "{}", courier.log());

    let (counts, versions) = inserts(&out, ROWS);
    println!(
        "1M-row transaction, streaming {streaming}: commit -> first change applied {:.2}s, \
         commit -> last {:.2}s; peak RSS {} MiB; {blocks} streamed blocks",
        first.as_secs_f64(),
        last.as_secs_f64(),
        peak / 1024
    );
    assert_eq!(
        missing_and_repeated(&counts),
        (0, 0),
        "(rows missing, rows written more than once)"
    );
    assert_eq!(versions.len(), 1, "every row carries the commit's version");
    let version = *versions.first().unwrap();
    assert!(
        (before_commit..=after_commit).contains(&version),
        "version {version} is the commit's LSN, between {before_commit} and {after_commit}"
    );
    if streaming == "on" {
        assert!(blocks > 0, "PostgreSQL streamed the transaction");
        assert_eq!(commits, 1, "one streamed transaction committed");
    } else {
        assert_eq!(blocks, 0, "nothing streamed with streaming off");
    }
    assert!(
        peak < RSS_LIMIT_KIB,
        "peak RSS {peak} KiB is over {RSS_LIMIT_KIB} KiB"
    );
    assert_eq!(
        std::fs::read_dir(dir.join("state").join("streamed"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no streamed transaction's file is left"
    );
    drop_db(&db).await;
    Some((first, last))
}

#[tokio::test(flavor = "multi_thread")]
async fn million_row_transaction_streams_and_arrives_once_at_its_commit_version() {
    let Some(on) = million_rows("on").await else {
        return;
    };
    let Some(off) = million_rows("off").await else {
        return;
    };
    println!(
        "commit -> first change applied: streaming {:.2}s, not streaming {:.2}s; \
         commit -> last: streaming {:.2}s, not streaming {:.2}s",
        on.0.as_secs_f64(),
        off.0.as_secs_f64(),
        on.1.as_secs_f64(),
        off.1.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rolled_back_streamed_transactions_and_savepoints_leave_no_trace() {
    let db = "e2e_stream_abort";
    let slot = "stream_abort";
    let client = streaming_db(db).await;
    if !streams(&client).await {
        return;
    }
    create_table(&client, "items", 0).await;
    let dir = scratch(slot);
    let port = free_port();
    let mut courier = CourierProc::start(&dir, &config(db, slot, &dir, port, "on"));
    wait_caught_up(&client, slot, Duration::from_secs(60)).await;

    let session = connect(db).await;
    // A large transaction rolled back.
    session
        .batch_execute(
            "BEGIN;
             INSERT INTO items SELECT g, 1, repeat('a', 100), 0 FROM generate_series(100001, 200000) g;
             ROLLBACK;",
        )
        .await
        .unwrap();
    // A large committed one with a large savepoint rolled back inside it.
    session
        .batch_execute(
            "BEGIN;
             INSERT INTO items SELECT g, 1, repeat('k', 100), 0 FROM generate_series(1, 20000) g;
             SAVEPOINT s;
             INSERT INTO items SELECT g, 1, repeat('s', 100), 0 FROM generate_series(200001, 250000) g;
             ROLLBACK TO SAVEPOINT s;
             INSERT INTO items SELECT g, 1, repeat('k', 100), 0 FROM generate_series(20001, 40000) g;
             COMMIT;",
        )
        .await
        .unwrap();
    wait_caught_up(&client, slot, Duration::from_secs(300)).await;
    let blocks = counter(port, "courier_streamed_blocks_total").await;
    let aborts = counter(port, "courier_streamed_aborts_total").await;
    assert!(courier.stop().success(), "{}", courier.log());

    let (counts, _) = inserts(&dir.join("out.jsonl"), 250_000);
    let written: Vec<usize> = (1..counts.len()).filter(|&i| counts[i] > 0).collect();
    println!(
        "rolled back: {blocks} streamed blocks, {aborts} streamed aborts, {} rows in the sink",
        written.len()
    );
    assert!(blocks > 0, "PostgreSQL streamed the transactions");
    assert!(
        aborts >= 2,
        "a transaction and a subtransaction were rolled back while streamed"
    );
    assert_eq!(
        written.len(),
        40_000,
        "only the committed rows reach the sink"
    );
    assert!(
        written.iter().all(|&id| id <= 40_000 && counts[id] == 1),
        "each committed row once, nothing of what was rolled back"
    );
    drop_db(db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_the_middle_of_a_streamed_transaction_loses_and_repeats_nothing() {
    let db = "e2e_stream_kill";
    let slot = "stream_kill";
    let rows = 300_000;
    let client = streaming_db(db).await;
    if !streams(&client).await {
        return;
    }
    create_table(&client, "items", 0).await;
    let dir = scratch(slot);
    let port = free_port();
    let mut courier = CourierProc::start(&dir, &config(db, slot, &dir, port, "on"));
    wait_caught_up(&client, slot, Duration::from_secs(60)).await;

    let session = connect(db).await;
    session.batch_execute("BEGIN").await.unwrap();
    session
        .batch_execute(&format!(
            "INSERT INTO items SELECT g, 1, repeat('x', 100), 0 FROM generate_series(1, {rows}) g"
        ))
        .await
        .unwrap();
    wait_until(
        "a streamed block of the open transaction",
        Duration::from_secs(120),
        || async { counter(port, "courier_streamed_blocks_total").await > 0 },
    )
    .await;
    let spilled = dir.join("state").join("streamed");
    wait_until(
        "the open transaction spilled to a file",
        Duration::from_secs(120),
        || {
            let spilled = spilled.clone();
            async move { std::fs::read_dir(&spilled).is_ok_and(|mut d| d.next().is_some()) }
        },
    )
    .await;
    courier.kill9();
    courier.restart();
    session.batch_execute("COMMIT").await.unwrap();
    wait_caught_up(&client, slot, Duration::from_secs(300)).await;
    let blocks = counter(port, "courier_streamed_blocks_total").await;
    assert!(courier.stop().success(), "{}", courier.log());

    let (counts, versions) = inserts(&dir.join("out.jsonl"), rows);
    println!("kill -9 mid-stream: the restarted Courier saw {blocks} streamed blocks");
    assert!(
        blocks > 0,
        "the restarted Courier received the transaction streamed again"
    );
    assert_eq!(
        missing_and_repeated(&counts),
        (0, 0),
        "(rows missing, rows written more than once)"
    );
    assert_eq!(versions.len(), 1, "every row carries the commit's version");
    drop_db(db).await;
}
