//! Every type of the mapping, with edge values, through both paths (the
//! snapshot's COPY and the stream's pgoutput), compared with what the
//! README's type mapping promises; and a TOASTed value updated without
//! being touched arrives whole.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(10,2) CHECK (VALUE >= 0);
CREATE TABLE every_type (
  id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, np numeric(12,3),
  p price, t text, vc varchar(10), c char(3), by bytea, u uuid, d date, tm time, ttz timetz, ts timestamp,
  tstz timestamptz, iv interval, j json, jb jsonb, m mood, ia int[], ta text[], na numeric[], inet_c inet,
  cidr_c cidr, mac macaddr, pt point, moods mood[], big text
);
ALTER TABLE every_type ALTER COLUMN big SET STORAGE EXTERNAL;
"#;

/// Inserts the edge rows with ids offset by `base`.
fn inserts(base: i32) -> String {
    format!(
        r#"
INSERT INTO every_type VALUES ({a}, true, -32768, 2147483647, 9223372036854775807, 1.5, 'NaN',
  12345678901234567890.123456789, -1.5, 9.99, E'h\u00e9llo "w\u00f6rld" \n tab\t \u6771\u4eac \\ end', 'abc', 'ab',
  '\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'infinity', '13:45:06.123456', '13:45:06+02',
  '2024-02-29 23:59:59.999999', '2024-02-29 23:59:59.5+05:30', '1 year 2 months 3 days 04:05:06',
  '{{"a": [1, 2.5, null]}}', '{{"b": {{"c": true}}}}', 'happy', '{{1,NULL,3}}', '{{"a,b","c\"d",NULL,""}}',
  '{{{{1.5,2}},{{NULL,4}}}}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '(1.5,2)', '{{sad,happy}}',
  repeat('x', 100000));
INSERT INTO every_type (id) VALUES ({b});
INSERT INTO every_type (id, f4, f8, n, d, ts, tstz, ia, ta, j) VALUES
  ({c}, '-Infinity', 'Infinity', 'NaN', '-infinity', 'infinity', '-infinity', '{{}}', '{{}}', '[]');
"#,
        a = base + 1,
        b = base + 2,
        c = base + 3
    )
}

fn expected(id: i32) -> Value {
    match id % 10 {
        1 => json!({
            "id": id, "b": true, "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807i64, "f4": 1.5,
            "f8": "NaN", "n": "12345678901234567890.123456789", "np": "-1.500", "p": "9.99",
            "t": "h\u{e9}llo \"w\u{f6}rld\" \n tab\t \u{6771}\u{4eac} \\ end", "vc": "abc", "c": "ab ",
            "by": "3q2+7w==", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "d": "infinity",
            "tm": "13:45:06.123456", "ttz": "13:45:06+02", "ts": "2024-02-29T23:59:59.999999",
            "tstz": "2024-02-29T18:29:59.5Z", "iv": "P1Y2M3DT4H5M6S", "j": {"a": [1, 2.5, null]},
            "jb": {"b": {"c": true}}, "m": "happy", "ia": [1, null, 3], "ta": ["a,b", "c\"d", null, ""],
            "na": [["1.5", "2"], [null, "4"]], "inet_c": "192.168.0.1/24", "cidr_c": "10.0.0.0/8",
            "mac": "08:00:2b:01:02:03", "pt": "(1.5,2)", "moods": ["sad", "happy"], "big": "x".repeat(100_000)
        }),
        2 => {
            let mut v = json!({"id": id});
            for col in COLUMNS.iter().skip(1) {
                v[*col] = Value::Null;
            }
            v
        }
        _ => {
            let mut v = expected(id - 1);
            v["id"] = json!(id);
            for (k, val) in [
                ("f4", json!("-Infinity")),
                ("f8", json!("Infinity")),
                ("n", json!("NaN")),
                ("d", json!("-infinity")),
                ("ts", json!("infinity")),
                ("tstz", json!("-infinity")),
                ("ia", json!([])),
                ("ta", json!([])),
                ("j", json!([])),
            ] {
                v[k] = val;
            }
            v
        }
    }
}

const COLUMNS: [&str; 33] = [
    "id", "b", "i2", "i4", "i8", "f4", "f8", "n", "np", "p", "t", "vc", "c", "by", "u", "d", "tm",
    "ttz", "ts", "tstz", "iv", "j", "jb", "m", "ia", "ta", "na", "inet_c", "cidr_c", "mac", "pt",
    "moods", "big",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_type_through_snapshot_and_stream() {
    let db = "e2e_types";
    let client = fresh_db(db).await;
    client.batch_execute(SCHEMA).await.unwrap();
    client.batch_execute(&inserts(0)).await.unwrap();
    let dir = scratch("types");
    let mut courier = CourierProc::start(
        &dir,
        &file_config(db, "types", &["public.every_type"], &dir, ""),
    );
    wait_caught_up(&client, "types", Duration::from_secs(60)).await;
    client.batch_execute(&inserts(10)).await.unwrap();
    // Touch another column: the TOASTed `big` is not in the WAL and must be filled.
    client
        .batch_execute("UPDATE every_type SET i4 = 7 WHERE id IN (1, 11)")
        .await
        .unwrap();
    wait_caught_up(&client, "types", Duration::from_secs(60)).await;
    assert!(courier.stop().success(), "{}", courier.log());

    let events: Vec<Value> = std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |id: i32, op: &str| {
        events
            .iter()
            .find(|e| e["op"] == op && e["after"]["id"] == id)
            .map(|e| e["after"].clone())
            .unwrap_or_else(|| panic!("no {op} event for id {id}"))
    };
    for (base, op) in [(0, "r"), (10, "c")] {
        for i in 1..=3 {
            let id = base + i;
            let got = find(id, op);
            let want = expected(id);
            for col in COLUMNS {
                assert_eq!(got[col], want[col], "id {id} ({op}), column {col}");
            }
        }
    }
    for id in [1, 11] {
        let mut want = expected(id);
        want["i4"] = json!(7);
        assert_eq!(
            find(id, "u"),
            want,
            "update of id {id} with an unchanged TOASTed column"
        );
    }
    drop_db(db).await;
}
