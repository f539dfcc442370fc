//! `source.failover = true`: on PostgreSQL 17 and later the slot is a
//! failover slot (created as one, or an existing slot made one); earlier
//! versions refuse the setting, naming the version it needs. Runs against
//! whichever cluster `COURIER_TEST_PG` names (`dev/pg-matrix.sh` runs it
//! on every version).

mod support;

use std::time::Duration;

use support::fold::fold_file;
use support::load::{create_table, pg_rows};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(120);

async fn slot_failover(client: &tokio_postgres::Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_slot_on_17_and_later_and_a_clear_refusal_before() {
    let db = "e2e_failover";
    let client = fresh_db(db).await;
    create_table(&client, "items", 200).await;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let dir = scratch("failover");
    let with_failover = file_config(db, "failover", &["public.items"], &dir, "failover = true");

    if version < 170_000 {
        let path = dir.join("courier.toml");
        std::fs::write(&path, &with_failover).unwrap();
        let (code, out, err) = courier_cmd(&["run", "--config", path.to_str().unwrap()]);
        let out = format!("{out}{err}");
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("source.failover = true needs PostgreSQL 17 or later")
                && out.contains("remove source.failover"),
            "{out}"
        );
        drop_db(db).await;
        return;
    }

    // A slot created without failover is made one at the next start.
    let plain = file_config(db, "failover", &["public.items"], &dir, "");
    let mut courier = CourierProc::start(&dir, &plain);
    wait_caught_up(&client, "failover", CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    assert!(!slot_failover(&client, "failover").await);

    let mut courier = CourierProc::start(&dir, &with_failover);
    client
        .batch_execute(
            "UPDATE items SET val = val + 1 WHERE id <= 50; DELETE FROM items WHERE id > 190",
        )
        .await
        .unwrap();
    wait_caught_up(&client, "failover", CATCH_UP).await;
    assert!(
        slot_failover(&client, "failover").await,
        "log:\n{}",
        courier.log()
    );
    assert!(courier
        .log()
        .contains("made the replication slot a failover slot"));
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    let got = fold_file(&dir.join("out.jsonl"))
        .get("public.items")
        .cloned()
        .unwrap_or_default();
    assert_eq!(got, pg_rows(&client, "items").await);

    // A new slot is created as a failover slot.
    drop_db(db).await;
    let client = fresh_db(db).await;
    create_table(&client, "items", 100).await;
    let dir = scratch("failover_new");
    let config = file_config(db, "failover", &["public.items"], &dir, "failover = true");
    let mut courier = CourierProc::start(&dir, &config);
    wait_caught_up(&client, "failover", CATCH_UP).await;
    assert!(
        slot_failover(&client, "failover").await,
        "log:\n{}",
        courier.log()
    );
    assert!(courier.stop().success(), "log:\n{}", courier.log());
    let got = fold_file(&dir.join("out.jsonl"))
        .get("public.items")
        .cloned()
        .unwrap_or_default();
    assert_eq!(got, pg_rows(&client, "items").await);
    drop_db(db).await;
}
