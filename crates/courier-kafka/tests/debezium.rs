//! Debezium's PostgreSQL connector 3.6.1 on a real Kafka Connect worker
//! (`dev/kafka-connect.sh`) captures a table with a column of every type in
//! Courier's mapping; every record it writes is decoded, and the values are
//! compared with what Courier's own capture (its pgoutput decoder on a slot
//! of the same database, and its snapshot) gives for the same rows: in the
//! snapshot, in the stream (inserts, updates to and from NULL, deletes, a
//! primary-key change), and folded by the version rule into the table's
//! final rows. Where a Debezium setting loses information, the expected
//! value says how (`debezium_value`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use courier_core::{Change, Op, PgType, Value};
use courier_kafka::{DecodeErrorKind, Decoder, Format};
use serde_json::json;
use support::kafka::{self, Owned};
use support::rows::{self, same, show, Row, Store};
use support::{connect, pg, skip::skip, unique};

/// The table (the type test's columns, and a few more whose Debezium form
/// differs: `time(3)`, `timestamp(3)`, bit strings, `money`, `box`, a
/// one-dimensional `numeric[]`, arrays of `timestamptz` and `uuid`), and a
/// table with a TOASTed column and the default replica identity.
const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(10,2) CHECK (VALUE >= 0);
CREATE TABLE every_type (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, np numeric(12,3),
  p price, t text, vc varchar(10), c char(3), by bytea, u uuid, d date, tm time, ttz timetz, ts timestamp,
  tstz timestamptz, iv interval, j json, jb jsonb, m mood, ia int[], ta text[], na numeric[], inet_c inet,
  cidr_c cidr, mac macaddr, pt point, moods mood[], big text,
  tm3 time(3), ts3 timestamp(3), bits bit(3), vb varbit, mon money, bx box, na1 numeric[],
  tsa timestamptz[], ua uuid[]
);
ALTER TABLE every_type ALTER COLUMN big SET STORAGE EXTERNAL;
-- Debezium fills an unchanged TOASTed value only from a whole old row.
ALTER TABLE every_type REPLICA IDENTITY FULL;
CREATE TABLE toasty (id int PRIMARY KEY, big text, other int);
ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
"#;

const TABLES: [&str; 2] = ["public.every_type", "public.toasty"];

/// The edge rows, ids offset by `base`: every column set; every column
/// NULL; infinities, NaN and empty arrays; dates and timestamps before the
/// Common Era and before 1970; small numerics.
fn inserts(base: i32) -> String {
    format!(
        r#"
INSERT INTO every_type VALUES ({a}, true, -32768, 2147483647, 9223372036854775807, 1.5, 'NaN',
  12345678901234567890.123456789, -1.5, 9.99, E'h\u00e9llo "w\u00f6rld" \n tab\t \u6771\u4eac \\ end', 'abc', 'ab',
  '\xdeadbeef', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'infinity', '13:45:06.123456', '13:45:06+02',
  '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.5+05:30', '1 year 2 months 3 days 04:05:06',
  '{{"a": [1, 2.5, null]}}', '{{"b": {{"c": true}}}}', 'happy', '{{1,NULL,3}}', '{{"a,b","c\"d",NULL,""}}',
  '{{{{1.5,2}},{{NULL,4}}}}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '(1.5,2)', '{{sad,happy}}',
  repeat('x', 100000), '13:45:06.5', '1969-07-20 20:17:40.123', '101', '0010110', 9.99, '((1,1),(0,0))',
  '{{1.50,2}}', '{{"2024-01-02 03:04:05.5+00",infinity}}', '{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}}');
INSERT INTO every_type (id) VALUES ({b});
INSERT INTO every_type (id, f4, f8, n, np, d, tm, ts, tstz, ia, ta, j, iv, na1) VALUES
  ({c}, '-Infinity', 'Infinity', 'NaN', 1.0, '-infinity', '24:00:00', 'infinity', '-infinity', '{{}}', '{{}}', '[]',
   '0', '{{1,NaN}}');
INSERT INTO every_type (id, d, ts, tstz, n, np, iv, tm, ts3) VALUES
  ({e}, '0044-03-15 BC', '0044-03-15 12:00:00 BC', '1900-01-01 00:00:00.000001+00', 0.0000001, -0.001,
   '-1 year -2 mons +3 days -04:05:06.5', '00:00:00.000001', '1969-12-31 23:59:59.999');
INSERT INTO every_type (id, n, iv, ts, d) VALUES ({f}, 1.50, '1 mon 0.000001 sec', '1969-12-31 23:59:59.999999', '1969-12-31');
"#,
        a = base + 1,
        b = base + 2,
        c = base + 3,
        e = base + 4,
        f = base + 5,
    )
}

