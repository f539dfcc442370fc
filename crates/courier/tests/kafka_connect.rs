//! Interoperability: Courier's Kafka sink (`format = "json-schema"`) read by
//! a real Kafka Connect worker running Debezium's JDBC sink connector, which
//! writes the change events into a second PostgreSQL database. The worker is
//! `dev/kafka-connect.sh`'s (or the one at `COURIER_TEST_KAFKA_CONNECT`), on
//! `dev/kafka.sh`'s broker (or `COURIER_TEST_KAFKA`).
//!
//! What passes here is what a Debezium user's pipeline would do with
//! Courier's topics: the JDBC sink creates the tables from the records'
//! Connect schemas (`schema.evolution=basic`), upserts snapshot reads,
//! creates and updates by the record key, and applies deletes. The sink
//! writes transaction metadata, so every change envelope carries a filled
//! `transaction` block, as Debezium's do with `provide.transaction.metadata`.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::connect::{connect_url, Connector};
use support::load::{create_table, Load};
use support::skip::skip;
use support::*;
use tokio_postgres::Client;

const CATCH_UP: Duration = Duration::from_secs(60);
/// How long the JDBC sink may take to write what Courier has produced.
const CONVERGE: Duration = Duration::from_secs(45);
const JDBC_SINK: &str = "io.debezium.connector.jdbc.JdbcSinkConnector";

fn brokers() -> String {
    std::env::var("COURIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:59092".to_string())
}

/// Whether the worker answers and has Debezium's JDBC sink, and the broker
/// accepts connections; otherwise the reason.
async fn services_missing() -> Option<String> {
    let url = connect_url();
    let plugins = reqwest::get(format!("{url}/connector-plugins")).await;
    match plugins {
        Err(e) => return Some(format!("no Kafka Connect worker answers at {url} ({e})")),
        Ok(r) => {
            let text = r.text().await.unwrap_or_default();
            if !text.contains(JDBC_SINK) {
                return Some(format!(
                    "the Kafka Connect worker at {url} has no {JDBC_SINK} plugin"
                ));
            }
        }
    }
    let b = brokers();
    let first = b.split(',').next().unwrap_or_default().trim().to_string();
    if std::net::TcpStream::connect(&first).is_err() {
        return Some(format!("no Kafka broker at {first}"));
    }
    None
}

/// The JDBC URL of database `db` on the test cluster, and its user and
/// password, from `support::pg_url`.
fn jdbc_target(db: &str) -> (String, String, String) {
    let url = url::Url::parse(&pg_url(db)).expect("the test PostgreSQL URL");
    (
        format!(
            "jdbc:postgresql://{}:{}/{db}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port().unwrap_or(5432)
        ),
        url.username().to_string(),
        url.password().unwrap_or_default().to_string(),
    )
}

