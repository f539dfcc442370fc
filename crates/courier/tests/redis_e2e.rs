//! End to end: PostgreSQL → courier → Redis (standalone and Redis Cluster),
//! against the real servers started by the `dev/` scripts.
//!
//! Each test has its own database, slot and key prefix (and, on the
//! standalone server, its own logical database), so they run in parallel
//! with each other and with the sink's own tests.

mod support;

use std::time::Duration;

use support::load::{create_table, pg_rows};
use support::redis::{clear, cluster_url, redis_config, standalone_url, RedisNodes};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

/// Snapshot, then a concurrent write load with five kill -9 restarts of
/// Courier (two during the snapshot, three while streaming): once caught up, every row
/// of PostgreSQL is readable in Redis with equal values, and no other row
/// (deleted rows are tombstones, which hold no `row`).
async fn kill_9_under_load(db: &'static str, url: &str, cluster: bool, prefix: &str) {
    let client = fresh_db(db).await;
    create_table(&client, "items", 20_000).await;
    let nodes = RedisNodes::connect(url, cluster).await;
    clear(&nodes, prefix).await;
    let dir = scratch(db);
    let config = redis_config(
        db,
        db,
        &["public.items"],
        &dir,
        &format!("url = {url:?}\ncluster = {cluster}\nkey = \"{prefix}{{pk}}\""),
    );

    support::chaos::kill_9_under_load(&client, db, &dir, &config, 5, 150, CATCH_UP).await;

    let expected = pg_rows(&client, "items").await;
    let got = nodes.json_rows(prefix).await;
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "rows missing from / resurrected in Redis after kill -9"
    );
    let differing: Vec<&String> = expected
        .keys()
        .filter(|k| got[*k] != expected[*k])
        .collect();
    assert!(
        differing.is_empty(),
        "{} rows differ, e.g. id {}: redis {} vs postgres {}",
        differing.len(),
        differing[0],
        got[differing[0]],
        expected[differing[0]]
    );
    // The load deleted rows: their keys are tombstones, present but unreadable.
    let keys = nodes.keys(&format!("{prefix}*")).await.len();
    assert!(
        keys > got.len(),
        "expected tombstones beside the {} rows, found {keys} keys",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_standalone() {
    kill_9_under_load("e2e_redis_kill9", &standalone_url(11), false, "e2e_kill9:").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_cluster() {
    kill_9_under_load("e2e_redis_cluster", &cluster_url(), true, "e2e_cluster:").await;
}

/// `mode = "invalidate"`: a change to a row deletes its key, whatever it
/// held; keys of unchanged rows stay; a TRUNCATE removes every key of the table.
#[tokio::test(flavor = "multi_thread")]
async fn invalidate_deletes_keys_of_changed_rows() {
    let db = "e2e_redis_inval";
    let prefix = "e2e_inval:";
    let client = fresh_db(db).await;
    create_table(&client, "items", 100).await;
    let url = standalone_url(12);
    let nodes = RedisNodes::connect(&url, false).await;
    clear(&nodes, prefix).await;
    let dir = scratch(db);
    let config = redis_config(
        db,
        db,
        &["public.items"],
        &dir,
        &format!("url = {url:?}\nmode = \"invalidate\"\nkey = \"{prefix}{{pk}}\""),
    );
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;

    // What an application would have cached (cache-aside), as a string and a hash.
    let mut c = nodes.first();
    for id in [5, 6, 7, 8] {
        let _: () = ::redis::cmd("SET")
            .arg(format!("{prefix}{id}"))
            .arg("cached")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let _: () = ::redis::cmd("HSET")
        .arg(format!("{prefix}9"))
        .arg("row")
        .arg("{}")
        .query_async(&mut c)
        .await
        .unwrap();
    client
        .batch_execute(
            "UPDATE items SET val = -1 WHERE id = 5; DELETE FROM items WHERE id = 6;
             UPDATE items SET note = 'x' WHERE id = 9",
        )
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    let mut remaining: Vec<String> = nodes
        .keys(&format!("{prefix}*"))
        .await
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    remaining.sort();
    assert_eq!(remaining, [format!("{prefix}7"), format!("{prefix}8")]);

    client.batch_execute("TRUNCATE items").await.unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    assert_eq!(nodes.keys(&format!("{prefix}*")).await, []);
}

/// With `ttl`, rows expire after it; a deleted row's tombstone expires
/// after `tombstone_ttl`.
#[tokio::test(flavor = "multi_thread")]
async fn rows_and_tombstones_get_their_ttl() {
    let db = "e2e_redis_ttl";
    let prefix = "e2e_ttl:";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let url = standalone_url(13);
    let nodes = RedisNodes::connect(&url, false).await;
    clear(&nodes, prefix).await;
    let dir = scratch(db);
    let sink =
        format!("url = {url:?}\nkey = \"{prefix}{{pk}}\"\nttl = \"1h\"\ntombstone_ttl = \"2h\"");
    let mut courier =
        CourierProc::start(&dir, &redis_config(db, db, &["public.items"], &dir, &sink));
    wait_caught_up(&client, db, CATCH_UP).await;
    client
        .batch_execute("UPDATE items SET val = 0 WHERE id = 1; DELETE FROM items WHERE id = 2")
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let mut c = nodes.first();
    let pttl = |id: i64| {
        let mut c = c.clone();
        async move {
            let ms: i64 = ::redis::cmd("PTTL")
                .arg(format!("{prefix}{id}"))
                .query_async(&mut c)
                .await
                .unwrap();
            ms
        }
    };
    for id in [1, 3, 10] {
        let ms = pttl(id).await;
        assert!(
            (3_000_000..=3_600_000).contains(&ms),
            "row {id}: PTTL {ms} ms, expected about an hour"
        );
    }
    let ms = pttl(2).await;
    assert!(
        (6_600_000..=7_200_000).contains(&ms),
        "tombstone: PTTL {ms} ms, expected about two hours"
    );
    let row: Option<String> = ::redis::cmd("HGET")
        .arg(format!("{prefix}2"))
        .arg("row")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(row, None, "a deleted row must not be readable");
    assert_eq!(
        nodes.json_rows(prefix).await,
        pg_rows(&client, "items").await
    );
}