/// What the stream does after the snapshot.
const STREAM: &str = r#"
UPDATE every_type SET i4 = 7, t = NULL, n = 2.50 WHERE id = 1;
UPDATE every_type SET t = 'back', ttz = '23:30:00.25-01:30' WHERE id = 2;
DELETE FROM every_type WHERE id = 3;
UPDATE every_type SET id = 20 WHERE id = 4;
BEGIN; UPDATE every_type SET i2 = 1 WHERE id = 5; UPDATE every_type SET i2 = 2 WHERE id = 5; COMMIT;
UPDATE every_type SET i8 = 8 WHERE id = 11;
DELETE FROM every_type WHERE id = 12;
INSERT INTO every_type (id, t) VALUES (12, 'again');
UPDATE toasty SET other = 2;
INSERT INTO every_type (id) VALUES (999);
"#;

/// The connector settings each test varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// Debezium's defaults: `decimal.handling.mode=precise`,
    /// `time.precision.mode=adaptive`, `interval.handling.mode=numeric`,
    /// JsonConverter with schemas.
    Defaults,
    /// The defaults without schemas (`schemas.enable=false`).
    Schemaless,
    /// `decimal.handling.mode=string`, `time.precision.mode=connect`,
    /// `interval.handling.mode=string`, and the columns' source types
    /// propagated (`column.propagate.source.type=.*`).
    StringConnect,
    /// `decimal.handling.mode=double`.
    Double,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Defaults => "defaults",
            Variant::Schemaless => "schemaless",
            Variant::StringConnect => "string_connect",
            Variant::Double => "double",
        }
    }

    fn settings(self) -> serde_json::Value {
        match self {
            Variant::Defaults => json!({}),
            Variant::Schemaless => json!({
                "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                "key.converter.schemas.enable": "false",
                "value.converter.schemas.enable": "false",
            }),
            Variant::StringConnect => json!({
                "decimal.handling.mode": "string",
                "time.precision.mode": "connect",
                "interval.handling.mode": "string",
                "column.propagate.source.type": ".*",
            }),
            Variant::Double => json!({"decimal.handling.mode": "double"}),
        }
    }

    fn format(self) -> Format {
        match self {
            Variant::Schemaless => Format::Json,
            _ => Format::JsonSchema,
        }
    }
}

/// What one run gives: the records and their decoded changes, and
/// Courier's own view of the same database.
struct Run {
    /// `every_type`'s records, each with what the decoder made of it.
    records: Vec<(Owned, Option<Change>)>,
    /// `toasty`'s records, each with the decoder's result.
    toasty: Vec<(Owned, Result<Option<Change>, courier_kafka::DecodeError>)>,
    /// Courier's decoding of every change the workload made to
    /// `every_type`, in order.
    courier: Vec<Change>,
    /// The table's final rows, read by Courier's snapshot.
    table: BTreeMap<String, Row>,
}

/// Whether the services the tests need run; otherwise skips.
async fn services() -> bool {
    if !pg::available().await {
        skip(
            "no PostgreSQL at COURIER_TEST_PG or 127.0.0.1:55432",
            "run dev/pg.sh start",
        );
        return false;
    }
    if !kafka::available() {
        skip(
            "no Kafka broker at COURIER_TEST_KAFKA or 127.0.0.1:59092",
            "run dev/kafka.sh start",
        );
        return false;
    }
    if let Some(reason) = connect::missing().await {
        skip(&reason, "run dev/kafka-connect.sh start");
        return false;
    }
    true
}

