//! End to end: `courier rebuild` against real PostgreSQL, Redis and
//! OpenSearch while Courier streams, writers keep committing and a reader
//! keeps reading.

mod support;

use std::time::Duration;

use ::redis::AsyncCommands;
use reqwest::Method;
use serde_json::Value;
use support::load::{create_table, pg_rows, Load};
use support::redis::{clear, standalone_url, RedisNodes};
use support::search::{assert_same_documents, call, documents, SearchNode};
use support::verify::courier_verify as verify;
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

/// `courier rebuild --sink sink` (and `extra` arguments) while `load`
/// commits and a reader counts the table's rows with `count` every 50 ms:
/// no count may fall below the count before the rebuild by more than
/// `slack` plus the writers' transactions since (each deletes at most one
/// row). Returns the rebuild's JSON report and how often the reader read.
async fn rebuild_while_reading<F, Fut>(
    config: &std::path::Path,
    sink: &str,
    extra: &[&str],
    load: &std::sync::Arc<Load>,
    slack: usize,
    count: F,
) -> (Value, usize)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = usize> + Send,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    let before = count().await;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, load) = (stop.clone(), load.clone());
        tokio::spawn(async move {
            let start = load.committed();
            let mut polls = 0;
            while !stop.load(Ordering::Relaxed) {
                let seen = count().await;
                let floor = before.saturating_sub(slack + (load.committed() - start) as usize);
                assert!(
                    seen >= floor,
                    "a reader counted {seen} rows during the rebuild, fewer than {floor}"
                );
                polls += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            polls
        })
    };
    let args: Vec<String> = [
        "rebuild",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        sink,
        "--format",
        "json",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        courier_cmd(&args)
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let polls = reader.await.expect("the reader failed");
    assert_eq!(code, 0, "courier rebuild: {out}\n{err}");
    let report = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    (report, polls)
}

/// `courier rebuild` of a cache someone damaged by hand (keys deleted,
/// rows altered, stray rows added), while writers commit and a reader
/// counts the rows every 50 ms: the reader never sees the cache shrink
/// below what writers' deletes explain, and afterwards the cache equals
/// PostgreSQL.
#[tokio::test(flavor = "multi_thread")]
async fn rebuild_reprints_a_damaged_cache_in_place_while_it_serves() {
    let db = "e2e_rebuild";
    let prefix = "rbd:";
    let client = fresh_db(db).await;
    create_table(&client, "items", 5000).await;
    let cache = RedisNodes::connect(&standalone_url(14), false).await;
    clear(&cache, prefix).await;
    let dir = scratch(db);
    let sink = format!(
        "type = \"redis\"\nurl = {:?}\nkey = \"{prefix}{{pk}}\"\n",
        standalone_url(14)
    );
    let config = sink_config(db, db, &["public.items"], &dir, "cache", &sink);
    let courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;

    let mut r = cache.first();
    for id in 1..=1000 {
        let _: () = r.del(format!("{prefix}{id}")).await.unwrap();
    }
    for id in 2001..=2010 {
        let _: () = r
            .hset(
                format!("{prefix}{id}"),
                "row",
                format!(r#"{{"id":{id},"val":-1,"note":"wrong","amount":"0.00"}}"#),
            )
            .await
            .unwrap();
    }
    for id in 90_001..=90_005 {
        let _: () = r
            .hset_multiple(
                format!("{prefix}{id}"),
                &[
                    ("_courier_version", "1".to_string()),
                    (
                        "row",
                        format!(r#"{{"id":{id},"val":1,"note":"stray","amount":null}}"#),
                    ),
                ],
            )
            .await
            .unwrap();
    }

    let load = std::sync::Arc::new(Load::start(db, "items", 2));
    load.commit_more(100, CATCH_UP).await;
    let reader_cache = std::sync::Arc::new(RedisNodes::connect(&standalone_url(14), false).await);
    let count = move || {
        let c = reader_cache.clone();
        async move { c.json_rows(prefix).await.len() }
    };
    // The rebuild removes the 5 stray rows and rows deleted before its snapshot.
    let (report, polls) =
        rebuild_while_reading(&courier.config, "cache", &[], &load, 5 + 20, count).await;
    let t = &report["tables"][0];
    assert!(t["written"].as_u64().unwrap() >= 4000, "{report}");
    assert!(t["removed"].as_u64().unwrap() >= 5, "{report}");
    assert!(polls > 0, "the reader never read during the rebuild");
    let load = std::sync::Arc::try_unwrap(load)
        .ok()
        .expect("the reader holds the load");
    load.stop().await;

    wait_caught_up(&client, db, CATCH_UP).await;
    let expected = pg_rows(&client, "items").await;
    let got = cache.json_rows(prefix).await;
    let missing: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    let differing: Vec<&String> = expected
        .keys()
        .filter(|k| got.get(*k).is_some_and(|g| g != &expected[*k]))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "after the rebuild: {} missing (e.g. {:?}), {} extra (e.g. {:?}), {} differing (e.g. {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        differing.len(),
        differing.first()
    );

    // Verify agrees.
    let (code, reports, err) = verify(&dir, &[]);
    assert_eq!(code, 0, "verify after the rebuild: {reports:?}\n{err}");

    // What rebuild cannot do, it says.
    let (code, _, err) = courier_cmd(&[
        "rebuild",
        "--config",
        courier.config.to_str().unwrap(),
        "--sink",
        "nope",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no sink \"nope\""), "{err}");
    drop(courier);
}

/// `courier rebuild` of a search index someone damaged by hand, while
/// writers commit and a reader counts documents every 50 ms: the alias
/// moves to a new index filled from a snapshot and by the running sink,
/// readers never see it shrink below what writers' deletes explain nor
/// fail, and afterwards the alias holds exactly PostgreSQL's rows and the
/// old index is gone.
#[tokio::test(flavor = "multi_thread")]
async fn rebuild_moves_a_search_alias_to_a_new_index_while_it_serves() {
    let Some(node) = SearchNode::selected("opensearch", 2) else {
        return;
    };
    let search = node.url();
    let db = "e2e_rebuild_search";
    const ALIAS: &str = "e2e_rbs_items";
    let alias = ALIAS;
    let client = fresh_db(db).await;
    create_table(&client, "items", 3000).await;
    call(&search, Method::DELETE, &format!("/{alias}*"), None).await;
    let dir = scratch(db);
    let sink = format!("type = \"opensearch\"\nurl = {search:?}\nindex = \"e2e_rbs_{{table}}\"\n");
    let config = sink_config(db, db, &["public.items"], &dir, "search", &sink);
    let courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, db, CATCH_UP).await;
    for id in 1..=100 {
        call(
            &search,
            Method::DELETE,
            &format!("/{alias}/_doc/{id}"),
            None,
        )
        .await;
    }

    let load = std::sync::Arc::new(Load::start(db, "items", 2));
    load.commit_more(100, CATCH_UP).await;
    let count = {
        let search = search.clone();
        move || {
            let search = search.clone();
            async move {
                let (status, body) =
                    call(&search, Method::GET, &format!("/{ALIAS}/_count"), None).await;
                assert_eq!(
                    status, 200,
                    "a reader's count failed during the rebuild: {body}"
                );
                body["count"].as_u64().unwrap() as usize
            }
        }
    };
    let (report, polls) = rebuild_while_reading(
        &courier.config,
        "search",
        &["--grace", "1s"],
        &load,
        20,
        count,
    )
    .await;
    assert!(
        polls > 10,
        "the reader read only {polls} times during the rebuild"
    );
    assert_eq!(report["tables"][0]["index"], "e2e_rbs_items_v2", "{report}");
    let load = std::sync::Arc::try_unwrap(load)
        .ok()
        .expect("the reader holds the load");
    let committed = load.stop().await;
    assert!(committed > 100);

    wait_caught_up(&client, db, CATCH_UP).await;
    let expected = pg_rows(&client, "items").await;
    assert_same_documents(
        &expected,
        &documents(&search, alias).await,
        "after the rebuild",
    );
    let (status, _) = call(&search, Method::GET, "/e2e_rbs_items_v1", None).await;
    assert_eq!(status, 404, "the old index is still there");
    let (status, _) = call(
        &search,
        Method::GET,
        "/_alias/e2e_rbs_items-courier-rebuild",
        None,
    )
    .await;
    assert_eq!(status, 404, "the rebuild's marker is still there");
    assert!(
        courier.log().contains("writing to it too"),
        "the running sink never wrote to the new index:\n{}",
        courier.log()
    );
    drop(courier);
}