/// The source tables: every column type the test carries through.
///
/// Left out on purpose:
/// * multi-dimensional arrays: Debezium's array schema has one level, and
///   Courier refuses them with `format = "json-schema"`;
/// * `NaN` and `±Infinity` in `real`/`double precision`: Courier writes
///   them as JsonConverter itself does (`"NaN"`), but JsonConverter reads
///   such a string back as `0.0`, so no Connect consumer gets them;
/// * `±infinity` dates and timestamps: Debezium (and Courier) send them as
///   the integer type's extremes, which the JDBC sink writes as far-off
///   real dates, not infinity;
/// * `money`, `bit`, geometric types: Courier sends PostgreSQL's text where
///   Debezium sends other types (see the sink's type table).
const SCHEMA: &str = r#"
CREATE TYPE size AS ENUM ('small', 'big');
CREATE TABLE kinds (
    id int PRIMARY KEY,
    i2 smallint,
    i8 bigint,
    n numeric(20,3),
    f4 real,
    f8 double precision,
    t text,
    vc varchar(40),
    b boolean,
    d date,
    ts timestamp,
    ts3 timestamp(3),
    tstz timestamptz,
    tm time,
    u uuid,
    j jsonb,
    bin bytea,
    int_arr int[],
    text_arr text[],
    big text,
    e size,
    iv interval,
    tz timetz,
    nv numeric
);
CREATE TABLE lines (
    order_id bigint,
    line int,
    qty int NOT NULL,
    note text,
    PRIMARY KEY (order_id, line)
);
INSERT INTO kinds VALUES
    (1, 32767, 9223372036854775807, 12345678901234567.125, 0.25, -1.5e300,
     'héllo "quoted" \ back', 'x', true, '2024-02-29', '2024-01-02 03:04:05.123456',
     '2024-01-02 03:04:05.123', '2024-01-02 03:04:05.5+02', '10:11:12.5',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2, {"b": null}], "c": "d"}',
     '\xdeadbeef00', '{1,2,NULL,-3}', '{"a","b c",NULL,"d\"e"}', NULL, 'big', '1 day 02:03:04.5', '10:00:00+02',
     3.14159265358979323846),
    (2, -32768, -9223372036854775808, -0.001, -0.5, 0,
     '', '', false, '1969-12-31', '1969-12-31 23:59:59.999999',
     '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '00:00:00',
     '00000000-0000-0000-0000-000000000000', '[]', '\x', '{}', '{}', NULL, 'small', '-1 mon', '00:00:00+00',
     -12345678901234567890.5),
    (3, 0, 0, 0, 1, 1, 'three', 'v', NULL, '2000-01-01', '2000-01-01 00:00:00',
     NULL, NULL, '23:59:59.999999', NULL, '"just a string"', NULL, '{7}', '{""}', NULL, NULL, NULL, NULL, 0),
    (4, 4, 4, 4.5, 4, 4, 'four', NULL, true, NULL, NULL, NULL, NULL, NULL, NULL,
     'null', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (5, 5, 5, 5, 5, 5, 'five', NULL, false, NULL, NULL, NULL, NULL, NULL, NULL,
     '{"n": 1.50}', NULL, NULL, NULL,
     (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g), NULL, NULL, NULL, 1e-20),
    (6, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO lines SELECT o, l, o * l, 'line ' || o || '/' || l
    FROM generate_series(1, 20) o, generate_series(1, 3) l;
"#;

/// Changes while streaming: every type changed, values to nulls and back, a
/// delete, a primary-key change (a delete of the old key and a create of the
/// new one), an unchanged TOASTed value beside a changed column, a row
/// deleted and created again in one transaction, composite keys.
const CHANGES: &[&str] = &[
    "UPDATE kinds SET i2 = i2 - 1, i8 = i8 - 1, n = n + 1, f4 = f4 * 2, f8 = f8 / 2,
        t = t || ' updated', vc = 'y', b = NOT b, d = d + 1, ts = ts + interval '1 microsecond',
        ts3 = ts3 + interval '1 millisecond', tstz = tstz + interval '1 hour', tm = tm + interval '1 second',
        u = 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', j = '{\"z\": true}', bin = bin || '\\x01'::bytea,
        int_arr = int_arr || 9, text_arr = text_arr || 'more'::text, e = 'small',
        iv = iv * 2, tz = tz + interval '1 minute', nv = nv * 10 WHERE id = 1",
    "UPDATE kinds SET i2 = NULL, i8 = NULL, n = NULL, f4 = NULL, f8 = NULL, t = NULL, vc = NULL,
        b = NULL, d = NULL, ts = NULL, ts3 = NULL, tstz = NULL, tm = NULL, u = NULL, j = NULL,
        bin = NULL, int_arr = NULL, text_arr = NULL, e = NULL, iv = NULL, tz = NULL,
        nv = NULL WHERE id = 2",
    "UPDATE kinds SET i2 = 6, i8 = 66, n = 6.006, f4 = 6.5, f8 = 6.25, t = 'six', vc = 'vi', b = true,
        d = '2030-06-06', ts = '2030-06-06 06:06:06', ts3 = '2030-06-06 06:06:06.006',
        tstz = '2030-06-06 06:06:06.000006-06', tm = '06:06:06', u = gen_random_uuid(),
        j = '{\"six\": [6]}', bin = '\\x06', int_arr = '{6,NULL}', text_arr = '{six}', e = 'big',
        iv = '6 hours', tz = '06:06:06-06', nv = 6.000600 WHERE id = 6",
    "DELETE FROM kinds WHERE id = 3",
    "UPDATE kinds SET id = 104 WHERE id = 4",
    "UPDATE kinds SET t = 'five, TOASTed big text unchanged' WHERE id = 5",
    "BEGIN; DELETE FROM kinds WHERE id = 104; INSERT INTO kinds (id, t, j) VALUES (104, 'again', '{}');
        INSERT INTO kinds (id, n, t) VALUES (7, -99999999999999999.999, 'seven'); COMMIT",
    "UPDATE lines SET qty = qty + 100 WHERE order_id <= 5",
    "DELETE FROM lines WHERE line = 2 AND order_id % 2 = 0",
    "UPDATE lines SET line = line + 10 WHERE order_id = 7",
    "INSERT INTO lines SELECT 100 + o, 1, o, NULL FROM generate_series(1, 30) o",
    "UPDATE lines SET note = NULL WHERE order_id = 9",
];

/// A source table, how its rows are ordered, and how columns whose sink
/// representation legitimately differs are rendered on both sides.
struct Table {
    name: &'static str,
    order_by: &'static str,
    /// `jsonb_build_object` arguments replacing some columns' values.
    renders: &'static str,
}

const TABLES: &[Table] = &[
    Table {
        name: "kinds",
        order_by: "id",
        // * `interval` travels as an ISO 8601 duration string
        //   (`io.debezium.time.Interval`, Debezium's
        //   `interval.handling.mode=string`); the JDBC sink knows no
        //   interval for it and writes a `text` column (`P2DT4H6M9S`):
        //   both sides are read back as an interval.
        // * `timetz` travels in UTC (`io.debezium.time.ZonedTime`,
        //   `08:01:00Z`), as Debezium sends it: the offset the source wrote
        //   is not kept, the time is; both sides are read in UTC.
        renders: "'iv', whole_row.iv::text::interval, 'tz', whole_row.tz AT TIME ZONE 'UTC'",
    },
    Table {
        name: "lines",
        order_by: "order_id, line",
        renders: "",
    },
    Table {
        name: "items",
        order_by: "id",
        renders: "",
    },
];

/// The rows of `table` in key order, each column rendered as text by
/// PostgreSQL (`jsonb_each_text` of the row), with the representation
/// differences the JDBC sink legitimately introduces normalised (besides
/// `table.renders`):
///
/// * `jsonb` becomes `json` in the sink (`io.debezium.data.Json` does not
///   say which), which keeps the text as sent: Courier sends jsonb's
///   normalised text, and documents compare as parsed JSON.
/// * `numeric(p,s)` becomes `numeric(p,s)` again, from the Decimal's
///   parameters (fractional zeros are stripped on both sides all the same).
/// * Unconstrained `numeric` travels exactly (`VariableScaleDecimal`, as
///   Debezium sends it), but the JDBC sink writes that type to a `double
///   precision` column: both sides are compared as the nearest double
///   (`31.4159265358979323846` is `31.41592653589793`).
/// * `timestamptz` travels as an instant in UTC (`ZonedTimestamp`), so
///   both sides are read with `TimeZone = UTC`.
/// * Types the sink does not recreate (`varchar(n)` and enums become
///   `text`, `timestamp(3)` and `time` become `timestamp(6)` and
///   `time(6)`) render the same text and need nothing.
/// * `real` values are ones a float32 holds exactly (0.25, -0.5, 6.5).
async fn rows(client: &Client, table: &Table) -> Vec<BTreeMap<String, Value>> {
    client
        .batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .await
        .unwrap();
    let sql = format!(
        "SELECT (SELECT json_object_agg(key, value)
                   FROM jsonb_each_text(to_jsonb(whole_row) || jsonb_build_object({renders})))::text
           FROM {name} whole_row ORDER BY {order_by}",
        renders = table.renders,
        name = table.name,
        order_by = table.order_by,
    );
    let found = match client.query(&sql, &[]).await {
        Ok(found) => found,
        // The sink creates its tables from the first record it writes.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Vec::new()
        }
        Err(e) => panic!("{sql}: {e:?}"),
    };
    found
        .iter()
        .map(|r| {
            let text: String = r.get(0);
            let obj: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
            obj.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        // A document that is a JSON string comes as its bare text.
                        ("j", Value::String(s)) => {
                            serde_json::from_str(&s).unwrap_or(Value::String(s))
                        }
                        ("nv", Value::String(s)) => json!(s.parse::<f64>().unwrap()),
                        ("n" | "amount", Value::String(s)) if s.contains('.') => {
                            Value::String(s.trim_end_matches('0').trim_end_matches('.').into())
                        }
                        (_, v) => v,
                    };
                    (k, v)
                })
                .collect()
        })
        .collect()
}