async fn run(variant: Variant) -> Option<Run> {
    if !services().await {
        return None;
    }
    let db = format!("kd_dbz_{}", variant.name());
    let prefix = unique(&db);
    let client = pg::fresh_db(&db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    let mut reference = pg::Reference::start(&db, &format!("{db}_ref"), &TABLES).await;
    client.batch_execute(&inserts(0)).await.unwrap();
    client
        .batch_execute("INSERT INTO toasty VALUES (1, repeat('y', 100000), 1)")
        .await
        .unwrap();
    let topic = format!("{prefix}.public.every_type");
    let config = connect::debezium_config(&db, &prefix, &TABLES, variant.settings());
    let connector = connect::Connector::create(&prefix, &config).await;
    kafka::wait_for(&topic, "the snapshot", Duration::from_secs(90), |r| {
        r.len() >= 5
    })
    .await;
    client.batch_execute(&inserts(10)).await.unwrap();
    client.batch_execute(STREAM).await.unwrap();
    let records = kafka::wait_for(&topic, "the last insert", Duration::from_secs(90), |r| {
        r.iter().any(|r| {
            r.key.as_deref().is_some_and(|k| {
                let k: serde_json::Value = serde_json::from_slice(k).unwrap();
                k["id"] == 999 || k["payload"]["id"] == 999
            })
        })
    })
    .await;
    let toasty_records = kafka::wait_for(
        &format!("{prefix}.public.toasty"),
        "toasty's update",
        Duration::from_secs(30),
        |r| r.len() >= 2,
    )
    .await;
    connector.assert_not_failed(&connector.status().await);
    let courier = reference
        .changes()
        .await
        .into_iter()
        .filter(|c| c.relation().id.name == "every_type")
        .collect();
    let table = pg::snapshot_rows(&db, "public.every_type")
        .await
        .iter()
        .map(|c| (rows::key(c), rows::row(c, c.after().unwrap())))
        .collect();

    connector.delete().await;
    drop(reference);
    pg::drop_slot(&prefix).await;
    kafka::delete_topics(&prefix).await;
    pg::drop_db(&db).await;

    let mut decoder = Decoder::new(variant.format());
    let records = records
        .into_iter()
        .map(|r| {
            let decoded = r
                .decode(&mut decoder)
                .unwrap_or_else(|e| panic!("{}: {e}", variant.name()));
            (r, decoded)
        })
        .collect();
    let toasty = toasty_records
        .into_iter()
        .map(|r| {
            let decoded = r.decode(&mut decoder);
            (r, decoded)
        })
        .collect();
    Some(Run {
        records,
        toasty,
        courier,
        table,
    })
}

/// The value the decoder gives for column `column` of a Debezium record
/// when Courier's capture gives `courier`, or `None` for a column
/// Debezium leaves out. `snapshot`: the record is a snapshot read.
fn debezium_value(
    variant: Variant,
    column: &str,
    courier: &Value,
    snapshot: bool,
) -> Option<Value> {
    use Variant::*;
    // Debezium leaves out the columns of types it does not know.
    if column == "bx" {
        return None;
    }
    if courier.is_null() {
        return Some(Value::Null);
    }
    let v = courier.clone();
    Some(match (column, variant) {
        // ZonedTime: the same time in UTC; the original offset is lost.
        ("ttz", _) => Value::Time(timetz_in_utc(text(&v))),
        // MicroDuration counts a month as 30.4375 days.
        ("iv", Defaults | Double) => Value::Text(micro_duration(text(&v))),
        // A snapshot (read through JDBC) drops the era of dates before 1 AD.
        ("d", _) if snapshot && text(&v).ends_with(" BC") => {
            Value::Date(text(&v).trim_end_matches(" BC").to_owned())
        }
        // money: a Decimal of its amount (precise), else the amount's text
        // or double; Courier's capture has PostgreSQL's text ($9.99).
        ("mon", Defaults) => Value::Numeric(text(&v).replace(['$', ','], "")),
        ("mon", StringConnect) => Value::Text(text(&v).replace(['$', ','], "")),
        ("mon", Double) => Value::Float8(text(&v).replace(['$', ','], "").parse().unwrap()),
        // A variable-scale decimal loses trailing zeros, and NaN.
        ("n", Defaults) => match text(&v) {
            "NaN" | "Infinity" | "-Infinity" => Value::Null,
            t => Value::Numeric(strip_zeros(t)),
        },
        ("na1", Defaults) => {
            let items = array(&v);
            if items
                .iter()
                .any(|i| matches!(i, Value::Numeric(t) if t == "NaN"))
            {
                Value::Null
            } else {
                Value::Array(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::Numeric(t) => Value::Numeric(strip_zeros(t)),
                            other => other.clone(),
                        })
                        .collect(),
                )
            }
        }
        // A multi-dimensional array: Debezium writes each inner array as null.
        ("na", _) => Value::Array(vec![Value::Null; array(&v).len()]),
        // string: a domain over numeric is named by its own name, so it stays
        // text (with the same digits); an array of decimals holding NaN is
        // written as null.
        ("p", StringConnect) => Value::Text(text(&v).to_owned()),
        ("na1", StringConnect) if array(&v).iter().any(|i| text(i) == "NaN") => Value::Null,
        // double: the decimal as the nearest double.
        ("n" | "np" | "p", Double) => Value::Float8(text(&v).parse().unwrap()),
        // An array of decimals holding NaN is written as null.
        ("na1", Double) if array(&v).iter().any(|i| text(i) == "NaN") => Value::Null,
        ("na1", Double) => Value::Array(
            array(&v)
                .iter()
                .map(|i| Value::Float8(text(i).parse().unwrap()))
                .collect(),
        ),
        // connect: milliseconds.
        ("tm" | "ts", StringConnect) => match &v {
            Value::Time(t) => Value::Time(millis(t)),
            Value::Timestamp(t) => Value::Timestamp(millis(t)),
            other => other.clone(),
        },
        // A bit varying loses its leading zeros (Debezium sends its
        // greatest length).
        ("vb", _) => Value::Text(text(&v).trim_start_matches('0').to_owned()),
        _ => v,
    })
}

