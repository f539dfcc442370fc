//! Failover on PostgreSQL 17 (18 with `COURIER_PG_FAILOVER_VERSION=18`): a
//! primary and its physical standby started with `dev/pg-failover.sh`
//! (ports of their own, data under the target folder), Courier streaming under a write load through a multi-host URL
//! with `target_session_attrs=read-write` and `source.failover = true`. The
//! primary is stopped with an immediate shutdown and the standby promoted;
//! Courier reconnects by itself to the new primary, resumes from the slot
//! the standby synchronized, and both stores (the file sink and Redis) end
//! equal to the new primary row for row. `courier check` reports the pair
//! ready for a failover before, and the new primary without a standby after.
//!
//! Changes committed on the old primary that never reached the standby are
//! not expected in the stores: with `synchronized_standby_slots` the slot
//! cannot have passed them, so the stores must hold nothing the new primary
//! lacks either.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::fold::fold_file;
use support::load::{create_table, pg_rows};
use support::pair::{connect, Pair};
use support::redis::{clear, standalone_url, RedisNodes};
use support::*;
use tokio_postgres::{Client, NoTls};

const DB: &str = "e2e_promotion";
const SLOT: &str = "promotion_e2e";
/// The Redis sink's keys.
const PREFIX: &str = "e2e_promotion:";
/// Generous: the machine may be busy with other builds and tests.
const PATIENCE: Duration = Duration::from_secs(300);

/// Writers committing small transactions on `items` on whichever port
/// `target` names, reconnecting whenever a connection breaks.
struct Load {
    target: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, writers: u64) -> Load {
        let target = Arc::new(AtomicU16::new(port));
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let writers = (0..writers)
            .map(|w| {
                let (target, stop, committed) = (target.clone(), stop.clone(), committed.clone());
                tokio::spawn(write(w, target, stop, committed))
            })
            .collect();
        Load {
            target,
            stop,
            committed,
            writers,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    async fn commit_more(&self, n: u64) {
        let goal = self.committed() + n;
        let what = format!("the load to commit {n} more transactions");
        wait_until(&what, PATIENCE, || async { self.committed() >= goal }).await;
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.writers {
            w.await.unwrap();
        }
        self.committed.load(Ordering::Relaxed)
    }
}

async fn write(w: u64, target: Arc<AtomicU16>, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(w + 1);
    let mut client: Option<(u16, Client)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let port = target.load(Ordering::Relaxed);
        if client
            .as_ref()
            .is_none_or(|(p, c)| *p != port || c.is_closed())
        {
            client = match tokio_postgres::connect(&Pair::url(port, DB), NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    Some((port, c))
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
        }
        let Some((_, c)) = &client else { continue };
        let id: i64 = rng.gen_range(1..5_000);
        let sql = match rng.gen_range(0..10) {
            0..=3 => format!(
                "INSERT INTO items VALUES ({id}, {v}, 'w{w} n{n}', {a}.5) \
                 ON CONFLICT (id) DO UPDATE SET val = excluded.val, note = excluded.note",
                v = rng.gen_range(0..1000),
                a = rng.gen_range(0..100_000)
            ),
            4..=7 => format!(
                "UPDATE items SET val = val + 1, note = 'w{w} u{n}', amount = amount + 1 WHERE id = {id}"
            ),
            8 => format!("DELETE FROM items WHERE id = {id}"),
            _ => format!(
                "BEGIN; UPDATE items SET val = val - 1 WHERE id = {id}; \
                 INSERT INTO items VALUES ({}, 1, NULL, NULL) ON CONFLICT DO NOTHING; COMMIT",
                id + 5_000
            ),
        };
        match c.batch_execute(&sql).await {
            Ok(()) => {
                n += 1;
                committed.fetch_add(1, Ordering::Relaxed);
            }
            // A read-only standby, a dying server: try again shortly.
            Err(_) => {
                let _ = c.batch_execute("ROLLBACK").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Whether `slot` is synchronized to the standby, and persistent there
/// (a slot still in its first synchronization is temporary).
async fn synced_on(standby: &Client, slot: &str) -> bool {
    standby
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND synced AND NOT temporary",
            &[&slot],
        )
        .await
        .ok()
        .flatten()
        .is_some()
}

/// Reads the file sink's output as it grows: the greatest commit LSN so far.
struct Tail {
    path: PathBuf,
    read: u64,
    newest: u64,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            read: 0,
            newest: 0,
        }
    }

    /// Reads the lines written since the last call (whole lines only).
    fn newest_version(&mut self) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            let _ = f.seek(SeekFrom::Start(self.read));
            let _ = f.read_to_string(&mut text);
        }
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..complete].lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                self.newest = self.newest.max(v["source"]["lsn"].as_u64().unwrap_or(0));
            }
        }
        self.read += complete as u64;
        self.newest
    }
}

/// What `courier check` prints for the test's configuration.
fn check(dir: &Path) -> String {
    let config = dir.join("courier.toml");
    let (_, out, err) = courier_cmd(&["check", "--config", config.to_str().unwrap()]);
    format!("{out}{err}")
}

