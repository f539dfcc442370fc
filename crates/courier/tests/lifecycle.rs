//! How a run starts, stops and fails, against real servers: a store that is
//! down at start or at shutdown, a fatal error in one of several sinks, the
//! slot's progress while a large backlog drains, and an admin API that
//! would be open to other machines.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use courier_core::Lsn;
use support::load::{create_table, pg_rows};
use support::redis::{redis_config, OwnRedis, RedisNodes};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

async fn api_status(port: u16) -> Option<serde_json::Value> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/v1/status"))
        .await
        .ok()?;
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

/// A store that is down when Courier starts is waited for (and shown as
/// such in /v1/status) instead of ending the run; one that is down at
/// shutdown makes the stop end after `shutdown_timeout`, non-zero, naming
/// the sink and where the next start replays from; that next start then
/// applies what was missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_down_at_start_and_at_shutdown() {
    let db = "e2e_life_down";
    let client = fresh_db(db).await;
    create_table(&client, "items", 200).await;
    let dir = scratch(db);
    let mut redis = OwnRedis::new(&dir);
    let api = free_port();
    let config = redis_config(
        db,
        db,
        &["public.items"],
        &dir,
        &format!("url = {:?}\nkey = \"life:{{pk}}\"", redis.url()),
    )
    .replace("listen = \"off\"", &format!("listen = \"127.0.0.1:{api}\""))
        + "\n[pipeline]\nshutdown_timeout = \"3s\"\n";
    let mut courier = CourierProc::start(&dir, &config);

    wait_until(
        "the sink to show as connecting",
        Duration::from_secs(60),
        || async {
            api_status(api)
                .await
                .is_some_and(|s| s["sinks"]["cache"]["state"] == "connecting")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        courier.is_running(),
        "courier gave up on a store that was down at start:\n{}",
        courier.log()
    );
    let status = api_status(api).await.expect("status");
    let error = status["sinks"]["cache"]["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(
        error.contains(&redis.port.to_string()),
        "the status names the store: {status}"
    );

    redis.start().await;
    wait_caught_up(&client, db, CATCH_UP).await;
    let nodes = RedisNodes::connect(&redis.url(), false).await;
    assert_eq!(
        nodes.json_rows("life:").await,
        pg_rows(&client, "items").await
    );
    drop(nodes);

    redis.kill();
    client
        .batch_execute("UPDATE items SET note = 'while redis was down' WHERE id <= 5")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    let exit = courier.stop();
    let took = asked.elapsed();
    assert!(!exit.success(), "a stop that did not finish must say so");
    assert!(
        took < Duration::from_secs(20),
        "the stop took {took:?} with shutdown_timeout = 3s"
    );
    let log = courier.log();
    for part in ["shutdown did not finish", "sink cache", "replays from LSN"] {
        assert!(log.contains(part), "{part:?} missing from the log:\n{log}");
    }

    redis.start().await;
    courier.restart();
    wait_caught_up(&client, db, CATCH_UP).await;
    let nodes = RedisNodes::connect(&redis.url(), false).await;
    assert_eq!(
        nodes.json_rows("life:").await,
        pg_rows(&client, "items").await
    );
    assert!(courier.stop().success(), "{}", courier.log());
    drop_db(db).await;
}

/// A store down for longer than the server's `wal_sender_timeout` does not
/// cost the replication connection: while full queues hold the stream back,
/// Courier keeps reporting its position, so the server does not end the
/// connection for silence.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_outage_keeps_the_replication_connection() {
    let db = "e2e_life_outage";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    // A role whose walsenders give up on a client silent for 2 s.
    client
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE e2e_impatient LOGIN SUPERUSER PASSWORD 'postgres';
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE e2e_impatient SET wal_sender_timeout = '2s';",
        )
        .await
        .unwrap();
    let dir = scratch(db);
    let mut redis = OwnRedis::new(&dir);
    redis.start().await;
    let config = redis_config(
        db,
        db,
        &["public.items"],
        &dir,
        &format!("url = {:?}\nkey = \"outage:{{pk}}\"", redis.url()),
    )
    .replace("postgres://postgres:", "postgres://e2e_impatient:")
        + "\n[pipeline]\nqueue_batches = 1\nbatch_changes = 100\n";
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;

    redis.kill();
    client
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..50 LOOP
                 INSERT INTO items SELECT g, g % 1000, 'outage ' || g, g * 0.25
                   FROM generate_series(i * 100 + 1, i * 100 + 100) g;
                 COMMIT;
             END LOOP; END $$;",
        )
        .await
        .unwrap();
    // Four times the server's patience, with the queues full.
    tokio::time::sleep(Duration::from_secs(8)).await;
    redis.start().await;
    wait_caught_up(&client, db, CATCH_UP).await;
    let nodes = RedisNodes::connect(&redis.url(), false).await;
    assert_eq!(
        nodes.json_rows("outage:").await,
        pg_rows(&client, "items").await
    );
    assert!(courier.stop().success(), "{}", courier.log());
    let log = courier.log();
    assert!(
        !log.contains("replication stream lost"),
        "the server ended the replication connection during the outage:\n{log}"
    );
    drop_db(db).await;
}

