//! The outbox benchmark (ignored by `cargo test`; `bench/outbox.sh` runs it
//! in release mode and prints its figures): outbox events routed end to end,
//! from the application's `INSERT INTO outbox` to records in Kafka, the way
//! `bench/README.md` measures drains, for the Kafka sink with and without
//! `exactly_once`:
//!
//! * **Drain**: with Courier stopped, pgbench commits OLTP-style
//!   transactions (an UPDATE of an order, an INSERT of its event into the
//!   outbox); `pg_recvlogical` (pgoutput to `/dev/null`, the walsender's own
//!   limit) and Courier then drain the same backlog, each from a slot
//!   created before it. Courier's time runs from its start until its slot
//!   confirmed the backlog's end, which it does once the broker
//!   acknowledged (or, with exactly once, committed) every event.
//! * **Latency**: while Courier streams, pgbench commits the same
//!   transaction durably at a fixed rate; a `read_committed` consumer
//!   records, per event, the time it receives it minus the record's
//!   timestamp, which is the transaction's commit time (PostgreSQL's
//!   commit timestamp, in whole milliseconds: figures can be up to 1 ms
//!   high).
//!
//! Sizes: `COURIER_BENCH_EVENTS` (default 50,000 transactions in the
//! backlog), `COURIER_BENCH_RATE` (default 1,000 transactions/s) for
//! `COURIER_BENCH_SECONDS` (default 10).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::kafka::{brokers, delete_topics, kafka_config, run_prefix};
use support::*;
use tokio_postgres::Client;

const DB: &str = "bench_outbox";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// PostgreSQL's client programs (`pgbench`, `pg_recvlogical`).
fn pg_bin(program: &str) -> PathBuf {
    let dir = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".to_string());
    Path::new(&dir).join(program)
}

const TRANSACTION: &str = "\\set aid random(1, 10000)
BEGIN;
UPDATE orders SET version = version + 1, total = total + 1 WHERE id = :aid;
INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', :aid::text, 'order.updated',
  jsonb_build_object('order', :aid::int, 'total', 12.5, 'currency', 'EUR', 'lines', jsonb_build_array(jsonb_build_object('sku', 'A-1', 'qty', 2))));
END;
";

/// Runs pgbench with `TRANSACTION` and `args`; the transactions it
/// committed and its rate.
fn pgbench(dir: &Path, args: &[&str], env: &[(&str, &str)], script: &str) -> (u64, f64) {
    let path = dir.join("transaction.pgbench");
    std::fs::write(&path, script).unwrap();
    let out = Command::new(pg_bin("pgbench"))
        .arg("-n")
        .arg("-f")
        .arg(&path)
        .args(args)
        .arg(format!("{}?sslmode=disable", pg_url(DB)))
        .envs(env.iter().copied())
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let number = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    };
    (
        number("number of transactions actually processed:") as u64,
        number("tps ="),
    )
}

