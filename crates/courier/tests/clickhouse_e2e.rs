//! End to end: PostgreSQL → courier → ClickHouse, against the real servers
//! started by the `dev/` scripts (`dev/clickhouse.sh`: 18.16 on 58123 and,
//! with `COURIER_CLICKHOUSE_INSTANCE=26`, 26.9 on 58124).
//!
//! Every test runs on both servers, as two test functions (`on_18`,
//! `on_26`) that run in parallel. Each has its own PostgreSQL database and
//! slot (`e2e_ch_*` on 18.16, `e2e_ch26_*` on 26.9) and its own ClickHouse
//! database (`courier_e2e_*`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use support::load::{create_table, pg_rows};
use support::*;

const CATCH_UP: Duration = Duration::from_secs(180);

/// One of the two ClickHouse servers the tests run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    /// Debian's 18.16: no Date32, DateTime64, `_deleted` engine parameter
    /// or deduplication tokens.
    V18,
    /// 26.9 (chdb-core's engine), with all of them.
    V26,
}

impl Server {
    /// The server's HTTP URL, once `dev/clickhouse.sh start` ran for it.
    fn url(self) -> &'static str {
        static STARTED: [OnceLock<()>; 2] = [OnceLock::new(), OnceLock::new()];
        let (instance, url, slot) = match self {
            Server::V18 => ("main", "http://127.0.0.1:58123/", 0),
            Server::V26 => ("26", "http://127.0.0.1:58124/", 1),
        };
        STARTED[slot].get_or_init(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/clickhouse.sh");
            let status = Command::new(script)
                .arg("start")
                .env("COURIER_CLICKHOUSE_INSTANCE", instance)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "COURIER_CLICKHOUSE_INSTANCE={instance} dev/clickhouse.sh start failed"
            );
        });
        url
    }

    /// The PostgreSQL database (and slot) of a test: `e2e_ch_<name>` on
    /// 18.16, `e2e_ch26_<name>` on 26.9.
    fn pg_db(self, name: &str) -> &'static str {
        let prefix = match self {
            Server::V18 => "e2e_ch_",
            Server::V26 => "e2e_ch26_",
        };
        Box::leak(format!("{prefix}{name}").into_boxed_str())
    }
}

/// `on_18` and `on_26` test functions running the test `$name(Server)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Server;

            #[tokio::test(flavor = "multi_thread")]
            async fn on_18() {
                super::$name(Server::V18).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn on_26() {
                super::$name(Server::V26).await
            }
        }
    )*};
}

on_both!(
    kill_9_under_load,
    types_land_with_the_documented_clickhouse_types,
    values_at_the_edges_arrive_exactly,
    schema_changes_mid_stream,
);

/// Runs a query; the body (JSONEachRow for SELECTs that ask for it).
async fn ch(server: Server, sql: &str) -> String {
    let resp = reqwest::Client::new()
        .post(server.url())
        .query(&[("output_format_json_quote_64bit_integers", "0")])
        .body(sql.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "clickhouse: {sql}: {text}");
    text
}