/// A second SIGTERM stops at once, without waiting for the drain.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_stops_at_once() {
    let db = "e2e_life_twice";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch(db);
    // Nothing listens at the store's address: the drain would wait 1 h.
    let config = redis_config(
        db,
        db,
        &["public.items"],
        &dir,
        &format!("url = \"redis://127.0.0.1:{}\"", free_port()),
    ) + "\n[pipeline]\nshutdown_timeout = \"1h\"\n";
    let mut courier = CourierProc::start(&dir, &config);
    wait_until(
        "courier to try the store",
        Duration::from_secs(60),
        || async { courier.log().contains("sink store unreachable") },
    )
    .await;
    let pid = courier.child.id().to_string();
    let term = || Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    term();
    wait_until(
        "the first signal to be seen",
        Duration::from_secs(30),
        || async { courier.log().contains("shutdown requested") },
    )
    .await;
    let asked = Instant::now();
    term();
    let exit = courier.child.wait().unwrap();
    assert_eq!(exit.code(), Some(130), "{}", courier.log());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "took {:?}",
        asked.elapsed()
    );
    drop(client);
    drop_db(db).await;
}

/// With two sinks, a fatal error in one ends the run (non-zero, naming the
/// table and column), though the other sink is healthy and waiting.
#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_error_in_one_of_two_sinks_ends_the_run() {
    let db = "e2e_life_fatal";
    let database = "courier_e2e_life_fatal";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, label text);
             INSERT INTO t VALUES (1, 'a');",
        )
        .await
        .unwrap();
    let http = reqwest::Client::new();
    http.post("http://127.0.0.1:58123/")
        .body(format!("DROP DATABASE IF EXISTS {database}"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("ClickHouse on 58123 (dev/clickhouse.sh start)");
    let dir = scratch(db);
    let config = sink_config(
        db,
        db,
        &["public.t"],
        &dir,
        "analytics",
        &format!(
            "type = \"clickhouse\"\nurl = \"http://127.0.0.1:58123\"\ndatabase = \"{database}\""
        ),
    ) + &format!(
        "\n[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("out.jsonl").display()
    );
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;

    // text → int: ClickHouse cannot follow without rebuilding the table.
    client
        .batch_execute(
            "ALTER TABLE t ALTER COLUMN label TYPE int USING length(label);
             INSERT INTO t VALUES (2, 2);",
        )
        .await
        .unwrap();
    let asked = Instant::now();
    while courier.is_running() {
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "courier kept running after a fatal error in one sink:\n{}",
            courier.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exit = courier.child.wait().unwrap();
    assert!(!exit.success());
    let log = courier.log();
    for part in ["sink analytics", "public.t", "label"] {
        assert!(log.contains(part), "{part:?} missing from the log:\n{log}");
    }
    drop_db(db).await;
}

/// While a backlog far larger than one status interval's worth drains, the
/// slot's confirmed position moves forward steadily (every status
/// interval), not only when the server asks for a reply.
#[tokio::test(flavor = "multi_thread")]
async fn the_slot_advances_while_a_backlog_drains() {
    let db = "e2e_life_backlog";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let dir = scratch(db);
    let config = file_config(db, db, &["public.items"], &dir, "");
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success());

    // The backlog: 400,000 changes in 400 transactions.
    client
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..400 LOOP
                 INSERT INTO items SELECT g, g % 1000, 'backlog ' || g, g * 0.25
                   FROM generate_series(i * 1000 + 1, i * 1000 + 1000) g;
                 COMMIT;
             END LOOP; END $$;",
        )
        .await
        .unwrap();
    let end: Lsn = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get::<_, String>(0)
        .parse()
        .unwrap();
    let confirmed = || async {
        client
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&db],
            )
            .await
            .unwrap()
            .get::<_, String>(0)
            .parse::<Lsn>()
            .unwrap()
    };
    let start = confirmed().await;

    courier.restart();
    let began = Instant::now();
    let mut seen = vec![(Duration::ZERO, start)];
    loop {
        let now = confirmed().await;
        if now > seen.last().map(|s| s.1).unwrap_or(start) {
            seen.push((began.elapsed(), now));
        }
        if now >= end {
            break;
        }
        assert!(
            began.elapsed() < CATCH_UP,
            "the backlog did not drain; log:\n{}",
            courier.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = began.elapsed();
    let advances_before_end = seen.iter().filter(|(_, l)| *l < end).count() - 1;
    let longest_gap = seen
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    eprintln!(
        "backlog of {} MB drained in {drained:?}; the slot advanced {advances_before_end} times \
         before the end, longest gap {longest_gap:?}",
        (end.0 - start.0) >> 20
    );
    assert!(courier.stop().success(), "{}", courier.log());
    // The drain must last several status intervals (200 ms) for this to
    // say anything; the slot must then have moved in at least a third of
    // them (a stream that reports only when the socket runs dry, or when
    // the server asks, moves it a handful of times in all).
    let interval = Duration::from_millis(200);
    assert!(
        drained > interval * 10,
        "the backlog drained in {drained:?}: too fast to measure; make it larger"
    );
    let expected = (drained.as_millis() / (interval * 3).as_millis()) as usize;
    assert!(
        advances_before_end >= expected,
        "the slot advanced {advances_before_end} times during a {drained:?} drain \
         (at least {expected} expected; longest gap {longest_gap:?}): {seen:?}"
    );
    let rows = support::fold::fold_file(&dir.join("out.jsonl"));
    assert_eq!(rows["public.items"], pg_rows(&client, "items").await);
    drop_db(db).await;
}

/// An admin API listening beyond loopback without a token is refused at
/// start, with the fix; a token (or the explicit opt-out) makes it fine.
#[tokio::test]
async fn an_open_admin_api_needs_a_token() {
    let dir = scratch("life_open_api");
    let port = free_port();
    let config = file_config("postgres", "life_open_api", &["public.t"], &dir, "")
        .replace("listen = \"off\"", &format!("listen = \"0.0.0.0:{port}\""));
    let path = dir.join("courier.toml");
    std::fs::write(&path, config).unwrap();
    let (code, out, err) = courier_cmd(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("api.token") && err.contains("allow_remote_without_token"),
        "{err}"
    );
}