/// A search rebuild killed with -9 half way: readers keep the old index,
/// and the next rebuild removes what the first left and completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_search_rebuild_killed_half_way_is_cleaned_up_by_the_next() {
    let Some(node) = SearchNode::selected("opensearch", 2) else {
        return;
    };
    let search = node.url();
    let db = "e2e_rebuild_kill";
    let alias = "e2e_rbk_items";
    let client = fresh_db(db).await;
    create_table(&client, "items", 60_000).await;
    call(&search, Method::DELETE, &format!("/{alias}*"), None).await;
    let dir = scratch(db);
    let sink = format!("type = \"opensearch\"\nurl = {search:?}\nindex = \"e2e_rbk_{{table}}\"\n");
    let courier = CourierProc::start(
        &dir,
        &sink_config(db, db, &["public.items"], &dir, "search", &sink),
    );
    wait_caught_up(&client, db, CATCH_UP).await;

    let log = dir.join("rebuild.log");
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args([
            "rebuild",
            "--config",
            courier.config.to_str().unwrap(),
            "--sink",
            "search",
            "--grace",
            "1s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until(
        "the first rebuild to start copying",
        Duration::from_secs(60),
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("rebuild started")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let (status, _) = call(
        &search,
        Method::GET,
        &format!("/_alias/{alias}-courier-rebuild"),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the killed rebuild finished before it was killed; make the table bigger"
    );
    let (_, count) = call(&search, Method::GET, &format!("/{alias}/_count"), None).await;
    assert_eq!(
        count["count"], 60_000,
        "readers lost rows to a killed rebuild"
    );

    let (code, out, err) = tokio::task::spawn_blocking({
        let config = courier.config.to_str().unwrap().to_string();
        move || {
            courier_cmd(&[
                "rebuild", "--config", &config, "--sink", "search", "--grace", "1s", "--format",
                "json",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the second rebuild: {out}\n{err}");
    assert!(err.contains("interrupted rebuild left"), "{err}");
    let (_, indexes) = call(
        &search,
        Method::GET,
        &format!("/_cat/indices/{alias}*?format=json"),
        None,
    )
    .await;
    let names: Vec<&str> = indexes
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["e2e_rbk_items_v2"], "indexes left behind");
    let (status, _) = call(
        &search,
        Method::GET,
        &format!("/_alias/{alias}-courier-rebuild"),
        None,
    )
    .await;
    assert_eq!(status, 404, "the marker is still there");
    let expected = pg_rows(&client, "items").await;
    assert_same_documents(
        &expected,
        &documents(&search, alias).await,
        "after the second rebuild",
    );
    drop(courier);
}