/// Asserts that `store` holds exactly the rows `expected` holds.
fn assert_same(
    store: &str,
    expected: &BTreeMap<String, Value>,
    got: &BTreeMap<String, Value>,
    committed: u64,
) {
    let support::fold::RowDiff {
        missing,
        extra,
        differing,
    } = support::fold::RowDiff::of(expected, got);
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "after {committed} transactions and a failover {store} differs from the new primary: \
         {} rows missing (e.g. {:?}), {} extra (e.g. {:?}), {} different (e.g. {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        differing.len(),
        differing.first()
    );
    assert!(!got.is_empty(), "{store} holds no row");
}

#[tokio::test(flavor = "multi_thread")]
async fn courier_follows_a_failover_to_the_promoted_standby() {
    let pair = Pair::start("failover-pair");
    let primary = pair.create_database(DB).await;
    create_table(&primary, "items", 2_000).await;

    let dir = scratch("failover_promotion");
    let redis_url = standalone_url(14);
    let redis = RedisNodes::connect(&redis_url, false).await;
    clear(&redis, PREFIX).await;
    // Two stores: the file sink and Redis.
    let config = file_config(DB, SLOT, &["public.items"], &dir, "failover = true")
        .replace(&pg_url(DB), &pair.multi_host_url(DB))
        + &format!(
            "\n[sinks.cache]\ntype = \"redis\"\nurl = {redis_url:?}\nkey = \"{PREFIX}{{pk}}\"\n"
        );
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&primary, SLOT, PATIENCE).await;

    // Under load, until the standby holds a persistent copy of the slot.
    let load = Load::start(pair.primary, 3);
    let standby = connect(pair.standby, "postgres").await;
    wait_until(
        "the standby to synchronize the failover slot",
        PATIENCE,
        || async { synced_on(&standby, SLOT).await },
    )
    .await;

    // What `courier check` says about the pair while it streams.
    let report = check(&dir);
    for line in [
        format!("ok    failover slot: {SLOT} is a failover slot"),
        "ok    synchronized_standby_slots: names courier_standby, a physical slot on the primary"
            .to_string(),
        format!(
            "ok    failover standby 127.0.0.1:{}: sync_replication_slots = on",
            pair.standby
        ),
        format!(
            "ok    failover standby 127.0.0.1:{}: hot_standby_feedback = on",
            pair.standby
        ),
        format!(
            "ok    failover standby 127.0.0.1:{}: primary_slot_name = courier_standby",
            pair.standby
        ),
        format!(
            "ok    failover standby 127.0.0.1:{}: slot {SLOT} is synchronized here",
            pair.standby
        ),
        "ok    failover hosts: 2 hosts, target_session_attrs=read-write".to_string(),
    ] {
        assert!(
            report.contains(&line),
            "`courier check` lacks {line:?}:\n{report}"
        );
    }
    assert!(
        !report.contains("postgres:postgres@"),
        "a password in:\n{report}"
    );

    load.commit_more(1_000).await;
    let kill = Instant::now();
    pair.script("kill");
    load.target.store(pair.standby, Ordering::Relaxed);
    // Everything the standby received from the old primary (once its WAL
    // receiver has written what was on its way); the new primary's commits
    // come after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received: String = standby
        .query_one(
            "SELECT GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let old_end = received
        .parse::<courier_core::Lsn>()
        .expect("an LSN")
        .as_u64();
    let out = dir.join("out.jsonl");
    let mut tail = Tail::new(&out);
    tail.newest_version();
    pair.script("promote");

    let start = Instant::now();
    while tail.newest_version() <= old_end {
        assert!(
            start.elapsed() < PATIENCE,
            "Courier applied no change committed on the new primary within {PATIENCE:?}; log:\n{}",
            courier.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = kill.elapsed();
    println!(
        "failover: {} ms from the primary's immediate stop to the first change applied from the new primary",
        took.as_millis()
    );
    load.commit_more(1_000).await;
    let committed = load.stop().await;

    let new_primary = connect(pair.standby, DB).await;
    wait_caught_up(&new_primary, SLOT, PATIENCE).await;

    // After the failover the new primary has no standby yet: check says so.
    let report = check(&dir);
    for line in [
        "FAIL  synchronized_standby_slots: is empty on the primary".to_string(),
        format!(
            "note  failover host 127.0.0.1:{}: cannot connect to check it",
            pair.primary
        ),
        format!("ok    failover slot: {SLOT} is a failover slot"),
    ] {
        assert!(
            report.contains(&line),
            "`courier check` after the failover lacks {line:?}:\n{report}"
        );
    }
    assert!(
        courier.is_running(),
        "Courier stopped; log:\n{}",
        courier.log()
    );
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    assert!(
        courier
            .log()
            .contains("replication stream lost; reconnecting"),
        "log:\n{}",
        courier.log()
    );

    let expected = pg_rows(&new_primary, "items").await;
    let file = fold_file(&out).remove("public.items").unwrap_or_default();
    assert_same("the file sink", &expected, &file, committed);
    let cache = redis.json_rows(PREFIX).await;
    assert_same("Redis", &expected, &cache, committed);
    drop(courier);
    drop(pair);
}
