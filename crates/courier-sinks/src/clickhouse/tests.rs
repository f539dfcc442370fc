//! The ClickHouse sink against the real servers started by
//! `dev/clickhouse.sh`: every test runs on 18.16 (`on_18`, or the server at
//! `COURIER_TEST_CLICKHOUSE` when set) and on 26.9 (`on_26`, or
//! `COURIER_TEST_CLICKHOUSE_26`), as two test functions that run in
//! parallel.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use courier_core::{Column, Op, PgType, Relation, Sink, SinkErrorKind, TableId, Value};

use super::readback::ClickHouseReadback;
use super::*;
use crate::compliance::fixtures::{batch, change, table};
use crate::compliance::{run_compliance, Options, Readback};

/// One of the two servers the tests run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    /// Debian's 18.16, the oldest server Courier supports.
    V18,
    /// 26.9, chdb-core's engine.
    V26,
}

impl Server {
    /// The server's HTTP URL; starts it with `dev/clickhouse.sh` unless
    /// its environment variable names one.
    fn url(self) -> String {
        static STARTED: [OnceLock<()>; 2] = [OnceLock::new(), OnceLock::new()];
        let (var, instance, port, slot) = match self {
            Server::V18 => ("COURIER_TEST_CLICKHOUSE", "main", 58123, 0),
            Server::V26 => ("COURIER_TEST_CLICKHOUSE_26", "26", 58124, 1),
        };
        std::env::var(var).unwrap_or_else(|_| {
            STARTED[slot].get_or_init(|| {
                let script =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/clickhouse.sh");
                let status = Command::new(script)
                    .arg("start")
                    .env("COURIER_CLICKHOUSE_INSTANCE", instance)
                    .status()
                    .unwrap_or_else(|e| panic!("run dev/clickhouse.sh: {e}"));
                assert!(
                    status.success(),
                    "COURIER_CLICKHOUSE_INSTANCE={instance} dev/clickhouse.sh start failed"
                );
            });
            format!("http://127.0.0.1:{port}")
        })
    }
}

/// `on_18` and `on_26` test functions running the test `$name(Server)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Server;

            #[tokio::test]
            async fn on_18() {
                super::$name(Server::V18).await
            }

            #[tokio::test]
            async fn on_26() {
                super::$name(Server::V26).await
            }
        }
    )*};
}

on_both!(
    passes_the_compliance_suite,
    passes_the_compliance_suite_with_gzip_inserts,
    follows_added_dropped_and_widened_columns,
    refuses_values_the_column_cannot_hold_without_naming_them,
    a_server_lost_while_running_is_unreachable_not_overloaded,
    reads_back_the_fixture_row,
    stores_floats_dates_and_timestamps_exactly,
    a_retried_insert_is_stored_once_where_the_server_deduplicates,
    exchanges_tables_where_the_database_is_atomic,
);

async fn sink(server: Server, database: &str) -> ClickHouseSink {
    sink_with(server, database, "").await
}

async fn sink_with(server: Server, database: &str, extra: &str) -> ClickHouseSink {
    let text = format!(
        "url = {:?}\ndatabase = {database:?}\n{extra}\n",
        server.url()
    );
    let config: ClickHouseSinkConfig = toml::from_str(&text).unwrap();
    build("test", config)
        .await
        .unwrap_or_else(|e| panic!("build: {e}"))
}

fn readback(server: Server, database: &str) -> ClickHouseReadback {
    ClickHouseReadback::new(&format!("{}/", server.url()), database)
}

async fn passes_the_compliance_suite(server: Server) {
    let mut rb = readback(server, "courier_compliance");
    let opts = Options::default();
    run_compliance(|| sink(server, "courier_compliance"), &mut rb, opts).await;
}

