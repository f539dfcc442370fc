//! Courier's own Kafka sink, in both formats, on the test broker: the
//! changes Courier captures from a table with a column of every type (a
//! snapshot through its binary COPY, then the stream through its pgoutput
//! decoder) go through the sink, and decoding the topic gives the same
//! changes back: the same ops, keys, versions (the commit LSN), and values
//! (with `json-schema`, except where Debezium's record types lose
//! information; with `json`, wherever the JSON tells the type).

mod support;

use std::collections::BTreeMap;

use courier_core::{Batch, Change, Op, Sink, Value};
use courier_kafka::{Decoder, Format};
use courier_sinks::envelope::SourceInfo;
use courier_sinks::kafka::KafkaSinkConfig;
use support::kafka::{self, Owned};
use support::rows::{self, same, show, Row};
use support::{pg, skip::skip, unique};

/// The type test's columns, with values both formats can carry (`numeric`
/// NaN and multi-dimensional arrays have no `json-schema` form).
const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(10,2) CHECK (VALUE >= 0);
CREATE TABLE every_type (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, np numeric(12,3),
  p price, t text, vc varchar(10), c char(3), by bytea, u uuid, d date, tm time, ttz timetz, ts timestamp,
  tstz timestamptz, iv interval, j json, jb jsonb, m mood, ia int[], ta text[], na numeric[], inet_c inet,
  cidr_c cidr, mac macaddr, pt point, moods mood[], tm3 time(3), ts3 timestamp(3), bits bit(3), mon money
);
"#;

fn inserts(base: i32) -> String {
    format!(
        r#"
INSERT INTO every_type VALUES ({a}, true, -32768, 2147483647, 9223372036854775807, 1.5, 'NaN',
  12345678901234567890.123456789, -1.5, 9.99, E'h\u00e9llo "w\u00f6rld" \n tab\t \u6771\u4eac \\ end', 'abc', 'ab',
  '\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'infinity', '13:45:06.123456', '13:45:06+02',
  '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.5+05:30', '1 year 2 months 3 days 04:05:06',
  '{{"a": [1, 2.5, null]}}', '{{"b": {{"c": true}}}}', 'happy', '{{1,NULL,3}}', '{{"a,b","c\"d",NULL,""}}',
  '{{1.50,NULL,-4}}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '(1.5,2)', '{{sad,happy}}',
  '13:45:06.5', '1969-07-20 20:17:40.123', '101', 9.99);
INSERT INTO every_type (id) VALUES ({b});
INSERT INTO every_type (id, f4, f8, n, np, d, tm, ts, tstz, ia, ta, j, iv) VALUES
  ({c}, '-Infinity', 'Infinity', 1.50, 1.0, '-infinity', '24:00:00', 'infinity', '-infinity', '{{}}', '{{}}', '[]', '0');
INSERT INTO every_type (id, d, ts, tstz, n, np, iv, tm, ts3) VALUES
  ({e}, '0044-03-15 BC', '0044-03-15 12:00:00 BC', '0044-03-15 12:00:00+00 BC', 0.0000001, -0.001,
   '-1 year -2 mons +3 days -04:05:06.5', '00:00:00.000001', '1969-12-31 23:59:59.999');
"#,
        a = base + 1,
        b = base + 2,
        c = base + 3,
        e = base + 4,
    )
}

const STREAM: &str = r#"
UPDATE every_type SET i4 = 7, t = NULL, n = 2.50 WHERE id = 11;
UPDATE every_type SET t = 'back' WHERE id = 12;
DELETE FROM every_type WHERE id = 13;
UPDATE every_type SET id = 20 WHERE id = 14;
TRUNCATE every_type;
INSERT INTO every_type (id, t) VALUES (1, 'after the truncate');
"#;

/// What Courier captured, and each format's topic decoded.
struct Captured {
    changes: Vec<Change>,
    /// Per format: the topic's records and what the decoder made of them.
    topics: BTreeMap<&'static str, Vec<(Owned, Option<Change>)>>,
}