async fn ch_json(server: Server, sql: &str) -> Vec<Value> {
    ch(server, &format!("{sql} FORMAT JSONEachRow"))
        .await
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A config with one ClickHouse sink `analytics` writing into `database`.
fn config(server: Server, db: &str, tables: &[&str], dir: &Path, database: &str) -> String {
    let sink = format!(
        "type = \"clickhouse\"\nurl = \"{}\"\ndatabase = \"{database}\"",
        server.url().trim_end_matches('/')
    );
    sink_config(db, db, tables, dir, "analytics", &sink)
}

async fn fresh_ch(server: Server, database: &str) {
    ch(server, &format!("DROP DATABASE IF EXISTS {database}")).await;
}

/// A decimal column as text with its scale (18.16's toString keeps trailing
/// zeros, later servers' drops them).
fn decimal_text(server: Server, column: &str, scale: u8) -> String {
    match server {
        Server::V18 => format!("toString({column})"),
        Server::V26 => format!("toDecimalString({column}, {scale})"),
    }
}

/// The current-rows view of `items`, in the load's JSON shape.
async fn ch_items(server: Server, database: &str) -> BTreeMap<String, Value> {
    ch_json(
        server,
        &format!(
            "SELECT id, val, note, {} AS amount, isNull(amount) AS amount_null FROM {database}.items_current",
            decimal_text(server, "amount", 2)
        ),
    )
    .await
    .into_iter()
    .map(|mut r| {
        let null = r["amount_null"] == json!(1);
        let obj = r.as_object_mut().unwrap();
        obj.remove("amount_null");
        if null {
            obj.insert("amount".into(), Value::Null);
        }
        (r["id"].to_string(), r)
    })
    .collect()
}

/// Snapshot, then a concurrent write load with five kill -9 restarts of
/// Courier (two during the snapshot, three while streaming): once caught
/// up, the current-rows view equals the PostgreSQL table row for row.
async fn kill_9_under_load(server: Server) {
    let db = server.pg_db("kill9");
    let database = "courier_e2e_kill9";
    let client = fresh_db(db).await;
    fresh_ch(server, database).await;
    create_table(&client, "items", 20_000).await;
    let dir = scratch(db);
    support::chaos::kill_9_under_load(
        &client,
        db,
        &dir,
        &config(server, db, &["public.items"], &dir, database),
        5,
        150,
        CATCH_UP,
    )
    .await;

    let expected = pg_rows(&client, "items").await;
    let got = ch_items(server, database).await;
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "rows missing from / resurrected in ClickHouse"
    );
    let differing: Vec<&String> = expected
        .keys()
        .filter(|k| got[*k] != expected[*k])
        .collect();
    assert!(
        differing.is_empty(),
        "{} rows differ, e.g. id {}: clickhouse {} vs postgres {}",
        differing.len(),
        differing[0],
        got[differing[0]],
        expected[differing[0]]
    );
    // Deletes are rows with _deleted = 1 beside the live ones (without
    // FINAL: with the `_deleted` engine parameter, 26.9's FINAL hides them).
    let deleted = ch(
        server,
        &format!("SELECT count() FROM {database}.items WHERE _deleted = 1"),
    )
    .await;
    assert!(deleted.trim().parse::<u64>().unwrap() > 0, "no tombstones");
    drop_db(db).await;
}