/// The first difference between two tables' rows, for the failure message.
fn first_difference(
    source: &[BTreeMap<String, Value>],
    sink: &[BTreeMap<String, Value>],
) -> Option<String> {
    if source.len() != sink.len() {
        return Some(format!(
            "{} rows in the source, {} in the sink",
            source.len(),
            sink.len()
        ));
    }
    source
        .iter()
        .zip(sink)
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("source row {}\n  sink row {}", json!(a), json!(b)))
}

/// Snapshot and streaming, through Courier's Kafka sink and Debezium's JDBC
/// sink connector into a fresh database: every source table ends equal,
/// row by row and value by value, to the table the connector wrote.
#[tokio::test(flavor = "multi_thread")]
async fn debezium_jdbc_sink_replicates_courier_topics() {
    if let Some(reason) = services_missing().await {
        skip(
            &reason,
            "run dev/kafka-connect.sh start (it starts dev/kafka.sh's broker too), or set COURIER_TEST_KAFKA_CONNECT and COURIER_TEST_KAFKA",
        );
        return;
    }
    let started = Instant::now();
    let db = "e2e_kafka_connect";
    let sink_db = "e2e_kafka_connect_sink";
    let client = fresh_db(db).await;
    let sink = fresh_db(sink_db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    create_table(&client, "items", 300).await;

    // Topics, the connector and its consumer group are new in every run:
    // the broker and the worker outlive the test.
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let prefix = format!("kc{run}");
    let dir = scratch(db);
    let config = sink_config(
        db,
        db,
        &["public.kinds", "public.lines", "public.items"],
        &dir,
        "bus",
        &format!(
            "type = \"kafka\"\nbrokers = {:?}\ntopic_prefix = {prefix:?}\nformat = \"json-schema\"\npartitions = 2\ntransaction_metadata = true",
            brokers()
        ),
    );
    let mut courier = CourierProc::start(&dir, &config);
    // The snapshot is in the topics before the connector starts, as when a
    // JDBC sink is added to a running capture.
    wait_caught_up(&client, db, CATCH_UP).await;

    let (jdbc, user, password) = jdbc_target(sink_db);
    let topics: Vec<String> = TABLES
        .iter()
        .map(|t| format!("{prefix}.public.{}", t.name))
        .collect();
    let connector = Connector::create(
        &format!("courier-interop-{run}"),
        json!({
            "connector.class": JDBC_SINK,
            "tasks.max": "1",
            "topics": topics.join(","),
            "connection.url": jdbc,
            "connection.username": user,
            "connection.password": password,
            "insert.mode": "upsert",
            "primary.key.mode": "record_key",
            "delete.enabled": "true",
            "schema.evolution": "basic",
            // Each topic's table is named after the source table. Courier's
            // tombstones (after each delete) have no `source` to take the
            // name from: the connector skips them with a warning, the
            // delete event itself has removed the row.
            "collection.name.format": "${source.table}",
        }),
    )
    .await;

    for sql in CHANGES {
        client.batch_execute(sql).await.unwrap();
    }
    let load = Load::start(db, "items", 2);
    load.commit_more(300, Duration::from_secs(30)).await;
    let committed = load.stop().await;
    wait_caught_up(&client, db, CATCH_UP).await;

    let deadline = Instant::now() + CONVERGE;
    for table in TABLES {
        let want = rows(&client, table).await;
        assert!(!want.is_empty(), "source table {} is empty", table.name);
        loop {
            let got = rows(&sink, table).await;
            let Some(diff) = first_difference(&want, &got) else {
                break;
            };
            connector.assert_not_failed(&connector.status().await);
            assert!(
                Instant::now() < deadline,
                "table {} in the sink database differs from the source after {CONVERGE:?}: {diff}\nconnector status: {}",
                table.name,
                connector.status().await
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // What the sink created from the Connect schemas (key and types).
    let key: Vec<String> = sink
        .query(
            "SELECT a.attname::text FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
              WHERE i.indrelid = 'lines'::regclass AND i.indisprimary ORDER BY a.attname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        key,
        ["line", "order_id"],
        "the record key is the primary key"
    );

    connector.delete().await;
    assert!(courier.stop().success(), "{}", courier.log());
    eprintln!(
        "kafka_connect: {committed} load transactions; the test took {:?}",
        started.elapsed()
    );
    drop_db(sink_db).await;
    drop_db(db).await;
    delete_topics(&prefix);
}

/// Deletes the run's topics (best effort: the broker keeps them otherwise).
fn delete_topics(prefix: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/kafka.sh");
    if std::env::var_os("COURIER_TEST_KAFKA").is_none() && script.exists() {
        let _ = Command::new("bash")
            .arg(script)
            .args(["topics", "--delete", "--topic", &format!("{prefix}\\..*")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