async fn capture() -> Option<Captured> {
    if !pg::available().await {
        skip(
            "no PostgreSQL at COURIER_TEST_PG or 127.0.0.1:55432",
            "run dev/pg.sh start",
        );
        return None;
    }
    if !kafka::available() {
        skip(
            "no Kafka broker at COURIER_TEST_KAFKA or 127.0.0.1:59092",
            "run dev/kafka.sh start",
        );
        return None;
    }
    let db = "kd_courier_sink";
    let client = pg::fresh_db(db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    client.batch_execute(&inserts(0)).await.unwrap();
    let snapshot = pg::snapshot_rows(db, "public.every_type").await;
    let mut reference =
        pg::Reference::start(db, "kd_courier_sink_ref", &["public.every_type"]).await;
    client.batch_execute(&inserts(10)).await.unwrap();
    client.batch_execute(STREAM).await.unwrap();
    let mut changes = snapshot;
    changes.extend(reference.changes().await);
    drop(reference);
    pg::drop_db(db).await;

    let source = SourceInfo {
        name: "courier".into(),
        database: db.into(),
    };
    let mut topics = BTreeMap::new();
    for format in ["json-schema", "json"] {
        let prefix = unique(&format!("kd_sink_{}", format.replace('-', "_")));
        let config: KafkaSinkConfig = toml::from_str(&format!(
            "brokers = {:?}\ntopic_prefix = {prefix:?}\nformat = {format:?}",
            kafka::brokers()
        ))
        .unwrap();
        let mut sink = courier_sinks::kafka::build("bus", config, &source)
            .await
            .unwrap_or_else(|e| panic!("build the {format} sink: {e}"));
        sink.apply(&Batch {
            changes: changes.clone(),
            through: None,
        })
        .await
        .unwrap_or_else(|e| panic!("the {format} sink: {e}"));
        sink.close().await.unwrap();
        let records = kafka::read(&format!("{prefix}.public.every_type")).await;
        kafka::delete_topics(&prefix).await;
        let mut decoder = Decoder::new(Format::Auto);
        let decoded = records
            .into_iter()
            .map(|r| {
                let c = r
                    .decode(&mut decoder)
                    .unwrap_or_else(|e| panic!("{format}: {e}"));
                (r, c)
            })
            .collect();
        topics.insert(format, decoded);
    }
    Some(Captured { changes, topics })
}

/// Courier's changes as the sink writes them: a primary-key change as the
/// delete of the old key and the create of the new one.
fn as_written(changes: &[Change]) -> Vec<(Op, String, &Change)> {
    let mut out = Vec::new();
    for c in changes {
        let rel = c.relation();
        let old_key = c.before().filter(|b| {
            c.op() == Op::Update
                && rel
                    .key_indexes()
                    .any(|i| Some(&b[i]) != c.after().map(|a| &a[i]))
        });
        match old_key {
            Some(b) => {
                let k: Vec<serde_json::Value> = rel.key_indexes().map(|i| b[i].to_json()).collect();
                out.push((Op::Delete, serde_json::Value::Array(k).to_string(), c));
                out.push((Op::Insert, rows::key(c), c));
            }
            None if c.op() == Op::Truncate => out.push((Op::Truncate, String::new(), c)),
            None => out.push((c.op(), rows::key(c), c)),
        }
    }
    out
}

/// The value decoding a `json-schema` record gives for a value of
/// Courier's: the same, but a `timetz` in UTC (Connect's `ZonedTime`) and
/// an unconstrained `numeric` without trailing zeros
/// (`VariableScaleDecimal`, as Debezium writes it).
fn json_schema_value(column: &str, v: &Value) -> Value {
    match (column, v) {
        ("ttz", Value::Time(t)) => {
            let at = t.rfind(['+', '-']).unwrap();
            let (clock, zone) = t.split_at(at);
            let hours: i64 = zone.parse().unwrap();
            let h: i64 = clock[..2].parse().unwrap();
            Value::Time(format!(
                "{:02}{}+00",
                (h - hours).rem_euclid(24),
                &clock[2..]
            ))
        }
        ("n", Value::Numeric(t)) | ("na", Value::Numeric(t)) if t.contains('.') => {
            Value::Numeric(t.trim_end_matches('0').trim_end_matches('.').to_owned())
        }
        ("na", Value::Array(items)) => {
            Value::Array(items.iter().map(|i| json_schema_value("na", i)).collect())
        }
        _ => v.clone(),
    }
}

/// Whether a value's JSON tells its variant, so a `json` record decodes to
/// it: booleans, integers, finite doubles, text, JSON objects, arrays of
/// those.
fn json_tells(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Text(_) => true,
        Value::Float8(f) => f.is_finite(),
        Value::Json(j) => j.starts_with('{'),
        Value::Array(items) => {
            !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.is_null() || matches!(i, Value::Int(_) | Value::Text(_)))
        }
        _ => false,
    }
}