/// The types table lands with the documented ClickHouse types (18.16: no
/// DateTime64 or Date32), and its rows read back per the mapping.
async fn types_land_with_the_documented_clickhouse_types(server: Server) {
    let db = server.pg_db("types");
    let database = "courier_e2e_types";
    let client = fresh_db(db).await;
    fresh_ch(server, database).await;
    client
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE TABLE every_type (
               id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
               np numeric(12,3), t text, by bytea, u uuid, d date, tm time, ts timestamp, tstz timestamptz,
               iv interval, j json, jb jsonb, m mood, ia int[], ta text[], inet_c inet, nn int NOT NULL);
             INSERT INTO every_type VALUES (1, true, -32768, 2147483647, 9223372036854775807, 1.5, 'NaN',
               '12345678901234567890.123456789', -1.5, E'tab\\t \"q\" \\\\ é', '\\xdeadbeef',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '13:45:06', '2024-02-29 23:59:59.75',
               '2024-02-29 23:59:59+05:30', '1 day', '{\"a\": 1}', '{\"b\": [true]}', 'happy', '{1,NULL,3}',
               '{\"a,b\",NULL}', '10.0.0.1', 7);
             INSERT INTO every_type (id, nn) VALUES (2, 0);",
        )
        .await
        .unwrap();
    let new = server == Server::V26;
    let dir = scratch(db);
    let mut courier = CourierProc::start(
        &dir,
        &config(server, db, &["public.every_type"], &dir, database),
    );
    wait_caught_up(&client, db, CATCH_UP).await;
    client
        .batch_execute("INSERT INTO every_type (id, d, ts, tstz, nn) VALUES (3, 'infinity', '-infinity', 'infinity', 3)")
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let types: BTreeMap<String, String> = ch_json(
        server,
        &format!(
            "SELECT name, type FROM system.columns WHERE database = '{database}' AND table = 'every_type'"
        ),
    )
    .await
    .into_iter()
    .map(|r| (r["name"].as_str().unwrap().to_string(), r["type"].as_str().unwrap().to_string()))
    .collect();
    let want = [
        ("id", "Int32"),
        ("b", "Nullable(UInt8)"),
        ("i2", "Nullable(Int16)"),
        ("i4", "Nullable(Int32)"),
        ("i8", "Nullable(Int64)"),
        ("f4", "Nullable(Float32)"),
        ("f8", "Nullable(Float64)"),
        ("n", "Nullable(String)"),
        ("np", "Nullable(Decimal(12, 3))"),
        ("t", "Nullable(String)"),
        ("by", "Nullable(String)"),
        ("u", "Nullable(UUID)"),
        (
            "d",
            if new {
                "Nullable(Date32)"
            } else {
                "Nullable(Date)"
            },
        ),
        ("tm", "Nullable(String)"),
        (
            "ts",
            if new {
                "Nullable(DateTime64(6, 'UTC'))"
            } else {
                "Nullable(DateTime('UTC'))"
            },
        ),
        (
            "tstz",
            if new {
                "Nullable(DateTime64(6, 'UTC'))"
            } else {
                "Nullable(DateTime('UTC'))"
            },
        ),
        ("iv", "Nullable(String)"),
        ("j", "Nullable(String)"),
        ("jb", "Nullable(String)"),
        ("m", "Nullable(String)"),
        ("ia", "Array(Nullable(Int32))"),
        ("ta", "Array(Nullable(String))"),
        ("inet_c", "Nullable(String)"),
        ("nn", "Int32"),
        ("_version", "UInt64"),
        ("_deleted", "UInt8"),
        ("_synced_at", "DateTime('UTC')"),
    ];
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(types, want);

    let rows = ch_json(
        server,
        &format!(
            "SELECT id, b, i8, f8, n, {} AS np, t, hex(by) AS by, u, toString(d) AS d, tm, toString(ts) AS ts, \
             toString(tstz) AS tstz, iv, j, jb, m, ia, ta, inet_c FROM {database}.every_type_current ORDER BY id",
            decimal_text(server, "np", 3)
        ),
    )
    .await;
    // 26.9 keeps microseconds, 18.16 whole seconds.
    let (ts, tstz) = if new {
        ("2024-02-29 23:59:59.750000", "2024-02-29 18:29:59.000000")
    } else {
        ("2024-02-29 23:59:59", "2024-02-29 18:29:59")
    };
    assert_eq!(
        rows[0],
        json!({"id": 1, "b": 1, "i8": 9223372036854775807i64, "f8": null, "n": "12345678901234567890.123456789",
               "np": "-1.500", "t": "tab\t \"q\" \\ é", "by": "DEADBEEF", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
               "d": "2024-02-29", "tm": "13:45:06", "ts": ts, "tstz": tstz,
               "iv": "P1D", "j": "{\"a\": 1}", "jb": "{\"b\": [true]}", "m": "happy", "ia": [1, null, 3],
               "ta": ["a,b", null], "inet_c": "10.0.0.1"})
    );
    assert_eq!(rows[1]["ia"], json!([]), "a NULL array is stored empty");
    assert_eq!(rows[1]["t"], Value::Null);
    let ends = if new {
        (
            "2299-12-31",
            "1900-01-01 00:00:00.000000",
            "2299-12-31 23:59:59.999999",
        )
    } else {
        ("2105-12-31", "0000-00-00 00:00:00", "2105-12-31 23:59:59")
    };
    assert_eq!(
        (&rows[2]["d"], &rows[2]["ts"], &rows[2]["tstz"]),
        (&json!(ends.0), &json!(ends.1), &json!(ends.2)),
        "infinities become the ends of the range (18.16 prints DateTime 0 as zeros)"
    );
    let engine = ch(
        server,
        &format!("SELECT engine_full FROM system.tables WHERE database = '{database}' AND name = 'every_type'"),
    )
    .await;
    let want = if new {
        "ReplacingMergeTree(_version, _deleted)"
    } else {
        "ReplacingMergeTree(_version)"
    };
    assert!(engine.starts_with(want), "engine {engine}");
    drop_db(db).await;
}

