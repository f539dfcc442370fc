use courier_core::{PgType, Value};

use super::*;

fn dec(ty: &PgType, text: &str) -> Value {
    decode_text(ty, text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn arr(ty: PgType) -> PgType {
    PgType::Array(Box::new(ty))
}

const NUMERIC: PgType = PgType::Numeric {
    precision: None,
    scale: None,
};

#[test]
fn decodes_numbers() {
    assert_eq!(dec(&PgType::Int2, "-32768"), Value::Int(-32768));
    assert_eq!(
        dec(&PgType::Int8, "9223372036854775807"),
        Value::Int(i64::MAX)
    );
    assert_eq!(dec(&PgType::Oid, "4294967295"), Value::Int(4294967295));
    assert_eq!(dec(&PgType::Float4, "0.1"), Value::Float4(0.1));
    assert_eq!(
        dec(&PgType::Float8, "-1.2345678901234567e-300"),
        Value::Float8(-1.2345678901234567e-300)
    );
    assert_eq!(
        dec(&PgType::Float8, "Infinity"),
        Value::Float8(f64::INFINITY)
    );
    assert_eq!(
        dec(&PgType::Float4, "-Infinity"),
        Value::Float4(f32::NEG_INFINITY)
    );
    assert!(matches!(dec(&PgType::Float8, "NaN"), Value::Float8(f) if f.is_nan()));
    let big = "-123456789012345678901234567890123456789.000000000000000000001";
    assert_eq!(dec(&NUMERIC, big), Value::Numeric(big.into()));
    assert_eq!(dec(&NUMERIC, "NaN"), Value::Numeric("NaN".into()));
    assert_eq!(
        dec(&NUMERIC, "-Infinity"),
        Value::Numeric("-Infinity".into())
    );
    assert_eq!(dec(&NUMERIC, "0.00"), Value::Numeric("0.00".into()));
}

#[test]
fn rejects_bad_scalars_without_quoting_them() {
    let e = decode_text(&PgType::Int4, "secret-12x").unwrap_err();
    assert_eq!(e.type_name, "int4");
    assert!(!e.to_string().contains("secret"));
    for (ty, bad) in [
        (NUMERIC, "1e5"),
        (NUMERIC, "."),
        (PgType::Bool, "yes"),
        (PgType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"),
        (PgType::Date, "2024-13-01"),
        (PgType::Timestamp, "2024-01-02T03:04:05"),
        (PgType::TimestampTz, "2024-01-02 03:04:05"),
        (PgType::Time, "3:04:05"),
        (PgType::Bytea, "\\x0"),
        (PgType::Bytea, "\\q"),
    ] {
        assert!(decode_text(&ty, bad).is_err(), "{ty:?} accepted {bad:?}");
    }
}

#[test]
fn decodes_text_like_types() {
    assert_eq!(dec(&PgType::Bool, "t"), Value::Bool(true));
    assert_eq!(dec(&PgType::Bool, "f"), Value::Bool(false));
    assert_eq!(
        dec(&PgType::Text, "日本語 \"q\" \\ 🎉"),
        text("日本語 \"q\" \\ 🎉")
    );
    assert_eq!(dec(&PgType::Enum, "happy"), text("happy"));
    assert_eq!(
        dec(&PgType::Interval, "P1Y2M3DT4H5M6.5S"),
        text("P1Y2M3DT4H5M6.5S")
    );
    assert_eq!(
        dec(&PgType::Other, "192.168.0.1/24"),
        text("192.168.0.1/24")
    );
    assert_eq!(
        dec(&PgType::Uuid, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
    assert_eq!(
        dec(&PgType::Jsonb, r#"{"a": [1, "é"]}"#),
        Value::Json(r#"{"a": [1, "é"]}"#.into())
    );
}

#[test]
fn decodes_bytea_in_both_forms() {
    assert_eq!(dec(&PgType::Bytea, "\\x"), Value::Bytes(vec![]));
    assert_eq!(
        dec(&PgType::Bytea, "\\xDEADbeef00"),
        Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef, 0])
    );
    assert_eq!(
        dec(&PgType::Bytea, "ab\\000\\\\\\377"),
        Value::Bytes(vec![b'a', b'b', 0, b'\\', 0xff])
    );
}

#[test]
fn decodes_dates_and_times() {
    assert_eq!(
        dec(&PgType::Date, "2024-02-29"),
        Value::Date("2024-02-29".into())
    );
    assert_eq!(
        dec(&PgType::Date, "infinity"),
        Value::Date("infinity".into())
    );
    assert_eq!(
        dec(&PgType::Date, "-infinity"),
        Value::Date("-infinity".into())
    );
    assert_eq!(
        dec(&PgType::Date, "0044-03-15 BC"),
        Value::Date("0044-03-15 BC".into())
    );
    assert_eq!(
        dec(&PgType::Date, "10000-01-01"),
        Value::Date("10000-01-01".into())
    );
    assert_eq!(
        dec(&PgType::Time, "23:59:59.999999"),
        Value::Time("23:59:59.999999".into())
    );
    assert_eq!(
        dec(&PgType::Time, "24:00:00"),
        Value::Time("24:00:00".into())
    );
    assert_eq!(
        dec(&PgType::TimeTz, "12:00:00+05:30"),
        Value::Time("12:00:00+05:30".into())
    );
    assert_eq!(
        dec(&PgType::Timestamp, "2024-01-02 03:04:05.123456"),
        Value::Timestamp("2024-01-02T03:04:05.123456".into())
    );
    assert_eq!(
        dec(&PgType::Timestamp, "0001-01-01 00:00:00 BC"),
        Value::Timestamp("0001-01-01T00:00:00 BC".into())
    );
    assert_eq!(
        dec(&PgType::Timestamp, "-infinity"),
        Value::Timestamp("-infinity".into())
    );
}

#[test]
fn converts_timestamptz_to_utc() {
    let tz = |s| dec(&PgType::TimestampTz, s);
    let utc = |s: &str| Value::TimestampTz(s.into());
    assert_eq!(
        tz("2024-01-02 03:04:05.123+00"),
        utc("2024-01-02T03:04:05.123Z")
    );
    assert_eq!(tz("2024-01-02 03:04:05+00"), utc("2024-01-02T03:04:05Z"));
    assert_eq!(
        tz("2024-01-02 03:04:05.000001+05:30"),
        utc("2024-01-01T21:34:05.000001Z")
    );
    assert_eq!(tz("2023-12-31 23:30:00-01"), utc("2024-01-01T00:30:00Z"));
    assert_eq!(tz("2024-02-28 23:00:00-02"), utc("2024-02-29T01:00:00Z"));
    assert_eq!(
        tz("1900-01-01 00:00:00+00:09:21"),
        utc("1899-12-31T23:50:39Z")
    );
    assert_eq!(tz("0001-01-01 00:30:00+01"), utc("0001-12-31T23:30:00Z BC"));
    assert_eq!(
        tz("0044-03-15 12:00:00+00 BC"),
        utc("0044-03-15T12:00:00Z BC")
    );
    assert_eq!(tz("infinity"), utc("infinity"));
}

#[test]
fn decodes_arrays() {
    let ints = arr(PgType::Int4);
    assert_eq!(dec(&ints, "{}"), Value::Array(vec![]));
    assert_eq!(
        dec(&ints, "{1,NULL,-3}"),
        Value::Array(vec![Value::Int(1), Value::Null, Value::Int(-3)])
    );
    assert_eq!(
        dec(&ints, "{{1,2},{NULL,4}}"),
        Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Int(2)]),
            Value::Array(vec![Value::Null, Value::Int(4)]),
        ])
    );
    assert_eq!(
        dec(&ints, "[0:1]={7,8}"),
        Value::Array(vec![Value::Int(7), Value::Int(8)])
    );
    assert_eq!(
        dec(&ints, "[1:1][-2:-1]={{7,8}}"),
        Value::Array(vec![Value::Array(vec![Value::Int(7), Value::Int(8)])])
    );
    let texts = arr(PgType::Text);
    assert_eq!(
        dec(
            &texts,
            r#"{"a,b","say \"hi\"","back\\slash","NULL",NULL,"",plain,日本,"{}"}"#
        ),
        Value::Array(vec![
            text("a,b"),
            text("say \"hi\""),
            text("back\\slash"),
            text("NULL"),
            Value::Null,
            text(""),
            text("plain"),
            text("日本"),
            text("{}"),
        ])
    );
    assert_eq!(dec(&texts, r"{a\,b}"), Value::Array(vec![text("a,b")]));
    assert_eq!(
        dec(&arr(NUMERIC), "{1.5,NaN,-Infinity}"),
        Value::Array(vec![
            Value::Numeric("1.5".into()),
            Value::Numeric("NaN".into()),
            Value::Numeric("-Infinity".into()),
        ])
    );
    assert_eq!(
        dec(
            &arr(PgType::TimestampTz),
            r#"{"2024-01-02 03:04:05.5+00",infinity}"#
        ),
        Value::Array(vec![
            Value::TimestampTz("2024-01-02T03:04:05.5Z".into()),
            Value::TimestampTz("infinity".into()),
        ])
    );
    assert_eq!(
        dec(&arr(PgType::Jsonb), r#"{"{\"a\": 1}",null}"#),
        Value::Array(vec![Value::Json(r#"{"a": 1}"#.into()), Value::Null])
    );
    assert_eq!(
        dec(&arr(PgType::Bytea), r#"{"\\x00ff"}"#),
        Value::Array(vec![Value::Bytes(vec![0, 255])])
    );
}

#[test]
fn box_arrays_use_semicolons() {
    let column = courier_core::Column {
        name: "b".into(),
        type_oid: 1020,
        type_modifier: -1,
        type_name: "box[]".into(),
        pg_type: arr(PgType::Other),
        nullable: true,
        is_key: false,
    };
    assert_eq!(
        decode_column(&column, "{(1,1),(0,0);(3,3),(2,2)}").unwrap(),
        Value::Array(vec![text("(1,1),(0,0)"), text("(3,3),(2,2)")])
    );
}

#[test]
fn rejects_malformed_arrays() {
    for bad in [
        "",
        "{",
        "{1,2",
        "{1,,2}",
        "{1}x",
        "{\"a}",
        "{a\"b}",
        "[0:1]{1}",
        "{{{{{{{{{1}}}}}}}}}",
    ] {
        assert!(
            decode_text(&arr(PgType::Text), bad).is_err(),
            "accepted {bad:?}"
        );
    }
    let e = decode_text(&arr(PgType::Int4), "{1,x}").unwrap_err();
    assert_eq!(e.type_name, "int4[]");
}
