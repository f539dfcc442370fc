//! The ClickHouse sink against the real server started by
//! `dev/clickhouse.sh` (or at `COURIER_TEST_CLICKHOUSE` when set).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use courier_core::{Column, Op, PgType, Relation, Sink, SinkErrorKind, TableId, Value};

use super::readback::ClickHouseReadback;
use super::*;
use crate::compliance::fixtures::{batch, change, table};
use crate::compliance::{run_compliance, Options, Readback};

fn url() -> String {
    static STARTED: OnceLock<()> = OnceLock::new();
    std::env::var("COURIER_TEST_CLICKHOUSE").unwrap_or_else(|_| {
        STARTED.get_or_init(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/clickhouse.sh");
            let status = Command::new(script)
                .arg("start")
                .status()
                .unwrap_or_else(|e| panic!("run dev/clickhouse.sh: {e}"));
            assert!(status.success(), "dev/clickhouse.sh start failed");
        });
        "http://127.0.0.1:58123".to_string()
    })
}

async fn sink(database: &str) -> ClickHouseSink {
    sink_with(database, "").await
}

async fn sink_with(database: &str, extra: &str) -> ClickHouseSink {
    let text = format!("url = {:?}\ndatabase = {database:?}\n{extra}\n", url());
    let config: ClickHouseSinkConfig = toml::from_str(&text).unwrap();
    build("test", config)
        .await
        .unwrap_or_else(|e| panic!("build: {e}"))
}

fn readback(database: &str) -> ClickHouseReadback {
    ClickHouseReadback::new(&format!("{}/", url()), database)
}

#[tokio::test]
async fn passes_the_compliance_suite() {
    let mut rb = readback("courier_compliance");
    run_compliance(|| sink("courier_compliance"), &mut rb, Options::default()).await;
}

/// Compressed INSERT bodies, as sent to a server that is not on this
/// machine, are accepted and land the same.
#[tokio::test]
async fn passes_the_compliance_suite_with_gzip_inserts() {
    let db = "courier_compliance_gzip";
    let mut rb = readback(db);
    let opts = Options::default();
    run_compliance(|| sink_with(db, "compression = \"gzip\""), &mut rb, opts).await;
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}_{:x}", nanos ^ u128::from(std::process::id()))
}

fn col(name: &str, pg_type: PgType, type_name: &str, key: bool, nullable: bool) -> Column {
    Column {
        name: name.into(),
        type_oid: 0,
        type_modifier: -1,
        type_name: type_name.into(),
        pg_type,
        nullable: nullable && !key,
        is_key: key,
    }
}

fn rel(name: &str, columns: Vec<Column>) -> Arc<Relation> {
    Arc::new(Relation {
        oid: 1,
        id: TableId::new("public", name),
        columns,
    })
}

fn row_change(rel: &Arc<Relation>, op: Op, row: Vec<Value>, version: u64) -> courier_core::Change {
    crate::compliance::fixtures::row_change(rel, op, row, version)
}

async fn column_types(rb: &ClickHouseReadback, db: &str, table: &str) -> Vec<(String, String)> {
    let body = rb
        .query(&format!(
            "SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}' FORMAT TabSeparated"
        ))
        .await;
    body.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, t)| (n.to_string(), t.replace("\\'", "'")))
        .collect()
}

