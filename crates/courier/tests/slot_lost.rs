//! End to end: PostgreSQL invalidates Courier's slot (it fell further behind
//! than `max_slot_wal_keep_size` while Courier was stopped). The next start
//! says what happened and how to recover instead of PostgreSQL's terse
//! refusal; with `on_slot_lost = "rebuild"` it recovers by itself, and the
//! cache equals PostgreSQL again, rows deleted meanwhile included.

mod support;

use std::time::Duration;

use support::redis::{clear, standalone_url, RedisNodes};
use support::*;

/// Puts `max_slot_wal_keep_size` back however the test ends: the server is
/// shared with every other test.
struct KeepSize;

impl Drop for KeepSize {
    fn drop(&mut self) {
        dev_pg(&[
            "psql",
            "-X",
            "-q",
            "-d",
            "postgres",
            "-c",
            "ALTER SYSTEM RESET max_slot_wal_keep_size",
        ]);
        dev_pg(&[
            "psql",
            "-X",
            "-q",
            "-d",
            "postgres",
            "-c",
            "SELECT pg_reload_conf()",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_postgresql_invalidated_stops_courier_with_the_recovery() {
    let db = "e2e_slot_lost";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, note text); \
             INSERT INTO items SELECT g, 'before' FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let prefix = "slt:";
    let cache = RedisNodes::connect(&standalone_url(14), false).await;
    clear(&cache, prefix).await;
    let dir = scratch(db);
    let sink = format!(
        "type = \"redis\"\nurl = {:?}\nkey = \"{prefix}{{pk}}\"\n",
        standalone_url(14)
    );
    let config = sink_config(db, db, &["public.items"], &dir, "cache", &sink);
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, Duration::from_secs(120)).await;
    assert_eq!(courier.stop().code(), Some(0), "{}", courier.log());

    // While Courier is stopped: a small limit, and more WAL than it allows.
    let _reset = KeepSize;
    for sql in [
        "ALTER SYSTEM SET max_slot_wal_keep_size = '32MB'",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    client
        .batch_execute(
            "INSERT INTO items VALUES (21, 'lost'); UPDATE items SET note = 'lost' WHERE id = 2; \
             DELETE FROM items WHERE id <= 1 OR id = 7;",
        )
        .await
        .unwrap();
    wait_until("PostgreSQL to invalidate the slot", Duration::from_secs(120), || async {
        for sql in [
            "SELECT count(pg_logical_emit_message(false, 'filler', repeat('x', 1048576))) FROM generate_series(1, 48)",
            "SELECT pg_switch_wal()",
            "CHECKPOINT",
        ] {
            client.batch_execute(sql).await.unwrap();
        }
        let status: Option<String> = client
            .query_one("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", &[&db])
            .await
            .unwrap()
            .get(0);
        status.as_deref() == Some("lost")
    })
    .await;
    drop(_reset);

    courier.restart();
    let status = courier
        .wait_exit("courier to stop on the lost slot", Duration::from_secs(60))
        .await;
    assert!(!status.success());
    let log = courier.log();
    for words in [
        "invalidated",
        "max_slot_wal_keep_size",
        "pg_drop_replication_slot('e2e_slot_lost')",
        "courier verify --repair",
    ] {
        assert!(
            log.contains(words),
            "the error does not say {words:?}:\n{log}"
        );
    }

    // `courier check` says it too.
    let (code, out, _) = courier_cmd(&["check", "--config", courier.config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("invalidated"), "{out}");

    // Recovery by itself: a new slot, a new snapshot, then the repair.
    std::fs::write(
        &courier.config,
        config.replace("[source]\n", "[source]\non_slot_lost = \"rebuild\"\n"),
    )
    .unwrap();
    courier.restart();
    let want = || async {
        let rows = client
            .query("SELECT id, note FROM items ORDER BY id", &[])
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                (
                    r.get::<_, i32>(0).to_string(),
                    serde_json::json!({"id": r.get::<_, i32>(0), "note": r.get::<_, String>(1)}),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let expected = want().await;
    wait_until(
        "the cache to equal PostgreSQL after the lost slot",
        Duration::from_secs(120),
        || async { cache.json_rows(prefix).await == expected },
    )
    .await;
    let log = courier.log();
    assert!(log.contains("store repaired after the lost slot"), "{log}");
    assert!(
        courier.is_running(),
        "courier stopped after the recovery:\n{log}"
    );
    drop(courier);
}