/// Floats at the edges of precision (0.1, 1/3, 1e-308, 2^53 + 1 as a
/// float8, subnormals, the extremes, -0, NaN, infinities) and, on 26.9,
/// dates before 1970 and timestamps with microseconds, read by the
/// snapshot and then streamed, arrive exactly: the bits, days and
/// microseconds PostgreSQL holds.
async fn values_at_the_edges_arrive_exactly(server: Server) {
    let db = server.pg_db("edges");
    let database = "courier_e2e_edges";
    let client = fresh_db(db).await;
    fresh_ch(server, database).await;
    let new = server == Server::V26;
    let floats = [
        "0.1",
        "1/3.0",
        "1e-308",
        "'9007199254740993'",
        "1.777777777777778",
        "'5e-324'",
        "'2.2250738585072009e-308'",
        "'2.2250738585072014e-308'",
        "'1.7976931348623157e308'",
        "'-0'",
        "'NaN'",
        "'Infinity'",
        "'-Infinity'",
    ];
    let f4s = ["0.1", "1/3.0", "'1e-45'", "'3.4028235e38'", "'-0'"];
    let (dates, stamps): (&[&str], &[&str]) = if new {
        (
            &["1900-01-01", "1969-12-31", "1950-06-15", "2024-02-29"],
            &[
                "1969-12-31 23:59:59.999999",
                "1900-01-01 00:00:00.000001",
                "2024-02-29 23:59:59.123456",
                "1999-12-31 23:59:59.5",
            ],
        )
    } else {
        // 18.16: Date and DateTime from 1970 (it prints day 0 as zeros),
        // whole seconds.
        (
            &["1970-01-02", "2024-02-29", "2105-12-31"],
            &["1970-01-01 00:00:01", "2024-02-29 23:59:59.999999"],
        )
    };
    let insert = |first: usize| {
        let rows: Vec<String> = floats
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let (d, ts) = (dates[i % dates.len()], stamps[i % stamps.len()]);
                format!(
                    "({}, ({f})::float8, ({})::float4, '{d}', '{ts}', '{ts}+00')",
                    first + i,
                    f4s[i % f4s.len()]
                )
            })
            .collect();
        format!("INSERT INTO edges VALUES {}", rows.join(", "))
    };
    client
        .batch_execute(&format!(
            "CREATE TABLE edges (id int PRIMARY KEY, f8 float8, f4 float4, d date, ts timestamp, tstz timestamptz);
             {};",
            insert(0)
        ))
        .await
        .unwrap();
    let dir = scratch(db);
    let mut courier =
        CourierProc::start(&dir, &config(server, db, &["public.edges"], &dir, database));
    wait_caught_up(&client, db, CATCH_UP).await;
    client.batch_execute(&insert(100)).await.unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    assert!(courier.stop().success(), "log:\n{}", courier.log());

    let format = if new {
        "YYYY-MM-DD HH24:MI:SS.US"
    } else {
        "YYYY-MM-DD HH24:MI:SS"
    };
    let want: Vec<String> = client
        .query(
            "SELECT id, f8, f4, to_char(d, 'YYYY-MM-DD'), to_char(ts, $1), to_char(tstz AT TIME ZONE 'UTC', $1) \
             FROM edges ORDER BY id",
            &[&format],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let (f8, f4): (f64, f32) = (r.get(1), r.get(2));
            format!(
                "{}\t{:016x}\t{:08x}\t{}\t{}\t{}",
                r.get::<_, i32>(0),
                f8.to_bits(),
                f4.to_bits(),
                r.get::<_, String>(3),
                r.get::<_, String>(4),
                r.get::<_, String>(5)
            )
        })
        .collect();
    // hex(reinterpretAsString(x)): the little-endian bytes, the trailing
    // (most significant) zero bytes dropped.
    let bits = |hex: &str, width: usize| {
        let mut bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        bytes.resize(width, 0);
        bytes
            .iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let got: Vec<String> = ch(
        server,
        &format!(
            "SELECT id, hex(reinterpretAsString(f8)), hex(reinterpretAsString(f4)), toString(d), toString(ts), toString(tstz) \
             FROM {database}.edges_current ORDER BY id FORMAT TabSeparated"
        ),
    )
    .await
    .lines()
    .map(|l| {
        let c: Vec<&str> = l.split('\t').collect();
        format!("{}\t{}\t{}\t{}\t{}\t{}", c[0], bits(c[1], 8), bits(c[2], 4), c[3], c[4], c[5])
    })
    .collect();
    assert_eq!(got.len(), 2 * floats.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            g, w,
            "(id, float8 bits, float4 bits, date, timestamp, timestamptz): clickhouse vs postgres"
        );
    }
    drop_db(db).await;
}

