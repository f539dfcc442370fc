//! The verify and rebuild benchmark (`bench/verify.sh`), not a test: for a
//! Redis cache and an OpenSearch index each holding a table of
//! `COURIER_BENCH_ROWS` rows (default 1,000,000) written by Courier's
//! snapshot, it times
//!
//! - the snapshot itself (start of `courier run` until the slot caught up),
//! - `courier verify` of the equal store, and with 1% of the rows deleted
//!   from the store behind Courier's back (rows per second of the table),
//! - `courier rebuild` of the drifted store, as a ratio to the snapshot,
//!
//! with the peak RSS of each command, and prints a table.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::Method;
use support::load::create_table;
use support::redis::{standalone_url, RedisNodes};
use support::search::{call, SearchNode};
use support::*;

const DB: &str = "bench_verify";

/// Runs `courier args` under `/usr/bin/time`: exit code, seconds, peak RSS
/// in MiB.
fn timed(args: &[&str]) -> (i32, f64, f64, String) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib %M", env!("CARGO_BIN_EXE_courier")])
        .args(args)
        .output()
        .expect("run /usr/bin/time");
    let seconds = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let rss = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|k| k.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0;
    (out.status.code().unwrap_or(-1), seconds, rss, err)
}

struct Figures {
    sink: &'static str,
    snapshot_s: f64,
    snapshot_rss: f64,
    verify_equal: (f64, f64),
    verify_drift: (f64, f64),
    rebuild: (f64, f64),
}

async fn measure(
    sink: &'static str,
    sink_toml: &str,
    rows: i64,
    drift: impl AsyncFnOnce(),
) -> Figures {
    let client = connect(DB).await;
    let slot = format!("{DB}_{sink}");
    let _ = client
        .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
        .await;
    let dir = scratch(&slot);
    let config = sink_config(DB, &slot, &["public.items"], &dir, sink, sink_toml)
        .replace("snapshot_chunk_rows = 5000", "snapshot_chunk_rows = 100000");
    let started = Instant::now();
    let courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, &slot, Duration::from_secs(1800)).await;
    let snapshot_s = started.elapsed().as_secs_f64();
    let snapshot_rss = courier.peak_rss_kib() as f64 / 1024.0;
    let path = courier.config.to_str().unwrap().to_string();

    let (code, s, rss, err) = timed(&[
        "verify",
        "--config",
        &path,
        "--sink",
        sink,
        "--timeout",
        "10m",
    ]);
    assert_eq!(code, 0, "verify of the equal {sink}: {err}");
    let verify_equal = (s, rss);
    drift().await;
    let (code, s, rss, err) = timed(&[
        "verify",
        "--config",
        &path,
        "--sink",
        sink,
        "--timeout",
        "10m",
    ]);
    assert_eq!(code, 1, "verify of the drifted {sink}: {err}");
    let verify_drift = (s, rss);
    let (code, s, rss, err) = timed(&[
        "rebuild", "--config", &path, "--sink", sink, "--grace", "1s",
    ]);
    assert_eq!(code, 0, "rebuild of {sink}: {err}");
    let rebuild = (s, rss);
    let (code, _, _, err) = timed(&[
        "verify",
        "--config",
        &path,
        "--sink",
        sink,
        "--timeout",
        "10m",
    ]);
    assert_eq!(code, 0, "verify after the rebuild of {sink}: {err}");
    drop(courier);
    let _ = rows;
    Figures {
        sink,
        snapshot_s,
        snapshot_rss,
        verify_equal,
        verify_drift,
        rebuild,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: bench/verify.sh runs it"]
async fn verify_and_rebuild_rates() {
    let rows: i64 = std::env::var("COURIER_BENCH_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1_000_000);
    let client = fresh_db(DB).await;
    create_table(&client, "items", rows).await;
    let one_percent = rows / 100;

    let redis_url = standalone_url(9);
    let cache = RedisNodes::connect(&redis_url, false).await;
    let _: () = ::redis::cmd("FLUSHDB")
        .query_async(&mut cache.first())
        .await
        .unwrap();
    let redis = measure(
        "cache",
        &format!("type = \"redis\"\nurl = {redis_url:?}\nkey = \"bv:{{pk}}\""),
        rows,
        async || {
            let _: () = ::redis::cmd("EVAL")
                .arg("for i = 1, tonumber(ARGV[1]) do redis.call('DEL', 'bv:' .. (i * 100)) end")
                .arg(0)
                .arg(one_percent)
                .query_async(&mut cache.first())
                .await
                .unwrap();
        },
    )
    .await;

    let search = SearchNode::selected("opensearch", 2)
        .expect("OpenSearch 2")
        .url();
    call(&search, Method::DELETE, "/bench_verify_items*", None).await;
    let opensearch = measure(
        "search",
        &format!("type = \"opensearch\"\nurl = {search:?}\nindex = \"bench_verify_{{table}}\""),
        rows,
        async || {
            // Deleted without versions, behind Courier's back (the dev node
            // has no delete-by-query).
            let body: String = (1..=one_percent)
                .map(|id| {
                    format!(
                        "{{\"delete\":{{\"_index\":\"bench_verify_items\",\"_id\":\"{id}\"}}}}\n"
                    )
                })
                .collect();
            let resp = reqwest::Client::new()
                .post(format!("{search}/_bulk?refresh=true"))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{:?}", resp.text().await);
        },
    )
    .await;

    println!("\nverify and rebuild, {rows} rows (bench/verify.sh)\n");
    println!(
        "{:<8} {:>10} {:>12} {:>16} {:>16} {:>12} {:>10} {:>9}",
        "sink",
        "snapshot",
        "snapshot RSS",
        "verify equal",
        "verify 1% drift",
        "rebuild",
        "rebuild /",
        "max RSS"
    );
    println!(
        "{:<8} {:>10} {:>12} {:>16} {:>16} {:>12} {:>10} {:>9}",
        "", "s", "MiB", "rows/s", "rows/s", "s", "snapshot", "MiB"
    );
    for f in [&redis, &opensearch] {
        let rss = f.verify_equal.1.max(f.verify_drift.1).max(f.rebuild.1);
        println!(
            "{:<8} {:>10.1} {:>12.0} {:>16.0} {:>16.0} {:>12.1} {:>10.2} {:>9.0}",
            f.sink,
            f.snapshot_s,
            f.snapshot_rss,
            rows as f64 / f.verify_equal.0,
            rows as f64 / f.verify_drift.0,
            f.rebuild.0,
            f.rebuild.0 / f.snapshot_s,
            rss
        );
    }
    drop_db(DB).await;
}