fn text(v: &Value) -> &str {
    match v {
        Value::Numeric(s)
        | Value::Text(s)
        | Value::Uuid(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::TimestampTz(s)
        | Value::Json(s) => s,
        other => panic!("not a text value: {other:?}"),
    }
}

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        other => panic!("not an array: {other:?}"),
    }
}

/// `12.50` → `12.5`, `1.000` → `1`.
fn strip_zeros(t: &str) -> String {
    if !t.contains('.') {
        return t.to_owned();
    }
    t.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The fraction of a time or timestamp cut to milliseconds.
fn millis(t: &str) -> String {
    match t.split_once('.') {
        Some((head, frac)) => {
            let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            let rest = &frac[digits.len()..];
            let cut = digits[..digits.len().min(3)].trim_end_matches('0');
            if cut.is_empty() {
                format!("{head}{rest}")
            } else {
                format!("{head}.{cut}{rest}")
            }
        }
        None => t.to_owned(),
    }
}

/// `13:45:06+02` → `11:45:06+00`.
fn timetz_in_utc(t: &str) -> String {
    let at = t.rfind(['+', '-']).unwrap();
    let (clock, zone) = t.split_at(at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let mut z = zone[1..].split(':').map(|p| p.parse::<i64>().unwrap());
    let offset = sign * (z.next().unwrap() * 3600 + z.next().unwrap_or(0) * 60);
    let (hms, frac) = clock
        .split_once('.')
        .map_or((clock, None), |(a, b)| (a, Some(b)));
    let mut p = hms.split(':').map(|p| p.parse::<i64>().unwrap());
    let secs = p.next().unwrap() * 3600 + p.next().unwrap() * 60 + p.next().unwrap();
    let utc = (secs - offset).rem_euclid(86_400);
    let mut out = format!("{:02}:{:02}:{:02}", utc / 3600, utc / 60 % 60, utc % 60);
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out + "+00"
}

/// Debezium's MicroDuration of an ISO 8601 interval (a month is 30.4375
/// days, as `MicroDuration.DAYS_PER_MONTH_AVG`), as hours, minutes and
/// seconds.
fn micro_duration(iso: &str) -> String {
    let body = iso.strip_prefix('P').unwrap();
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    let fields = |s: &str| {
        let mut out = Vec::new();
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_alphabetic() {
                out.push((c, num.parse::<f64>().unwrap()));
                num.clear();
            } else {
                num.push(c);
            }
        }
        out
    };
    let (mut months, mut days, mut seconds) = (0.0, 0.0, 0.0);
    for (unit, n) in fields(date) {
        match unit {
            'Y' => months += n * 12.0,
            'M' => months += n,
            _ => days += n,
        }
    }
    let (mut hours, mut minutes) = (0.0, 0.0);
    for (unit, n) in fields(time) {
        match unit {
            'H' => hours += n,
            'M' => minutes += n,
            _ => seconds += n,
        }
    }
    let number_of_days = months * 30.4375 + days;
    let number_of_seconds = (((number_of_days * 24.0 + hours) * 60.0) + minutes) * 60.0 + seconds;
    let micros = (number_of_seconds * 1e6) as i64;
    if micros == 0 {
        return "PT0S".into();
    }
    let sign = if micros < 0 { "-" } else { "" };
    let a = micros.unsigned_abs();
    let (h, m, s, f) = (
        a / 3_600_000_000,
        a / 60_000_000 % 60,
        a / 1_000_000 % 60,
        a % 1_000_000,
    );
    let mut out = "PT".to_string();
    if h > 0 {
        out += &format!("{sign}{h}H");
    }
    if m > 0 {
        out += &format!("{sign}{m}M");
    }
    if s > 0 || f > 0 {
        out += &format!("{sign}{s}");
        if f > 0 {
            out += &format!(".{}", format!("{f:06}").trim_end_matches('0'));
        }
        out += "S";
    }
    out
}

/// Compares a decoded row with Courier's row of the same change, column by
/// column, through `debezium_value`; returns the differences.
fn differences(variant: Variant, decoded: &Row, courier: &Row, snapshot: bool) -> Vec<String> {
    let mut out = Vec::new();
    for (column, want) in courier {
        let expected = debezium_value(variant, column, want, snapshot);
        match (expected, decoded.get(column)) {
            (None, None) => {}
            (None, Some(got)) => out.push(format!("{column}: expected absent, got {}", show(got))),
            (Some(e), None) => out.push(format!("{column}: missing, expected {}", show(&e))),
            (Some(e), Some(got)) if !same(&e, got) => out.push(format!(
                "{column}: got {}, expected {} (Courier: {})",
                show(got),
                show(&e),
                show(want)
            )),
            _ => {}
        }
    }
    for column in decoded.keys().filter(|c| !courier.contains_key(*c)) {
        out.push(format!("{column}: not a column of the table"));
    }
    out
}

/// Courier's changes, a primary-key change split into Debezium's delete of
/// the old key and create of the new one.
fn as_debezium_emits(courier: &[Change]) -> Vec<(Op, String, Option<Row>)> {
    let mut out = Vec::new();
    for c in courier {
        let rel = c.relation();
        let key_changed = c.op() == Op::Update
            && c.before().is_some_and(|b| {
                rel.key_indexes()
                    .any(|i| !b[i].is_null() && Some(&b[i]) != c.after().map(|a| &a[i]))
            });
        if key_changed {
            let before = c.before().unwrap();
            let old: Vec<serde_json::Value> =
                rel.key_indexes().map(|i| before[i].to_json()).collect();
            out.push((Op::Delete, serde_json::Value::Array(old).to_string(), None));
            out.push((Op::Insert, rows::key(c), c.after().map(|a| rows::row(c, a))));
        } else {
            out.push((c.op(), rows::key(c), c.after().map(|a| rows::row(c, a))));
        }
    }
    out
}

/// The checks every variant with schemas passes: snapshot rows, streamed
/// changes in order, the final rows, and the relation.
fn check_with_schemas(variant: Variant, run: &Run) {
    let name = variant.name();
    let courier_rows: BTreeMap<String, Row> = run.courier[..5]
        .iter()
        .map(|c| (rows::key(c), rows::row(c, c.after().unwrap())))
        .collect();
    let mut problems = Vec::new();

    // The snapshot: one read per row, equal to Courier's row.
    let reads: Vec<&Change> = run
        .records
        .iter()
        .filter_map(|(_, c)| c.as_ref())
        .filter(|c| c.op() == Op::Read)
        .collect();
    assert_eq!(reads.len(), 5, "{name}: snapshot reads");
    for c in &reads {
        let key = rows::key(c);
        let want = &courier_rows[&key];
        for d in differences(variant, &rows::row(c, c.after().unwrap()), want, true) {
            problems.push(format!("snapshot row {key}: {d}"));
        }
    }

    // The stream: the same changes, in the same order.
    let streamed: Vec<&Change> = run
        .records
        .iter()
        .filter_map(|(_, c)| c.as_ref())
        .filter(|c| c.op() != Op::Read)
        .collect();
    let expected = as_debezium_emits(&run.courier[5..]);
    let ours: Vec<(Op, String)> = streamed.iter().map(|c| (c.op(), rows::key(c))).collect();
    let theirs: Vec<(Op, String)> = expected.iter().map(|(o, k, _)| (*o, k.clone())).collect();
    assert_eq!(ours, theirs, "{name}: the streamed changes");
    for (c, (_, key, want)) in streamed.iter().zip(&expected) {
        if let (Some(after), Some(want)) = (c.after(), want) {
            for d in differences(variant, &rows::row(c, after), want, false) {
                problems.push(format!("{} of {key}: {d}", c.op().code()));
            }
        }
    }

    // Folded by the version rule, the records give the table's rows.
    let mut store = Store::default();
    store.apply_all(run.records.iter().filter_map(|(_, c)| c.as_ref()));
    let folded = store.rows();
    assert_eq!(
        folded.keys().collect::<Vec<_>>(),
        run.table.keys().collect::<Vec<_>>(),
        "{name}: the folded rows' keys"
    );
    for (key, want) in &run.table {
        // A snapshot read that no change replaced keeps the snapshot's form.
        let snapshot = run
            .records
            .iter()
            .filter_map(|(_, c)| c.as_ref())
            .filter(|c| rows::key(c) == *key)
            .all(|c| c.op() == Op::Read);
        for d in differences(variant, &folded[key], want, snapshot) {
            problems.push(format!("final row {key}: {d}"));
        }
    }
    assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));

    // Every change of the table carries one relation (the schema did not
    // change), whose key is the primary key.
    let first = reads[0].relation();
    for c in run.records.iter().filter_map(|(_, c)| c.as_ref()) {
        assert!(
            std::sync::Arc::ptr_eq(c.relation(), first),
            "{name}: one relation"
        );
    }
    let keys: Vec<&str> = first
        .key_indexes()
        .map(|i| first.columns[i].name.as_str())
        .collect();
    assert_eq!(keys, ["id"]);

    // Tombstones follow their deletes: nothing to decode.
    let tombstones = run
        .records
        .iter()
        .filter(|(r, _)| r.value.is_none())
        .count();
    assert_eq!(
        tombstones, 3,
        "{name}: tombstones of two deletes and a key change"
    );
    assert!(run
        .records
        .iter()
        .all(|(r, c)| r.value.is_some() == c.is_some()));
}

