//! The binary forms the snapshot reads decode to exactly the values their
//! text forms decode to, over thousands of generated edge values per type,
//! against a real PostgreSQL (`COURIER_TEST_PG`, default: the `dev/pg.sh`
//! cluster).

use bytes::Bytes;
use courier_core::{Column, PgType};
use courier_postgres::catalog::SESSION_OPTIONS;
use courier_postgres::types::binary::BinaryForm;
use courier_postgres::types::{copy::split_row, decode_column};
use futures_util::StreamExt;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::NoTls;

const DEFAULT_URL: &str = "postgres://postgres:postgres@127.0.0.1:55432/postgres";

/// Each column: its name, type OID and the expression generating it from
/// `g` (1..=ROWS); every fifth row is NULL in each column.
const COLUMNS: &[(&str, u32, &str)] = &[
    ("b", 16, "g % 2 = 0"),
    ("i2", 21, "(g * 37 % 65536 - 32768)::int2"),
    ("i4", 23, "(g::int8 * 2654435761 % 4294967296 - 2147483648)::int4"),
    ("i8", 20, "(g::numeric * 9223372036854775 % 18446744073709551615 - 9223372036854775807)::int8"),
    ("o", 26, "(g::int8 * 1000003 % 4294967295)::oid"),
    ("f4", 700, "(CASE g % 7 WHEN 0 THEN 'NaN' WHEN 1 THEN '-Infinity' ELSE (g * 1.1e-3 - 1)::text END)::float4"),
    ("f8", 701, "(CASE g % 7 WHEN 0 THEN 'Infinity' ELSE (sin(g) * 10 ^ (g % 40 - 20))::text END)::float8"),
    ("n", 1700, "CASE g % 11 WHEN 0 THEN 'NaN' WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity' WHEN 3 THEN 0 WHEN 4 THEN 0.000 ELSE round((g - 2500) * 1.23456789::numeric * 10::numeric ^ (g % 30 - 15), g % 20) END"),
    ("t", 25, "repeat(chr(g % 300 + 32), g % 5) || E'\\t\\n\\\\ é東' || g"),
    ("vc", 1043, "left(md5(g::text), g % 32)"),
    ("bc", 1042, "left(md5(g::text), g % 6)::char(5)"),
    ("nm", 19, "('n' || g)::name"),
    ("by", 17, "decode(md5(g::text), 'hex')"),
    ("u", 2950, "md5(g::text)::uuid"),
    ("d", 1082, "CASE g % 97 WHEN 0 THEN 'infinity'::date WHEN 1 THEN '-infinity'::date ELSE '4713-01-01 BC'::date + g * 1237 END"),
    ("ts", 1114, "CASE g % 97 WHEN 0 THEN 'infinity'::timestamp ELSE '4000-01-01 00:00:00 BC'::timestamp + g * interval '1234567.891234 seconds' * 200 END"),
    ("tz", 1184, "CASE g % 97 WHEN 0 THEN '-infinity'::timestamptz ELSE '1500-06-30 12:00:00.5+03'::timestamptz + g * interval '98765.4321 seconds' * 1300 END"),
    ("j", 114, "json_build_object('g', g, 's', md5(g::text), 'a', json_build_array(g, null, true))"),
    ("jb", 3802, "jsonb_build_object('g', g, 'x', g * 0.5, 'nested', jsonb_build_object('k', 'é'))"),
];
const ROWS: i64 = 5000;

/// The raw binary form of any value.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn column(name: &str, oid: u32) -> Column {
    Column {
        name: name.to_owned(),
        type_oid: oid,
        type_modifier: -1,
        type_name: String::new(),
        pg_type: PgType::from_builtin_oid(oid).expect("a built-in type"),
        nullable: true,
        is_key: false,
    }
}

#[tokio::test]
async fn binary_forms_decode_to_the_text_forms_values() {
    let url = std::env::var("COURIER_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let mut config: tokio_postgres::Config = url.parse().expect("COURIER_TEST_PG is a URL");
    config.options(SESSION_OPTIONS);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("connect to PostgreSQL (start it with dev/pg.sh start)");
    tokio::spawn(connection);

    let select: Vec<String> = COLUMNS
        .iter()
        .map(|(name, _, expr)| format!("CASE WHEN g % 5 = 0 THEN NULL ELSE {expr} END AS {name}"))
        .collect();
    let sql = format!(
        "SELECT {} FROM generate_series(1, {ROWS}) g ORDER BY g",
        select.join(", ")
    );
    let columns: Vec<Column> = COLUMNS.iter().map(|(n, oid, _)| column(n, *oid)).collect();

    // The text forms, as a text COPY sends them.
    let stream = client
        .copy_out(&format!("COPY ({sql}) TO STDOUT"))
        .await
        .expect("COPY text");
    futures_util::pin_mut!(stream);
    let mut text_rows = Vec::new();
    while let Some(line) = stream.next().await {
        let line: Bytes = line.expect("COPY data");
        let mut fields = Vec::new();
        split_row(&line, &mut fields).expect("a COPY text row");
        let row: Vec<_> = columns
            .iter()
            .zip(fields)
            .map(|(c, f)| f.map(|t| decode_column(c, &t).expect("text decodes")))
            .collect();
        text_rows.push(row);
    }
    assert_eq!(text_rows.len() as i64, ROWS);

    // The binary forms, as a binary COPY sends them (the same bytes a
    // binary result row holds).
    let rows = client.query(&sql, &[]).await.expect("binary rows");
    let mut compared = 0;
    for (n, (row, text_row)) in rows.iter().zip(&text_rows).enumerate() {
        for (i, c) in columns.iter().enumerate() {
            let raw: Option<Raw> = row.get(i);
            let binary = raw.map(|r| {
                BinaryForm::of(c)
                    .decode(c, &r.0)
                    .unwrap_or_else(|e| panic!("row {n}, column {}: {e}", c.name))
            });
            // Compared in their JSON form, where NaN equals NaN.
            let json = |v: &Option<courier_core::Value>| {
                let mut out = Vec::new();
                if let Some(v) = v {
                    v.write_json(&mut out);
                }
                String::from_utf8(out).expect("JSON is UTF-8")
            };
            assert_eq!(
                binary.as_ref().map(std::mem::discriminant),
                text_row[i].as_ref().map(std::mem::discriminant),
                "row {n}, column {}",
                c.name
            );
            assert_eq!(
                json(&binary),
                json(&text_row[i]),
                "row {n}, column {}",
                c.name
            );
            compared += usize::from(binary.is_some());
        }
    }
    assert!(compared > (ROWS as usize) * COLUMNS.len() * 3 / 4);
}