async fn lsn(client: &Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `slot` confirmed `end`; the time since `since`.
async fn drained(client: &Client, slot: &str, end: &str, since: Instant) -> Duration {
    loop {
        let done = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::text::pg_lsn",
                &[&slot, &end],
            )
            .await
            .unwrap()
            .is_some();
        if done {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(900),
            "slot {slot} did not reach {end}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receive time minus record timestamp of every record of `topic` from
/// now on, until `stop` and `expected` records were read.
fn consume_latencies(
    topic: String,
    expected: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "courier-outbox-bench")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .unwrap();
    let mut list = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            list.add_partition_offset(&topic, p.id(), Offset::End)
                .unwrap();
        }
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let deadline = || Instant::now() + Duration::from_secs(120);
    let mut give_up = deadline();
    loop {
        if stop.load(Ordering::Relaxed) && out.len() as u64 >= expected.load(Ordering::Relaxed) {
            return out;
        }
        assert!(
            Instant::now() < give_up,
            "read {} records of {topic}",
            out.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            let m = m.unwrap();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            if let Some(ts) = m.timestamp().to_millis() {
                out.push(now - ts);
            }
            give_up = deadline();
        }
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}

/// One sink setting's figures.
struct Figures {
    mode: &'static str,
    events: u64,
    recvlogical_s: f64,
    courier_s: f64,
    rss_mib: f64,
    target_tps: u64,
    achieved_tps: f64,
    latency_ms: (i64, i64, i64, i64),
}

async fn measure(mode: &'static str, extra: &str, events: u64, rate: u64, seconds: u64) -> Figures {
    let client = fresh_db(DB).await;
    client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric(12,2) NOT NULL, version int NOT NULL);
             INSERT INTO orders SELECT g, 10, 1 FROM generate_series(1, 10000) g;
             CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,
                 aggregateid text NOT NULL, type text NOT NULL, payload jsonb,
                 created_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .unwrap();
    let dir = scratch(&format!("{DB}_{mode}"));
    let prefix = run_prefix(&format!("{DB}-{mode}"));
    let topic = format!("{prefix}.outbox.order");
    let config = kafka_config(DB, &[], &dir, &prefix, &format!("partitions = 3\n{extra}"))
        .replace("status_interval = \"200ms\"", "status_interval = \"20ms\"")
        + &format!(
            "\n[outbox.orders]\ntable = \"public.outbox\"\nsink = \"bus\"\ntopic = \"{prefix}.outbox.{{aggregatetype}}\"\nexpand_json_payload = true\n"
        );

    // Both slots exist before the backlog is written.
    let mut courier = CourierProc::start(&dir, &config);
    wait_until("courier to stream", Duration::from_secs(120), || async {
        courier.log().contains("streaming changes")
    })
    .await;
    assert!(courier.stop().success(), "{}", courier.log());
    let recv_slot = format!("{DB}_recv");
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&recv_slot],
        )
        .await
        .unwrap();

    let pipelined = TRANSACTION
        .replace("BEGIN;", "\\startpipeline\nBEGIN;")
        .replace("END;\n", "END;\n\\endpipeline\n");
    let per_client = events.div_ceil(4).to_string();
    pgbench(
        &dir,
        &["-c", "4", "-j", "2", "-M", "prepared", "-t", &per_client],
        &[("PGOPTIONS", "-c synchronous_commit=off")],
        &pipelined,
    );
    let backlog = events.div_ceil(4) * 4;
    let end = lsn(&client, "SELECT pg_current_wal_insert_lsn()::text").await;
    wait_until(
        "the backlog to be flushed",
        Duration::from_secs(60),
        || async {
            let flushed = lsn(
                &client,
                &format!("SELECT (pg_current_wal_flush_lsn() >= '{end}')::text"),
            )
            .await;
            flushed == "true"
        },
    )
    .await;

    let started = Instant::now();
    let recv = Command::new(pg_bin("pg_recvlogical"))
        .args([
            "-d",
            &pg_url(DB),
            "-S",
            &recv_slot,
            "--start",
            "-o",
            "proto_version=1",
        ])
        .args([
            "-o",
            &format!("publication_names={DB}"),
            "-f",
            "/dev/null",
            "--endpos",
            &end,
        ])
        .status()
        .expect("run pg_recvlogical");
    assert!(recv.success());
    let recvlogical_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut courier = CourierProc::start(&dir, &config);
    let courier_s = drained(&client, DB, &end, started).await.as_secs_f64();
    let rss_mib = courier.peak_rss_kib() as f64 / 1024.0;

    // Latency, while the same process streams.
    let expected = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (topic, expected, stop) = (topic.clone(), expected.clone(), stop.clone());
        tokio::task::spawn_blocking(move || consume_latencies(topic, expected, stop))
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (done, achieved_tps) = pgbench(
        &dir,
        &[
            "-c",
            "8",
            "-j",
            "2",
            "-R",
            &rate.to_string(),
            "-T",
            &seconds.to_string(),
        ],
        &[("PGOPTIONS", "-c synchronous_commit=on")],
        TRANSACTION,
    );
    expected.store(done, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = reader.await.unwrap();
    latencies.sort_unstable();
    assert!(courier.stop().success(), "{}", courier.log());
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&recv_slot])
        .await
        .unwrap();
    delete_topics(&prefix);
    drop_db(DB).await;
    Figures {
        mode,
        events: backlog,
        recvlogical_s,
        courier_s,
        rss_mib,
        target_tps: rate,
        achieved_tps,
        latency_ms: (
            percentile(&latencies, 50.0),
            percentile(&latencies, 95.0),
            percentile(&latencies, 99.0),
            latencies.last().copied().unwrap_or(0),
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: bench/outbox.sh runs it"]
async fn outbox_events_per_second_and_commit_to_kafka_latency() {
    let events = env_number("COURIER_BENCH_EVENTS", 50_000);
    let rate = env_number("COURIER_BENCH_RATE", 1_000);
    let seconds = env_number("COURIER_BENCH_SECONDS", 10);
    let mut rows = Vec::new();
    for (mode, extra) in [("kafka", ""), ("kafka_eos", "exactly_once = true")] {
        rows.push(measure(mode, extra, events, rate, seconds).await);
    }
    println!("\n| sink | events | pg_recvlogical events/s | Courier events/s | ratio | peak RSS | latency at | p50 | p95 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in rows {
        let (p50, p95, p99, max) = f.latency_ms;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} MiB | {:.0} of {} tx/s | {p50} ms | {p95} ms | {p99} ms | {max} ms |",
            f.mode,
            f.events,
            f.events as f64 / f.recvlogical_s,
            f.events as f64 / f.courier_s,
            f.recvlogical_s / f.courier_s,
            f.rss_mib,
            f.achieved_tps,
            f.target_tps,
        );
    }
}
