//! Generated columns: a snapshot's rows have exactly the columns the
//! stream's rows have. By default the publication publishes no generated
//! column, so neither carries one; with `source.generated_columns = true`
//! (PostgreSQL 18+, refused before naming the version) the publication
//! publishes stored generated columns (`publish_generated_columns =
//! stored`, set on an existing publication too) and both carry them, with
//! the values PostgreSQL computed; a virtual generated column (18's
//! default kind) is never published, so neither carries it. Runs against
//! whichever cluster `COURIER_TEST_PG` names (`dev/pg-matrix.sh` runs it on
//! every version).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio_postgres::Client;

const CATCH_UP: Duration = Duration::from_secs(120);

async fn server_version(client: &Client) -> i32 {
    client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0)
}

/// `gen` with a stored generated column (and, on 18, a virtual one) and
/// ten rows for the snapshot.
async fn create_gen(client: &Client, version: i32) {
    let virtual_column = if version >= 180_000 {
        ", tripled int GENERATED ALWAYS AS (a * 3) VIRTUAL"
    } else {
        ""
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE gen (id int PRIMARY KEY, a int NOT NULL, note text, \
             doubled int GENERATED ALWAYS AS (a * 2) STORED{virtual_column});
             INSERT INTO gen (id, a, note) SELECT g, g, 'before' FROM generate_series(1, 10) g;"
        ))
        .await
        .unwrap();
}

/// Inserts and updates committed while Courier streams.
async fn write_stream(client: &Client) {
    client
        .batch_execute(
            "INSERT INTO gen (id, a, note) SELECT g, g, 'streamed' FROM generate_series(11, 20) g;
             UPDATE gen SET a = a + 100 WHERE id IN (1, 15);",
        )
        .await
        .unwrap();
}

/// The file sink's lines: (op, the `after` row) for every change to `gen`.
fn changes(out: &Path) -> Vec<(String, serde_json::Map<String, Value>)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["source"]["table"] == "gen")
        .filter_map(|v| {
            let after = v["after"].as_object()?.clone();
            Some((v["op"].as_str().unwrap().to_string(), after))
        })
        .collect()
}

/// Runs Courier over a snapshot and a stream of `gen`; checks that every
/// snapshot row and every streamed row has the columns `expected`, and
/// that a carried `doubled` is what PostgreSQL computed.
async fn snapshot_and_stream(
    client: &Client,
    db: &str,
    slot: &str,
    extra: &str,
    expected: &[&str],
) {
    let dir = scratch(slot);
    let mut courier =
        CourierProc::start(&dir, &file_config(db, slot, &["public.gen"], &dir, extra));
    wait_caught_up(client, slot, CATCH_UP).await;
    write_stream(client).await;
    wait_caught_up(client, slot, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    let changes = changes(&dir.join("out.jsonl"));
    let ops: BTreeSet<&str> = changes.iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(
        ops,
        BTreeSet::from(["c", "r", "u"]),
        "snapshot reads, inserts and updates"
    );
    for (op, after) in &changes {
        let columns: BTreeSet<&str> = after.keys().map(String::as_str).collect();
        assert_eq!(
            columns, expected,
            "the columns of a change with op {op} (snapshot: r; stream: c, u)"
        );
        if let Some(doubled) = after.get("doubled") {
            assert_eq!(
                doubled.as_i64(),
                after["a"].as_i64().map(|a| a * 2),
                "the stored generated value, op {op}"
            );
        }
    }
    let rows = changes.iter().filter(|(op, _)| op == "r").count();
    assert_eq!(rows, 10, "every row before the start is a snapshot read");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_option_neither_snapshot_nor_stream_carries_generated_columns() {
    let db = "e2e_gen_off";
    let client = fresh_db(db).await;
    let version = server_version(&client).await;
    create_gen(&client, version).await;
    snapshot_and_stream(&client, db, "gen_off", "", &["id", "a", "note"]).await;
    drop_db(db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_columns_true_carries_stored_ones_in_snapshot_and_stream_on_18() {
    let db = "e2e_gen_on";
    let slot = "gen_on";
    let client = fresh_db(db).await;
    let version = server_version(&client).await;
    create_gen(&client, version).await;
    let extra = "generated_columns = true";

    if version < 180_000 {
        let dir = scratch(slot);
        let path = dir.join("courier.toml");
        std::fs::write(&path, file_config(db, slot, &["public.gen"], &dir, extra)).unwrap();
        let (code, out, err) = courier_cmd(&["run", "--config", path.to_str().unwrap()]);
        let out = format!("{out}{err}");
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("source.generated_columns = true needs PostgreSQL 18 or later")
                && out.contains(&version.to_string()),
            "{out}"
        );
        drop_db(db).await;
        return;
    }

    // A publication that exists without the option gets it.
    client
        .batch_execute(&format!("CREATE PUBLICATION {slot} FOR TABLE gen"))
        .await
        .unwrap();
    snapshot_and_stream(&client, db, slot, extra, &["id", "a", "note", "doubled"]).await;
    let published: String = client
        .query_one(
            "SELECT pubgencols::text FROM pg_publication WHERE pubname = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        published, "s",
        "the publication publishes stored generated columns"
    );
    drop_db(db).await;
}