/// Columns added, dropped and widened while streaming are followed; a type
/// change ClickHouse cannot follow stops Courier with a clear error.
async fn schema_changes_mid_stream(server: Server) {
    let db = server.pg_db("schema");
    let database = "courier_e2e_schema";
    let client = fresh_db(db).await;
    fresh_ch(server, database).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, qty int, old text, label text);
             INSERT INTO t VALUES (1, 1, 'o', 'a');",
        )
        .await
        .unwrap();
    let dir = scratch(db);
    let mut courier = CourierProc::start(&dir, &config(server, db, &["public.t"], &dir, database));
    wait_caught_up(&client, db, CATCH_UP).await;
    client
        .batch_execute(
            "ALTER TABLE t ADD COLUMN extra numeric(6,2);
             INSERT INTO t VALUES (2, 2, 'o', 'b', 1.25);
             ALTER TABLE t ALTER COLUMN qty TYPE bigint;
             UPDATE t SET qty = 5000000000 WHERE id = 1;
             ALTER TABLE t DROP COLUMN old;
             INSERT INTO t VALUES (3, 3, 'c', NULL);",
        )
        .await
        .unwrap();
    wait_caught_up(&client, db, CATCH_UP).await;
    let rows = ch_json(
        server,
        &format!(
            "SELECT id, qty, old, label, {} AS extra FROM {database}.t_current ORDER BY id",
            decimal_text(server, "extra", 2)
        ),
    )
    .await;
    assert_eq!(
        rows,
        vec![
            json!({"id": 1, "qty": 5000000000i64, "old": "o", "label": "a", "extra": null}),
            json!({"id": 2, "qty": 2, "old": "o", "label": "b", "extra": "1.25"}),
            json!({"id": 3, "qty": 3, "old": null, "label": "c", "extra": null}),
        ]
    );

    client
        .batch_execute(
            "ALTER TABLE t ALTER COLUMN label TYPE int USING length(label);
             INSERT INTO t VALUES (4, 4, 4, NULL);",
        )
        .await
        .unwrap();
    let status = courier
        .wait_exit("courier to stop after an impossible type change", CATCH_UP)
        .await;
    let log = courier.log();
    assert!(
        !status.success(),
        "courier exited with {status}; log:\n{log}"
    );
    for part in [
        "label",
        "Nullable(String)",
        "Nullable(Int32)",
        "Rebuild",
        "public.t",
    ] {
        assert!(log.contains(part), "{part:?} missing from the log:\n{log}");
    }
    drop_db(db).await;
}