/// Compressed INSERT bodies, as sent to a server that is not on this
/// machine, are accepted and land the same.
async fn passes_the_compliance_suite_with_gzip_inserts(server: Server) {
    let db = "courier_compliance_gzip";
    let mut rb = readback(server, db);
    let opts = Options::default();
    let gzip = "compression = \"gzip\"";
    run_compliance(|| sink_with(server, db, gzip), &mut rb, opts).await;
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

async fn follows_added_dropped_and_widened_columns(server: Server) {
    let db = "courier_sink_test";
    let name = unique("evolve");
    let mut s = sink(server, db).await;
    let rb = readback(server, db);
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

    // qty back to a NOT NULL int4: the table keeps Nullable(Int64), and
    // rows are written in that type.
    let v2b = rel(
        &name,
        vec![
            col("id", PgType::Int4, "integer", true, false),
            col("qty", PgType::Int4, "integer", false, false),
            col("note", PgType::Text, "text", false, true),
        ],
    );
    s.apply(&batch(vec![row_change(
        &v2b,
        Op::Insert,
        vec![Value::Int(9), Value::Int(-7), Value::Text("m".into())],
        25,
    )]))
    .await
    .unwrap();
    let row = rb
        .query(&format!(
            "SELECT id, qty, note FROM {db}.{name}_current WHERE id = 9 FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(row, "9\t-7\tm\n");

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

async fn refuses_values_the_column_cannot_hold_without_naming_them(server: Server) {
    let db = "courier_sink_test";
    let name = unique("reject");
    let mut s = sink(server, db).await;
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

async fn a_server_lost_while_running_is_unreachable_not_overloaded(server: Server) {
    let relay = crate::outage::Relay::start(crate::failure::address(&server.url())).await;
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

async fn reads_back_the_fixture_row(server: Server) {
    let db = "courier_sink_test";
    let rel = table("public", &unique("fixture"));
    let mut s = sink(server, db).await;
    s.apply(&batch(vec![change(
        &rel,
        Op::Insert,
        7,
        "it's\ta \"test\"",
        5,
    )]))
    .await
    .unwrap();
    let mut rb = readback(server, db);
    let got = rb.read_row(&rel, &[Value::Int(7)]).await.unwrap();
    let want = crate::compliance::fixtures::expected_json(
        &rel,
        &crate::compliance::fixtures::row(7, "it's\ta \"test\""),
    );
    assert_eq!(got, want);
}

/// The bits of each float, the days of each date and the microseconds of
/// each timestamp arrive as they were sent: floats at the edges of
/// precision (0.1, 1/3, 2^53 + 1 as a float8, subnormals, the extremes,
/// -0, NaN, infinities) on both servers; dates before 1970 and
/// microseconds where the server has `Date32` and `DateTime64` (26.9).
async fn stores_floats_dates_and_timestamps_exactly(server: Server) {
    let db = "courier_sink_test";
    let name = unique("exact");
    let mut s = sink(server, db).await;
    let modern = s.features().datetime64;
    let rb = readback(server, db);
    let r = rel(
        &name,
        vec![
            col("id", PgType::Int4, "integer", true, false),
            col("f8", PgType::Float8, "double precision", false, true),
            col("f4", PgType::Float4, "real", false, true),
            col("d", PgType::Date, "date", false, true),
            col("ts", PgType::Timestamp, "timestamp", false, true),
        ],
    );
    let floats: Vec<f64> = vec![
        0.1,
        1.0 / 3.0,
        1e-308,
        9_007_199_254_740_993_i64 as f64, // 2^53 + 1, as PostgreSQL's float8 holds it
        1.777_777_777_777_778,
        5e-324,                                // the smallest subnormal
        f64::from_bits(0x000f_ffff_ffff_ffff), // the largest subnormal
        f64::MIN_POSITIVE,
        f64::MAX,
        -f64::MAX,
        -0.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let f4s = [0.1_f32, 1.0 / 3.0, 1e-45, f32::MAX, -0.0];
    let (dates, stamps): (&[&str], &[(&str, &str)]) = if modern {
        (
            &["1900-01-01", "1969-12-31", "1950-06-15", "2024-02-29"],
            &[
                ("1969-12-31T23:59:59.999999", "1969-12-31 23:59:59.999999"),
                ("1900-01-01T00:00:00.000001", "1900-01-01 00:00:00.000001"),
                ("2024-02-29T23:59:59.123456", "2024-02-29 23:59:59.123456"),
                ("1999-12-31T23:59:59.5", "1999-12-31 23:59:59.500000"),
            ],
        )
    } else {
        (
            // 18.16 prints day 0 as 0000-00-00.
            &["1970-01-02", "2024-02-29", "2105-12-31"],
            &[
                ("1970-01-01T00:00:01", "1970-01-01 00:00:01"),
                ("2024-02-29T23:59:59.999999", "2024-02-29 23:59:59"),
            ],
        )
    };
    let changes: Vec<_> = floats
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let d = dates[i % dates.len()];
            let (ts, _) = stamps[i % stamps.len()];
            row_change(
                &r,
                Op::Insert,
                vec![
                    Value::Int(i as i64),
                    Value::Float8(*f),
                    Value::Float4(f4s[i % f4s.len()]),
                    Value::Date(d.into()),
                    Value::Timestamp(ts.into()),
                ],
                10,
            )
        })
        .collect();
    s.apply(&batch(changes)).await.unwrap();
    let body = rb
        .query(&format!(
            "SELECT id, hex(reinterpretAsString(f8)), hex(reinterpretAsString(f4)), toString(d), toString(ts) \
             FROM {db}.{name}_current ORDER BY id FORMAT TabSeparated"
        ))
        .await;
    // reinterpretAsString drops the trailing (most significant) zero bytes.
    let bits = |hex: &str, width: usize| {
        let mut bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        bytes.resize(width, 0);
        bytes
    };
    let rows: Vec<Vec<&str>> = body.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), floats.len(), "{body}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            bits(row[1], 8),
            floats[i].to_le_bytes(),
            "float8 {:e} (row {i}) arrived as other bits",
            floats[i]
        );
        let f4 = f4s[i % f4s.len()];
        assert_eq!(bits(row[2], 4), f4.to_le_bytes(), "float4 {f4:e}");
        assert_eq!(row[3], dates[i % dates.len()], "date of row {i}");
        assert_eq!(row[4], stamps[i % stamps.len()].1, "timestamp of row {i}");
    }
}

/// The same batch applied twice, as after an INSERT whose answer was lost:
/// where the server has deduplication tokens (22.2), the table holds each
/// row once; elsewhere twice, and the current-rows view once.
async fn a_retried_insert_is_stored_once_where_the_server_deduplicates(server: Server) {
    let db = "courier_sink_test";
    let rel = table("public", &unique("retry"));
    let mut s = sink(server, db).await;
    assert_eq!(s.features().dedup_token, server == Server::V26);
    let b = batch(vec![
        change(&rel, Op::Insert, 1, "one", 10),
        change(&rel, Op::Insert, 2, "two", 10),
        change(&rel, Op::Update, 1, "one-b", 11),
    ]);
    s.apply(&b).await.unwrap();
    s.apply(&b).await.unwrap();
    let rb = readback(server, db);
    let stored = rb
        .query(&format!("SELECT count() FROM {db}.{}", rel.id.name))
        .await;
    let current = rb
        .query(&format!("SELECT count() FROM {db}.{}_current", rel.id.name))
        .await;
    let want = if s.features().dedup_token { "2" } else { "4" };
    assert_eq!((stored.trim(), current.trim()), (want, "2"));
}

/// `exchange_tables` swaps two tables in one step where the database is
/// Atomic (26.9), and says what is missing where it is not (18.16).
async fn exchanges_tables_where_the_database_is_atomic(server: Server) {
    let db = "courier_sink_test";
    let (live, shadow) = (unique("live"), unique("shadow"));
    let (live_rel, shadow_rel) = (table("public", &live), table("public", &shadow));
    let mut s = sink(server, db).await;
    s.apply(&batch(vec![
        change(&live_rel, Op::Insert, 1, "old", 10),
        change(&shadow_rel, Op::Insert, 1, "rebuilt", 20),
        change(&shadow_rel, Op::Insert, 2, "rebuilt", 20),
    ]))
    .await
    .unwrap();
    let result = s.exchange_tables(&live, &shadow).await;
    if server == Server::V18 {
        assert!(!s.can_exchange_tables());
        let e = result.expect_err("18.16 has no Atomic databases");
        assert_eq!(e.kind, SinkErrorKind::Config);
        assert!(e.to_string().contains("Atomic"), "{e}");
        return;
    }
    assert!(s.can_exchange_tables());
    result.unwrap();
    let rb = readback(server, db);
    let names =
        |t: &str| format!("SELECT name FROM {db}.{t}_current ORDER BY id FORMAT TabSeparated");
    assert_eq!(rb.query(&names(&live)).await, "rebuilt\nrebuilt\n");
    assert_eq!(rb.query(&names(&shadow)).await, "old\n");
    // Writes go on into the swapped tables.
    s.apply(&batch(vec![change(&live_rel, Op::Insert, 3, "new", 30)]))
        .await
        .unwrap();
    assert_eq!(rb.query(&names(&live)).await, "rebuilt\nrebuilt\nnew\n");
}