/// The type each column's relation says, beside Courier's.
fn relation_types(run: &Run) -> BTreeMap<String, (PgType, PgType)> {
    let ours = run.records[0].1.as_ref().unwrap().relation();
    let theirs = run.courier[0].relation();
    theirs
        .columns
        .iter()
        .filter_map(|c| {
            let i = ours.column_index(&c.name)?;
            Some((
                c.name.clone(),
                (ours.columns[i].pg_type.clone(), c.pg_type.clone()),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_defaults_decode_to_courier_values() {
    let Some(run) = run(Variant::Defaults).await else {
        return;
    };
    check_with_schemas(Variant::Defaults, &run);
    // The relation has Courier's types, but where Debezium's schema says
    // less: json and jsonb are both io.debezium.data.Json, money a Decimal,
    // the bit strings, point and xml their own names.
    let mut wrong = Vec::new();
    for (column, (ours, courier)) in relation_types(&run) {
        let expected = match (column.as_str(), &courier) {
            ("j", _) => PgType::Jsonb,
            ("mon", _) => PgType::Numeric {
                precision: None,
                scale: Some(2),
            },
            // inet, cidr, macaddr: plain strings, so text.
            ("inet_c" | "cidr_c" | "mac", PgType::Other) => PgType::Text,
            _ => courier.clone(),
        };
        if ours != expected {
            wrong.push(format!(
                "{column}: {ours:?}, expected {expected:?} (Courier: {courier:?})"
            ));
        }
    }
    assert!(wrong.is_empty(), "column types:\n{}", wrong.join("\n"));
    // An unchanged TOASTed value with the default replica identity arrives
    // as Debezium's placeholder: an error naming the fix, not a value.
    let update = run
        .toasty
        .iter()
        .find(|(r, _)| r.payload().is_some_and(|p| p["op"] == "u"))
        .expect("toasty's update");
    let err = update.1.as_ref().expect_err("a placeholder is no value");
    assert!(
        matches!(&*err.kind, DecodeErrorKind::ToastPlaceholder { column, .. } if column == "big"),
        "{err}"
    );
    assert!(err.to_string().contains("REPLICA IDENTITY FULL"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_string_decimals_and_connect_times_decode_to_courier_values() {
    let Some(run) = run(Variant::StringConnect).await else {
        return;
    };
    check_with_schemas(Variant::StringConnect, &run);
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_double_decimals_decode_to_doubles() {
    let Some(run) = run(Variant::Double).await else {
        return;
    };
    check_with_schemas(Variant::Double, &run);
}

/// Without schemas the records carry no types: the decoder infers them
/// from the JSON values. What matches Courier's values, what has the same
/// JSON but another variant, and what only the schema could have told.
#[tokio::test(flavor = "multi_thread")]
async fn debezium_without_schemas_decodes_what_the_json_tells() {
    let Some(run) = run(Variant::Schemaless).await else {
        return;
    };
    // The same value as Courier's capture.
    const SAME: &[&str] = &[
        "id", "b", "i2", "i4", "i8", "t", "vc", "c", "ia", "ta", "m", "moods", "inet_c", "cidr_c",
        "mac", "big",
    ];
    // The same JSON, another variant: floats as double precision (and NaN
    // or Infinity first seen as text), uuids as text, bytea as its base64
    // text.
    const SAME_JSON: &[&str] = &["f4", "f8", "u", "by"];
    // Debezium's numbers and strings for numerics (base64 of the unscaled
    // value), dates and times (days, microseconds), intervals
    // (microseconds), zoned timestamps (padded), json (a string), points
    // and bit strings (objects and base64): kept as the record has them.
    // Courier's row of each decoded change: the snapshot's reads are the
    // first inserts, the stream's changes follow in order.
    let initial: BTreeMap<String, Row> = run.courier[..5]
        .iter()
        .map(|c| (rows::key(c), rows::row(c, c.after().unwrap())))
        .collect();
    let mut stream = as_debezium_emits(&run.courier[5..]).into_iter();
    let mut problems = Vec::new();
    for (record, change) in &run.records {
        let Some(c) = change else { continue };
        let want = if c.op() == Op::Read {
            Some(initial[&rows::key(c)].clone())
        } else {
            let (op, key, row) = stream.next().expect("as many changes as Courier's");
            assert_eq!((op, key), (c.op(), rows::key(c)));
            row
        };
        let (Some(after), Some(want)) = (c.after(), want) else {
            continue;
        };
        let payload = record.payload().unwrap();
        let decoded = rows::row(c, after);
        // Every column holds what the record holds.
        for (column, value) in &decoded {
            if value.to_json() != payload["after"][column] {
                problems.push(format!(
                    "{column} of {}: {} is not the record's {}",
                    rows::key(c),
                    show(value),
                    payload["after"][column]
                ));
            }
        }
        for column in SAME {
            if !same(&decoded[*column], &want[*column]) {
                problems.push(format!(
                    "{column} of {}: {} is not Courier's {}",
                    rows::key(c),
                    show(&decoded[*column]),
                    show(&want[*column])
                ));
            }
        }
        for column in SAME_JSON {
            if rows::json(&decoded[*column]) != rows::json(&want[*column]) {
                problems.push(format!(
                    "{column} of {}: {} has not the JSON of Courier's {}",
                    rows::key(c),
                    show(&decoded[*column]),
                    show(&want[*column])
                ));
            }
        }
    }
    assert!(
        stream.next().is_none(),
        "every change of Courier's was decoded"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Folded, the rows have the table's keys and, where the JSON tells,
    // its values.
    let mut store = Store::default();
    store.apply_all(run.records.iter().filter_map(|(_, c)| c.as_ref()));
    let folded = store.rows();
    assert_eq!(
        folded.keys().collect::<Vec<_>>(),
        run.table.keys().collect::<Vec<_>>()
    );
    for (key, want) in &run.table {
        for column in SAME {
            assert!(
                same(&folded[key][*column], &want[*column]),
                "final row {key}, {column}"
            );
        }
    }
    // The key is the record key's field; integers are bigint, the rest
    // as their JSON kind.
    let last = run
        .records
        .iter()
        .rev()
        .find_map(|(_, c)| c.as_ref())
        .unwrap();
    let rel = last.relation();
    let ty = |name: &str| rel.columns[rel.column_index(name).unwrap()].pg_type.clone();
    assert!(rel.columns[0].is_key && rel.columns[0].name == "id");
    assert_eq!(ty("i2"), PgType::Int8);
    assert_eq!(ty("t"), PgType::Text);
    assert_eq!(ty("ia"), PgType::Array(Box::new(PgType::Int8)));
    assert_eq!(ty("n"), PgType::Jsonb, "VariableScaleDecimal is an object");
    assert_eq!(ty("d"), PgType::Int8, "days since 1970");
}

/// The records of Debezium's topic of a table `v` after: a transaction T
/// that updates rows 1 and 2 and stays open while Debezium's slot becomes
/// consistent and its snapshot reads the table, then commits; a second
/// transaction on row 1. With the table's final rows; `None` when the
/// snapshot did not come while T was open.
async fn open_across_snapshot() -> Option<(Vec<Owned>, BTreeMap<String, Row>)> {
    let db = "kd_dbz_versions";
    let prefix = unique(db);
    let client = pg::fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE v (id int PRIMARY KEY, n int); CREATE TABLE blocker (x int);
             INSERT INTO v VALUES (1, 0), (2, 0), (3, 0)",
        )
        .await
        .unwrap();
    let admin = pg::connect("postgres").await;
    // PostgreSQL makes a logical slot consistent in steps, each waiting for
    // the transactions running at the step before: B1 holds the first,
    // B2 the second; T starts between them, so the slot decodes T whole
    // but becomes consistent (the snapshot's position) while T is open.
    let b1 = pg::connect(db).await;
    b1.batch_execute("BEGIN; INSERT INTO blocker VALUES (1)")
        .await
        .unwrap();
    let config = connect::debezium_config(db, &prefix, &["public.v"], json!({}));
    let connector = connect::Connector::start(&prefix, &config).await;
    let started = std::time::Instant::now();
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&prefix],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        connector.assert_not_failed(&connector.status().await);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Debezium created no slot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log_running_transactions = || async {
        // What the slot waits for: a record of the running transactions
        // (PostgreSQL writes one at each checkpoint).
        admin.batch_execute("CHECKPOINT").await.unwrap();
    };
    let b2 = pg::connect(db).await;
    b2.batch_execute("BEGIN; INSERT INTO blocker VALUES (2)")
        .await
        .unwrap();
    b1.batch_execute("COMMIT").await.unwrap();
    log_running_transactions().await;
    let t = pg::connect(db).await;
    t.batch_execute("BEGIN; UPDATE v SET n = 100 WHERE id = 1; UPDATE v SET n = 100 WHERE id = 2")
        .await
        .unwrap();
    b2.batch_execute("COMMIT").await.unwrap();
    let topic = format!("{prefix}.public.v");
    let started = std::time::Instant::now();
    let mut snapshot = true;
    while kafka::read(&topic).await.len() < 3 {
        if started.elapsed() > Duration::from_secs(30) {
            snapshot = false;
            break;
        }
        log_running_transactions().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The snapshot read the rows without T's writes; T commits after it.
    t.batch_execute("COMMIT").await.unwrap();
    let outcome = if snapshot {
        client
            .batch_execute("UPDATE v SET n = 200 WHERE id = 1; INSERT INTO v VALUES (999, 0)")
            .await
            .unwrap();
        let records = kafka::wait_for(&topic, "the last insert", Duration::from_secs(60), |r| {
            r.iter()
                .any(|r| r.payload().is_some_and(|p| p["after"]["id"] == 999))
        })
        .await;
        let table: BTreeMap<String, Row> = pg::snapshot_rows(db, "public.v")
            .await
            .iter()
            .map(|c| (rows::key(c), rows::row(c, c.after().unwrap())))
            .collect();
        Some((records, table))
    } else {
        None
    };
    connector.delete().await;
    pg::drop_slot(&prefix).await;
    kafka::delete_topics(&prefix).await;
    pg::drop_db(db).await;
    outcome
}

/// A transaction that wrote a row before the snapshot's position and
/// committed after it (its change LSN is below the snapshot's), and a
/// second transaction on the same row: folded by the version rule, and
/// replayed from any offset, the records give PostgreSQL's rows. With the
/// change LSN as the version, the open transaction's write would lose to
/// the snapshot's older row.
#[tokio::test(flavor = "multi_thread")]
async fn debezium_snapshot_and_a_transaction_open_across_it_keep_the_newest_rows() {
    if !services().await {
        return;
    }
    // Another transaction of the shared cluster open across the slot's
    // creation can hold the slot until T ends; then the attempt is over,
    // and the next one has new names.
    let mut attempts = 0;
    let (records, table) = loop {
        attempts += 1;
        if let Some(done) = open_across_snapshot().await {
            break done;
        }
        assert!(
            attempts < 3,
            "in {attempts} attempts, Debezium took no snapshot while T was open: other transactions of the cluster kept the slot from becoming consistent"
        );
    };

    let mut decoder = Decoder::new(Format::JsonSchema);
    let changes: Vec<Change> = records
        .iter()
        .filter_map(|r| r.decode(&mut decoder).unwrap())
        .collect();
    // The dangerous case happened: T's change LSNs are below the snapshot's.
    let lsn = |r: &Owned| r.payload().unwrap()["source"]["lsn"].as_u64().unwrap();
    let snapshot_lsn = records
        .iter()
        .find(|r| r.payload().unwrap()["op"] == "r")
        .map(lsn)
        .unwrap();
    let t_records: Vec<&Owned> = records
        .iter()
        .filter(|r| r.payload().unwrap()["after"]["n"] == 100)
        .collect();
    assert_eq!(t_records.len(), 2);
    for r in &t_records {
        assert!(
            lsn(r) < snapshot_lsn,
            "T's change at {} is not below the snapshot's position {snapshot_lsn}",
            lsn(r)
        );
    }

    // Folded in order, and replayed from every offset after a full pass,
    // the records give PostgreSQL's rows.
    let mut store = Store::default();
    store.apply_all(&changes);
    assert_eq!(store.rows(), table, "folded by the version rule");
    for from in 0..changes.len() {
        let mut replayed = store.clone();
        replayed.apply_all(&changes[from..]);
        assert_eq!(replayed.rows(), table, "replayed from change {from}");
    }
    // The snapshot's rows rank below every change; T's two changes and
    // U's are ordered by commit.
    let version = |id: i64, n: i64| {
        changes
            .iter()
            .find(|c| {
                c.after()
                    .is_some_and(|a| a[0] == Value::Int(id) && a[1] == Value::Int(n))
            })
            .unwrap()
            .version()
    };
    assert!(version(1, 0) < version(1, 100) && version(1, 100) < version(1, 200));

    // With each record's change LSN as its version, T's write of row 2
    // would lose to the snapshot's older row.
    let mut naive = Store::default();
    for (r, c) in records.iter().zip(
        records
            .iter()
            .map(|r| r.decode(&mut Decoder::new(Format::JsonSchema))),
    ) {
        let Some(c) = c.unwrap() else { continue };
        let c = Change::new(
            c.relation().clone(),
            c.op(),
            c.before().map(<[Value]>::to_vec),
            c.after().map(<[Value]>::to_vec),
            courier_core::Lsn(lsn(r)),
            c.xid(),
            c.commit_time_us(),
        )
        .unwrap();
        naive.apply(&c);
    }
    assert_eq!(
        naive.rows()["[2]"]["n"],
        Value::Int(0),
        "the change LSN is not a safe version"
    );
}
