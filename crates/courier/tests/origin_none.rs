//! `source.origin = "none"`: on PostgreSQL 16 and later, changes that
//! replication applied (made in a session with a replication origin) are
//! left out and local ones streamed; earlier versions refuse the setting,
//! naming the version it needs. Runs against whichever cluster
//! `COURIER_TEST_PG` names (`dev/pg-matrix.sh` runs it on every version).

mod support;

use std::time::Duration;

use support::fold::fold_file;
use support::load::create_table;
use support::*;

const CATCH_UP: Duration = Duration::from_secs(120);
const ORIGIN: &str = "e2e_origin_peer";

#[tokio::test(flavor = "multi_thread")]
async fn origin_none_leaves_out_replicated_changes_on_16_and_later() {
    let db = "e2e_origin";
    let client = fresh_db(db).await;
    create_table(&client, "items", 10).await;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let dir = scratch("origin");
    let config = file_config(db, "origin", &["public.items"], &dir, "origin = \"none\"");

    if version < 160_000 {
        let path = dir.join("courier.toml");
        std::fs::write(&path, &config).unwrap();
        let (code, out, err) = courier_cmd(&["run", "--config", path.to_str().unwrap()]);
        let out = format!("{out}{err}");
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("source.origin = \"none\" needs PostgreSQL 16 or later"),
            "{out}"
        );
        drop_db(db).await;
        return;
    }

    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, "origin", CATCH_UP).await;
    // A session that applies changes as replication would: with an origin.
    let peer = connect(db).await;
    peer.batch_execute(&format!(
        "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = '{ORIGIN}';
         SELECT pg_replication_origin_create('{ORIGIN}');
         SELECT pg_replication_origin_session_setup('{ORIGIN}');
         INSERT INTO items VALUES (1001, 1, 'replicated', 1.5);
         UPDATE items SET note = 'replicated' WHERE id = 1;"
    ))
    .await
    .unwrap();
    client
        .batch_execute("INSERT INTO items VALUES (1002, 2, 'local', 2.5); UPDATE items SET note = 'local' WHERE id = 2")
        .await
        .unwrap();
    wait_caught_up(&client, "origin", CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    peer.batch_execute(&format!(
        "SELECT pg_replication_origin_session_reset(); SELECT pg_replication_origin_drop('{ORIGIN}')"
    ))
    .await
    .unwrap();

    let got = fold_file(&dir.join("out.jsonl"))
        .get("public.items")
        .cloned()
        .unwrap_or_default();
    assert!(got.contains_key("1002"), "the local insert is missing");
    assert_eq!(got["2"]["note"], "local");
    assert!(
        !got.contains_key("1001"),
        "a replicated insert was streamed"
    );
    assert_ne!(
        got["1"]["note"], "replicated",
        "a replicated update was streamed"
    );
    drop_db(db).await;
}