fn check(format: &str, captured: &Captured) {
    let decoded = &captured.topics[format];
    let expected = as_written(&captured.changes);
    let changes: Vec<&Change> = decoded.iter().filter_map(|(_, c)| c.as_ref()).collect();
    let ours: Vec<(Op, String)> = changes
        .iter()
        .map(|c| {
            (
                c.op(),
                if c.op() == Op::Truncate {
                    String::new()
                } else {
                    rows::key(c)
                },
            )
        })
        .collect();
    let theirs: Vec<(Op, String)> = expected.iter().map(|(o, k, _)| (*o, k.clone())).collect();
    assert_eq!(ours, theirs, "{format}: the changes");
    // Tombstones follow their deletes.
    let tombstones = decoded.iter().filter(|(r, _)| r.value.is_none()).count();
    assert_eq!(
        tombstones, 2,
        "{format}: the tombstones of a delete and a key change"
    );

    let mut problems = Vec::new();
    for (c, (_, key, original)) in changes.iter().zip(&expected) {
        if (c.version(), c.xid(), c.commit_time_us())
            != (
                original.version(),
                original.xid(),
                original.commit_time_us(),
            )
        {
            problems.push(format!(
                "{} of {key}: version, xid or commit time differ",
                c.op().code()
            ));
        }
        let (Some(after), Some(want)) = (c.after(), original.after()) else {
            continue;
        };
        let got: Row = rows::row(c, after);
        let want: Row = rows::row(original, want);
        for (column, w) in &want {
            let g = &got[column];
            let ok = match format {
                "json-schema" => same(g, &json_schema_value(column, w)),
                _ => rows::json(g) == rows::json(w) && (!json_tells(w) || same(g, w)),
            };
            if !ok {
                problems.push(format!(
                    "{} of {key}: {column}: got {}, Courier's {}",
                    c.op().code(),
                    show(g),
                    show(w)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{format}:\n{}", problems.join("\n"));

    // A tombstone read without its delete (the delete compacted away, or a
    // worker starting between them) deletes its key at the delete's version,
    // which Courier's records carry in a header.
    let at = decoded.iter().position(|(r, _)| r.value.is_none()).unwrap();
    let (tombstone, _) = &decoded[at];
    let (_, delete) = &decoded[at - 1];
    let mut fresh = Decoder::new(Format::Auto);
    decoded[0].0.decode(&mut fresh).unwrap();
    let lone = tombstone.decode(&mut fresh).unwrap().expect("a delete");
    let delete = delete.as_ref().unwrap();
    assert_eq!(
        (lone.op(), rows::key(&lone), lone.version()),
        (Op::Delete, rows::key(delete), delete.version())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn courier_sink_records_decode_to_the_captured_changes() {
    let Some(captured) = capture().await else {
        return;
    };
    check("json-schema", &captured);
    check("json", &captured);
}