#[tokio::test]
async fn follows_added_dropped_and_widened_columns() {
    let db = "courier_sink_test";
    let name = unique("evolve");
    let mut s = sink(db).await;
    let rb = readback(db);
    let v1 = rel(
        &name,
        vec![
            col("id", PgType::Int4, "integer", true, false),
            col("qty", PgType::Int4, "integer", false, false),
            col("gone", PgType::Text, "text", false, false),
        ],
    );
    s.apply(&batch(vec![row_change(
        &v1,
        Op::Insert,
        vec![Value::Int(1), Value::Int(5), Value::Text("x".into())],
        10,
    )]))
    .await
    .unwrap();
    // qty int4 → int8 (and nullable), gone dropped, note added.
    let v2 = rel(
        &name,
        vec![
            col("id", PgType::Int4, "integer", true, false),
            col("qty", PgType::Int8, "bigint", false, true),
            col("note", PgType::Text, "text", false, true),
        ],
    );
    s.apply(&batch(vec![row_change(
        &v2,
        Op::Insert,
        vec![Value::Int(2), Value::Int(1 << 40), Value::Text("n".into())],
        20,
    )]))
    .await
    .unwrap();
    let types = column_types(&rb, db, &name).await;
    let ty = |n: &str| types.iter().find(|(c, _)| c == n).map(|(_, t)| t.clone());
    assert_eq!(ty("qty").as_deref(), Some("Nullable(Int64)"));
    assert_eq!(ty("gone").as_deref(), Some("Nullable(String)"));
    assert_eq!(ty("note").as_deref(), Some("Nullable(String)"));
    let rows = rb
        .query(&format!(
            "SELECT id, qty, gone, note FROM {db}.{name}_current ORDER BY id FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(rows, "1\t5\tx\t\\N\n2\t1099511627776\t\\N\tn\n");

    // text → integer cannot be followed: a fatal error naming both types.
    let v3 = rel(
        &name,
        vec![
            col("id", PgType::Int4, "integer", true, false),
            col("qty", PgType::Int8, "bigint", false, true),
            col("note", PgType::Int4, "integer", false, true),
        ],
    );
    let e = s
        .apply(&batch(vec![row_change(
            &v3,
            Op::Insert,
            vec![Value::Int(3), Value::Int(1), Value::Int(7)],
            30,
        )]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SinkErrorKind::Schema);
    let msg = e.to_string();
    for part in [
        "note",
        "Nullable(String)",
        "Nullable(Int32)",
        "Rebuild",
        &name,
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

#[tokio::test]
async fn refuses_values_the_column_cannot_hold_without_naming_them() {
    let db = "courier_sink_test";
    let name = unique("reject");
    let mut s = sink(db).await;
    let r = rel(
        &name,
        vec![
            col("id", PgType::Int4, "integer", true, false),
            col(
                "price",
                PgType::Numeric {
                    precision: Some(4),
                    scale: Some(2),
                },
                "numeric(4,2)",
                false,
                true,
            ),
        ],
    );
    let e = s
        .apply(&batch(vec![row_change(
            &r,
            Op::Insert,
            vec![Value::Int(1), Value::Numeric("NaN".into())],
            10,
        )]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, SinkErrorKind::Rejected);
    let msg = e.to_string();
    assert!(msg.contains("price") && msg.contains("0/A"), "{msg}");
}

#[tokio::test]
async fn a_server_nobody_listens_on_is_unreachable_at_start() {
    let port = crate::outage::unused_port();
    let text = format!("url = \"http://127.0.0.1:{port}\"\ndatabase = \"x\"\n");
    let config: ClickHouseSinkConfig = toml::from_str(&text).unwrap();
    let e = build("test", config).await.err().expect("nothing listens");
    crate::outage::assert_unreachable_at_start(
        &e,
        &format!("clickhouse at 127.0.0.1:{port} unreachable (connection refused)"),
    );
}

#[tokio::test]
async fn a_server_lost_while_running_is_unreachable_not_overloaded() {
    let relay = crate::outage::Relay::start(crate::failure::address(&url())).await;
    let text = format!(
        "url = \"http://{}\"\ndatabase = \"courier_sink_test\"\n",
        relay.addr
    );
    let mut s = build("test", toml::from_str(&text).unwrap()).await.unwrap();
    let rel = table("public", &unique("lost"));
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "one", 10)]))
        .await
        .unwrap();
    relay.cut().await;
    let e = s
        .apply(&batch(vec![change(&rel, Op::Insert, 2, "two", 20)]))
        .await
        .expect_err("the server is gone");
    assert_eq!(e.kind, SinkErrorKind::Unreachable, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("unreachable") && !text.contains("overload"),
        "{text}"
    );
    assert!(!text.contains("two"), "no row values in messages: {text}");
}

#[tokio::test]
async fn reads_back_the_fixture_row() {
    let db = "courier_sink_test";
    let rel = table("public", &unique("fixture"));
    let mut s = sink(db).await;
    s.apply(&batch(vec![change(
        &rel,
        Op::Insert,
        7,
        "it's\ta \"test\"",
        5,
    )]))
    .await
    .unwrap();
    let mut rb = readback(db);
    let got = rb.read_row(&rel, &[Value::Int(7)]).await.unwrap();
    let want = crate::compliance::fixtures::expected_json(
        &rel,
        &crate::compliance::fixtures::row(7, "it's\ta \"test\""),
    );
    assert_eq!(got, want);
}
