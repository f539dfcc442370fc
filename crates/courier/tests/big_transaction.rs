//! A 1,000,000-row transaction streams through with bounded memory.

mod support;

use std::io::BufRead;
use std::time::{Duration, Instant};

use support::load::create_table;
use support::*;

const ROWS: i64 = 1_000_000;
const RSS_LIMIT_KIB: u64 = 150 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn million_row_transaction_with_bounded_memory() {
    let db = "e2e_big";
    let client = fresh_db(db).await;
    create_table(&client, "items", 0).await;
    let dir = scratch("big");
    let mut courier =
        CourierProc::start(&dir, &file_config(db, "big", &["public.items"], &dir, ""));
    wait_caught_up(&client, "big", Duration::from_secs(60)).await;

    client
        .batch_execute(&format!(
            "INSERT INTO items SELECT g, g % 1000, repeat('p', 200) || g, g * 0.01 FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
    let start = Instant::now();
    wait_caught_up(&client, "big", Duration::from_secs(600)).await;
    let secs = start.elapsed().as_secs_f64();
    let peak = courier.peak_rss_kib();
    assert!(courier.stop().success(), "{}", courier.log());

    let inserts = insert_counts(&dir.join("out.jsonl"), ROWS, 0);
    println!(
        "1M-row transaction: drained in {secs:.1}s ({:.0} rows/s), peak RSS {} MiB",
        ROWS as f64 / secs,
        peak / 1024
    );
    assert_eq!(
        missing_and_repeated(&inserts),
        (0, 0),
        "(rows missing, rows written more than once): every row of the transaction reaches the sink exactly once"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "peak RSS {peak} KiB is over {RSS_LIMIT_KIB} KiB"
    );
    drop_db(db).await;
}

/// How many insert events (`op` `c`) of at least `min_len` bytes the file
/// sink at `path` wrote for each `id`, indexed by id, for ids 1 to `rows`.
/// The envelope is read as text: a million lines are too many to parse as
/// JSON in an unoptimised build.
fn insert_counts(path: &std::path::Path, rows: i64, min_len: usize) -> Vec<u32> {
    let mut counts = vec![0; rows as usize + 1];
    let file = std::fs::File::open(path).unwrap();
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if !line.contains(r#"},"op":"c","ts_ms":"#) || line.len() < min_len {
            continue;
        }
        let id = line
            .strip_prefix(r#"{"before":null,"after":{"id":"#)
            .and_then(|rest| rest.split_once(','))
            .and_then(|(id, _)| id.parse::<usize>().ok())
            .filter(|id| (1..=rows as usize).contains(id))
            .unwrap_or_else(|| panic!("an insert of an id outside 1..={rows}: {line:.200}"));
        counts[id] += 1;
    }
    counts
}

/// (ids with no insert, ids with more than one) among `insert_counts`.
fn missing_and_repeated(counts: &[u32]) -> (usize, usize) {
    let counts = &counts[1..];
    (
        counts.iter().filter(|n| **n == 0).count(),
        counts.iter().filter(|n| **n > 1).count(),
    )
}

/// Wide rows: 1,500 rows of 200 KB each (300 MB of values) in one
/// transaction; batches end by bytes, so memory does not follow row width.
#[tokio::test(flavor = "multi_thread")]
async fn wide_rows_stream_with_bounded_memory() {
    const WIDE_ROWS: i64 = 1_500;
    let db = "e2e_wide";
    let client = fresh_db(db).await;
    create_table(&client, "docs", 0).await;
    let dir = scratch("wide");
    let mut courier =
        CourierProc::start(&dir, &file_config(db, "wide", &["public.docs"], &dir, ""));
    wait_caught_up(&client, "wide", Duration::from_secs(60)).await;

    // 200 KB per row; repetitive, so the WAL stays small while every change
    // carries the whole value.
    client
        .batch_execute(&format!(
            "INSERT INTO docs SELECT g, g, repeat(md5(g::text), 6400), 0 FROM generate_series(1, {WIDE_ROWS}) g"
        ))
        .await
        .unwrap();
    wait_caught_up(&client, "wide", Duration::from_secs(600)).await;
    let peak = courier.peak_rss_kib();
    assert!(courier.stop().success(), "{}", courier.log());

    let whole = insert_counts(&dir.join("out.jsonl"), WIDE_ROWS, 200_000);
    println!("{WIDE_ROWS} rows of 200 KB: peak RSS {} MiB", peak / 1024);
    assert_eq!(
        missing_and_repeated(&whole),
        (0, 0),
        "(rows missing or cut short, rows written more than once): every wide row reaches the sink whole, once"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "peak RSS {peak} KiB is over {RSS_LIMIT_KIB} KiB"
    );
    drop_db(db).await;
}
