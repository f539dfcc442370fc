//! The pgoutput decoder against a real PostgreSQL: `COURIER_TEST_PG`
//! (default: the `dev/pg.sh` cluster) names it. The server needs
//! `wal_level=logical`.
//!
//! The pgoutput bytes come from `pg_logical_slot_get_binary_changes` on a
//! temporary slot, exactly what the walsender would send.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use courier_core::{Change, Op, OutboxSource, PgType, Relation, TableId, Value};
use courier_postgres::catalog::{Catalog, SESSION_OPTIONS};
use courier_postgres::pgoutput::message::{self, Message, TupleValue};
use courier_postgres::pgoutput::{DecodeError, DecodedEvent, Decoder, OutboxSources};
use courier_postgres::types;
use tokio_postgres::{Client, NoTls};

const DEFAULT_URL: &str = "postgres://postgres:postgres@127.0.0.1:55432/postgres";

/// One test's schema, publication and temporary slot (dropped with the
/// connection, so a failed test leaves no slot retaining WAL).
struct Pg {
    client: Arc<Client>,
    name: String,
}

impl Pg {
    /// Creates schema `name` with `ddl` (which may say `s.` for the schema),
    /// a publication for `tables` and a slot.
    async fn setup(name: &str, ddl: &str, tables: &[&str]) -> Pg {
        let url = std::env::var("COURIER_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string());
        let mut config: tokio_postgres::Config = url.parse().expect("COURIER_TEST_PG is a URL");
        config.options(SESSION_OPTIONS);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .expect("connect to PostgreSQL (start it with dev/pg.sh start)");
        tokio::spawn(connection);
        let tables: Vec<String> = tables.iter().map(|t| format!("{name}.{t}")).collect();
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {name};
                 DROP SCHEMA IF EXISTS {name} CASCADE;
                 CREATE SCHEMA {name};
                 {ddl};
                 CREATE PUBLICATION {name} FOR TABLE {tables};",
                ddl = ddl.replace("s.", &format!("{name}.")),
                tables = tables.join(", "),
            ))
            .await
            .expect("set up schema and publication");
        // A slot cannot be created in a transaction that wrote.
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput', true)",
                &[&name],
            )
            .await
            .expect("create a temporary slot");
        Pg {
            client: Arc::new(client),
            name: name.to_string(),
        }
    }

    async fn sql(&self, sql: &str) {
        self.client
            .batch_execute(&sql.replace("s.", &format!("{}.", self.name)))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The pgoutput messages the slot has accumulated (and consumes them).
    async fn messages(&self) -> Vec<Bytes> {
        let rows = self
            .client
            .query(
                "SELECT data FROM pg_logical_slot_get_binary_changes($1::text::name, NULL, NULL, \
                 'proto_version', '1', 'publication_names', $1::text, 'messages', 'true')",
                &[&self.name],
            )
            .await
            .expect("get changes");
        rows.iter()
            .map(|r| Bytes::from(r.get::<_, Vec<u8>>(0)))
            .collect()
    }

    fn decoder(&self) -> Decoder {
        Decoder::new(Catalog::new(Arc::clone(&self.client)))
    }

    /// Decodes everything the slot has accumulated.
    /// The slot's events, without empty transactions: PostgreSQL 14 sends
    /// a Begin and Commit even for a transaction that changed none of the
    /// publication's tables (15 and later skip them), so the transactions of
    /// tests running beside this one would show up here.
    async fn decode(&self, decoder: &mut Decoder) -> Vec<DecodedEvent> {
        let mut out: Vec<DecodedEvent> = Vec::new();
        for m in self.messages().await {
            if let Some(event) = decoder.decode(m).await.expect("decode") {
                let empty = matches!(event, DecodedEvent::Commit { .. })
                    && matches!(out.last(), Some(DecodedEvent::Begin { .. }));
                if empty {
                    out.pop();
                } else {
                    out.push(event);
                }
            }
        }
        out
    }

    async fn cleanup(self) {
        let _ = self
            .client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {n}; DROP SCHEMA IF EXISTS {n} CASCADE",
                n = self.name
            ))
            .await;
    }
}

fn changes(events: &[DecodedEvent]) -> Vec<&Change> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodedEvent::Change(c) => Some(c),
            _ => None,
        })
        .collect()
}

fn relations(events: &[DecodedEvent]) -> Vec<&Arc<Relation>> {
    events
        .iter()
        .filter_map(|e| match e {
            DecodedEvent::Relation(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// Values compared through their JSON form (so NaN equals NaN).
fn json(row: &[Value]) -> Vec<String> {
    row.iter()
        .map(|v| {
            let mut out = Vec::new();
            v.write_json(&mut out);
            String::from_utf8(out).unwrap()
        })
        .collect()
}

/// The row as PostgreSQL holds it now, rendered by each type's output
/// function and decoded with the same column types.
async fn table_row(pg: &Pg, relation: &Relation, condition: &str) -> Vec<Value> {
    let columns: Vec<String> = relation
        .columns
        .iter()
        .map(|c| {
            format!(
                "CASE WHEN {0} IS NULL THEN NULL ELSE format('%s', {0}) END",
                c.name
            )
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {condition}",
        columns.join(", "),
        relation.id.quoted()
    );
    let row = pg.client.query_one(&sql, &[]).await.expect("read row");
    relation
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| match row.get::<_, Option<&str>>(i) {
            None => Value::Null,
            Some(text) => types::decode_column(c, text).expect("decode table value"),
        })
        .collect()
}

const ALL_TYPES: &str = "
    CREATE TYPE s.mood AS ENUM ('sad', 'ok', 'happy');
    CREATE DOMAIN s.price AS numeric(12,2);
    CREATE TABLE s.t (
        id int8 PRIMARY KEY, b bool, i2 int2, i4 int4 NOT NULL DEFAULT 0, f4 float4, f8 float8,
        n numeric, p s.price, t text, vc varchar(10), ch char(3), by bytea, u uuid,
        d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
        j json, jb jsonb, m s.mood, ia int4[], ta text[], na numeric[], tsa timestamptz[],
        ma s.mood[], ip inet, o oid, bx box[]
    )";

#[tokio::test]
async fn decodes_every_mapped_type_as_postgresql_holds_it() {
    let pg = Pg::setup("courier_dec_types", ALL_TYPES, &["t"]).await;
    pg.sql(
        r#"INSERT INTO s.t VALUES (1, true, -32768, 2147483647, 1.5, 'NaN',
            '-12345678901234567890123456789.123456789', 12.345,
            E'héllo "wörld" 🎉\n\ttab \\ back', 'abc', 'ab', '\xdeadbeef',
            'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'infinity', '23:59:59.999999',
            '12:00:00+05:30', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.5+02',
            '1 year 2 months 3 days 04:05:06', '{"a": [1, 2]}', '{"b": {"c": null}}', 'happy',
            '{1,NULL,3}', '{"a,b","q\"x",NULL,"NULL","", "日本"}', '{{1.5,NULL},{NaN,-2}}',
            '{"2024-01-02 03:04:05+00",infinity}', '{sad,happy}', '192.168.1.5/24',
            4294967295, '{(1,1),(0,0);(3,3),(2,2)}');
           INSERT INTO s.t (id, d, ts, tstz, f4, f8, n)
             VALUES (2, '0044-03-15 BC', '-infinity', '0044-03-15 12:00:00+00 BC',
                     '-Infinity', 'Infinity', 'Infinity');"#,
    )
    .await;
    pg.sql("UPDATE s.t SET i4 = 7, ta = '{}' WHERE id = 1; UPDATE s.t SET id = 3 WHERE id = 2; DELETE FROM s.t WHERE id = 3")
        .await;

    let mut decoder = pg.decoder();
    let events = pg.decode(&mut decoder).await;

    let rels = relations(&events);
    assert_eq!(rels.len(), 1, "one Relation event for the new table");
    let rel = rels[0];
    assert_eq!(rel.id.name, "t");
    let col = |name: &str| &rel.columns[rel.column_index(name).unwrap()];
    assert!(col("id").is_key && !col("id").nullable);
    assert!(!col("i4").is_key && !col("i4").nullable);
    assert!(col("b").nullable);
    assert_eq!(
        col("p").pg_type,
        PgType::Numeric {
            precision: Some(12),
            scale: Some(2)
        }
    );
    assert!(col("p").type_name.ends_with("price"));
    assert_eq!(col("m").pg_type, PgType::Enum);
    assert_eq!(col("ma").pg_type, PgType::Array(Box::new(PgType::Enum)));
    assert_eq!(col("ch").type_name, "character(3)");

    let ch = changes(&events);
    let ops: Vec<Op> = ch.iter().map(|c| c.op()).collect();
    assert_eq!(
        ops,
        [Op::Insert, Op::Insert, Op::Update, Op::Update, Op::Delete]
    );
    // Every change carries its transaction's commit LSN as version.
    let mut commit_lsns = events.iter().filter_map(|e| match e {
        DecodedEvent::Commit { commit_lsn, .. } => Some(*commit_lsn),
        _ => None,
    });
    let first_commit = commit_lsns.next().unwrap();
    assert_eq!(ch[0].version(), first_commit);
    assert_eq!(ch[1].version(), first_commit);
    assert!(ch[2].version() > first_commit);
    assert!(ch[0].xid() > 0 && ch[0].commit_time_us() > 1_600_000_000_000_000);

    let after = ch[0].after().unwrap();
    let v = |name: &str| &after[rel.column_index(name).unwrap()];
    let text = |s: &str| Value::Text(s.into());
    assert_eq!(v("id"), &Value::Int(1));
    assert_eq!(v("b"), &Value::Bool(true));
    assert_eq!(v("i2"), &Value::Int(-32768));
    assert_eq!(v("i4"), &Value::Int(2147483647));
    assert_eq!(v("f4"), &Value::Float4(1.5));
    assert!(matches!(v("f8"), Value::Float8(f) if f.is_nan()));
    assert_eq!(
        v("n"),
        &Value::Numeric("-12345678901234567890123456789.123456789".into())
    );
    assert_eq!(v("p"), &Value::Numeric("12.35".into()));
    assert_eq!(v("t"), &text("héllo \"wörld\" 🎉\n\ttab \\ back"));
    assert_eq!(v("vc"), &text("abc"));
    assert_eq!(v("ch"), &text("ab "));
    assert_eq!(v("by"), &Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(
        v("u"),
        &Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
    assert_eq!(v("d"), &Value::Date("infinity".into()));
    assert_eq!(v("tm"), &Value::Time("23:59:59.999999".into()));
    assert_eq!(v("ttz"), &Value::Time("12:00:00+05:30".into()));
    assert_eq!(
        v("ts"),
        &Value::Timestamp("2024-01-02T03:04:05.123456".into())
    );
    assert_eq!(
        v("tstz"),
        &Value::TimestampTz("2024-01-02T01:04:05.5Z".into())
    );
    assert_eq!(v("iv"), &text("P1Y2M3DT4H5M6S"));
    assert_eq!(v("j"), &Value::Json(r#"{"a": [1, 2]}"#.into()));
    assert_eq!(v("jb"), &Value::Json(r#"{"b": {"c": null}}"#.into()));
    assert_eq!(v("m"), &text("happy"));
    assert_eq!(
        v("ia"),
        &Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)])
    );
    assert_eq!(
        v("ta"),
        &Value::Array(vec![
            text("a,b"),
            text("q\"x"),
            Value::Null,
            text("NULL"),
            text(""),
            text("日本"),
        ])
    );
    assert_eq!(json(&[v("na").clone()]), [r#"[["1.5",null],["NaN","-2"]]"#]);
    assert_eq!(
        v("tsa"),
        &Value::Array(vec![
            Value::TimestampTz("2024-01-02T03:04:05Z".into()),
            Value::TimestampTz("infinity".into()),
        ])
    );
    assert_eq!(v("ma"), &Value::Array(vec![text("sad"), text("happy")]));
    assert_eq!(v("ip"), &text("192.168.1.5/24"));
    assert_eq!(v("o"), &Value::Int(4294967295));
    assert_eq!(
        v("bx"),
        &Value::Array(vec![text("(1,1),(0,0)"), text("(3,3),(2,2)")])
    );

    let second = ch[1].after().unwrap();
    let v2 = |name: &str| &second[rel.column_index(name).unwrap()];
    assert_eq!(v2("d"), &Value::Date("0044-03-15 BC".into()));
    assert_eq!(v2("ts"), &Value::Timestamp("-infinity".into()));
    assert_eq!(
        v2("tstz"),
        &Value::TimestampTz("0044-03-15T12:00:00Z BC".into())
    );
    assert_eq!(v2("f4"), &Value::Float4(f32::NEG_INFINITY));
    assert_eq!(v2("n"), &Value::Numeric("Infinity".into()));
    assert_eq!(v2("b"), &Value::Null);

    // The update without a key change carries no old row; the last state
    // of row 1 in the stream is what the table holds.
    assert_eq!(ch[2].before(), None);
    let updated = ch[2].after().unwrap();
    assert_eq!(json(updated), json(&table_row(&pg, rel, "id = 1").await));
    // A key change and a delete carry the old key, other columns null.
    for (change, old_id) in [(ch[3], 2), (ch[4], 3)] {
        let before = change.before().unwrap();
        assert_eq!(before[0], Value::Int(old_id));
        assert!(before[1..].iter().all(Value::is_null));
    }
    assert_eq!(ch[4].after(), None);
    pg.cleanup().await;
}

/// A 100 KB incompressible text, stored out of line.
const TOAST_TABLE: &str = "
    CREATE TABLE s.doc (id int PRIMARY KEY, title text, body text);
    ALTER TABLE s.doc ALTER COLUMN body SET STORAGE EXTERNAL;
    INSERT INTO s.doc
        SELECT g, 'title', (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 3200) i)
        FROM generate_series(1, 3) g";

async fn body_of(pg: &Pg, id: i32) -> String {
    let sql = format!("SELECT body FROM {}.doc WHERE id = $1", pg.name);
    pg.client.query_one(&sql, &[&id]).await.unwrap().get(0)
}

/// Whether the stream really left some column out as unchanged TOAST.
fn has_unchanged_toast(messages: &[Bytes]) -> bool {
    messages.iter().any(|m| {
        matches!(message::parse(m.clone()), Ok(Message::Update(u))
            if u.new.contains(&TupleValue::UnchangedToast))
    })
}

#[tokio::test]
async fn unchanged_toast_values_are_filled() {
    let pg = Pg::setup("courier_dec_toast", TOAST_TABLE, &["doc"]).await;
    let mut decoder = pg.decoder();
    let feed = |events: Vec<Bytes>| {
        assert!(has_unchanged_toast(&events), "the updates left TOAST out");
        events
    };

    // Default replica identity: re-read by primary key. Row 3 is deleted
    // before the decoder sees its update: its body stays null.
    pg.sql("UPDATE s.doc SET title = 'b' WHERE id IN (1, 3); DELETE FROM s.doc WHERE id = 3")
        .await;
    let mut events = Vec::new();
    for m in feed(pg.messages().await) {
        events.extend(decoder.decode(m).await.expect("decode"));
    }
    let ch = changes(&events);
    let body = 2;
    let by_id = |id: i64| {
        ch.iter()
            .find(|c| c.op() == Op::Update && c.after().unwrap()[0] == Value::Int(id))
            .unwrap()
    };
    assert_eq!(
        by_id(1).after().unwrap()[body],
        Value::Text(body_of(&pg, 1).await)
    );
    assert_eq!(by_id(1).after().unwrap()[1], Value::Text("b".into()));
    assert_eq!(by_id(3).after().unwrap()[body], Value::Null);
    assert_eq!(ch.last().unwrap().op(), Op::Delete);

    // REPLICA IDENTITY FULL: filled from the old row, so a later change of
    // the body does not leak into this change.
    let original = body_of(&pg, 2).await;
    pg.sql("ALTER TABLE s.doc REPLICA IDENTITY FULL; UPDATE s.doc SET title = 'c' WHERE id = 2; UPDATE s.doc SET body = 'short' WHERE id = 2")
        .await;
    let mut events = Vec::new();
    for m in feed(pg.messages().await) {
        events.extend(decoder.decode(m).await.expect("decode"));
    }
    let ch = changes(&events);
    assert_eq!(ch.len(), 2);
    let before = ch[0].before().unwrap();
    assert_eq!(before[1], Value::Text("title".into()));
    assert_eq!(before[body], Value::Text(original.clone()));
    assert_eq!(ch[0].after().unwrap()[body], Value::Text(original));
    assert_eq!(ch[1].after().unwrap()[body], Value::Text("short".into()));

    // The column is dropped before the decoder re-reads it: the value is
    // gone, the change goes on with it null.
    pg.sql("ALTER TABLE s.doc REPLICA IDENTITY DEFAULT; UPDATE s.doc SET title = 'd' WHERE id = 1; ALTER TABLE s.doc DROP COLUMN body")
        .await;
    let mut events = Vec::new();
    for m in feed(pg.messages().await) {
        events.extend(decoder.decode(m).await.expect("decode"));
    }
    let after = changes(&events)[0].after().unwrap();
    assert_eq!(after[1], Value::Text("d".into()));
    assert_eq!(after[body], Value::Null);
    pg.cleanup().await;
}

/// Deferred re-reads: the gaps of many updates, over a composite key, some
/// keys updated twice and one row deleted since, filled together.
#[tokio::test]
async fn deferred_toast_reads_fill_many_rows_together() {
    let ddl = "
        CREATE TABLE s.cdoc (region text, id int, title text, body text, PRIMARY KEY (region, id));
        ALTER TABLE s.cdoc ALTER COLUMN body SET STORAGE EXTERNAL;
        INSERT INTO s.cdoc
            SELECT r, g, 'title', (SELECT string_agg(md5(r || g::text || i::text), '') FROM generate_series(1, 100) i)
            FROM generate_series(1, 150) g, unnest(ARRAY['north', 'south']) r";
    let pg = Pg::setup("courier_dec_toast_batch", ddl, &["cdoc"]).await;
    pg.sql(
        "UPDATE s.cdoc SET title = 'b';
         UPDATE s.cdoc SET title = 'c' WHERE id % 10 = 0;
         DELETE FROM s.cdoc WHERE region = 'south' AND id = 7",
    )
    .await;
    let messages = pg.messages().await;
    assert!(has_unchanged_toast(&messages), "the updates left TOAST out");
    let mut decoder = pg.decoder().defer_toast_reads();
    let (mut changes, mut gaps) = (Vec::new(), Vec::new());
    for m in messages {
        match decoder.decode(m).await.expect("decode") {
            Some(DecodedEvent::PartialChange(c, gap)) => {
                gaps.push((changes.len(), gap));
                changes.push(c);
            }
            Some(DecodedEvent::Change(c)) => changes.push(c),
            _ => {}
        }
    }
    assert_eq!(gaps.len(), 300 + 30, "every update lacks its body");
    assert!(changes[gaps[0].0].after().unwrap()[3].is_null());
    decoder.fill_toast(&mut changes, &gaps).await.expect("fill");

    let sql = format!("SELECT region, id, body FROM {}.cdoc", pg.name);
    let bodies: HashMap<(String, i64), String> = pg
        .client
        .query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), i64::from(r.get::<_, i32>(1))), r.get(2)))
        .collect();
    assert_eq!(bodies.len(), 299, "one row was deleted");
    let mut checked = 0;
    for (i, _) in &gaps {
        let after = changes[*i].after().unwrap();
        let (Value::Text(region), Value::Int(id)) = (&after[0], &after[1]) else {
            panic!("unexpected key values");
        };
        match bodies.get(&(region.clone(), *id)) {
            Some(body) => assert_eq!(after[3], Value::Text(body.clone()), "{region}/{id}"),
            None => assert_eq!(after[3], Value::Null, "deleted {region}/{id}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 330);
    assert_eq!(changes.last().unwrap().op(), Op::Delete);
    pg.cleanup().await;
}

#[tokio::test]
async fn schema_changes_produce_relation_events() {
    let ddl = "CREATE TABLE s.evo (id int PRIMARY KEY, a text)";
    let pg = Pg::setup("courier_dec_evo", ddl, &["evo"]).await;
    pg.sql(
        "INSERT INTO s.evo VALUES (1, 'x');
         ALTER TABLE s.evo ADD COLUMN c int;
         INSERT INTO s.evo VALUES (2, 'y', 5);
         INSERT INTO s.evo VALUES (3, 'z', 6);
         ALTER TABLE s.evo DROP COLUMN a;
         INSERT INTO s.evo VALUES (4, 7);
         ALTER TABLE s.evo ALTER COLUMN c TYPE numeric(10,1);
         INSERT INTO s.evo VALUES (5, 8.25);",
    )
    .await;
    let mut decoder = pg.decoder();
    let events = pg.decode(&mut decoder).await;
    let shapes: Vec<Vec<(String, String)>> = relations(&events)
        .iter()
        .map(|r| {
            r.columns
                .iter()
                .map(|c| (c.name.clone(), c.type_name.clone()))
                .collect()
        })
        .collect();
    let cols = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        shapes,
        [
            cols(&[("id", "integer"), ("a", "text")]),
            cols(&[("id", "integer"), ("a", "text"), ("c", "integer")]),
            cols(&[("id", "integer"), ("c", "integer")]),
            cols(&[("id", "integer"), ("c", "numeric(10,1)")]),
        ]
    );
    let rows: Vec<Vec<String>> = changes(&events)
        .iter()
        .map(|c| json(c.after().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [
            vec!["1", "\"x\""],
            vec!["2", "\"y\"", "5"],
            vec!["3", "\"z\"", "6"],
            vec!["4", "7"],
            vec!["5", "\"8.3\""],
        ]
    );
    // Each change carries the shape it was decoded with.
    let last = changes(&events)[4].relation().clone();
    assert_eq!(last.columns[1].type_name, "numeric(10,1)");
    pg.cleanup().await;
}

#[tokio::test]
async fn truncates_and_logical_messages() {
    let ddl = "CREATE TABLE s.a (id int PRIMARY KEY); CREATE TABLE s.b (id int PRIMARY KEY)";
    let pg = Pg::setup("courier_dec_trunc", ddl, &["a", "b"]).await;
    pg.sql(
        "INSERT INTO s.a VALUES (1); INSERT INTO s.b VALUES (1);
         TRUNCATE s.a, s.b RESTART IDENTITY;
         SELECT pg_logical_emit_message(true, 'courier', 'in a transaction');
         SELECT pg_logical_emit_message(false, 'courier', '\\x00ff'::bytea);",
    )
    .await;
    let mut decoder = pg.decoder();
    let events = pg.decode(&mut decoder).await;
    let truncated: Vec<String> = events
        .iter()
        .find_map(|e| match e {
            DecodedEvent::Truncate(changes) => Some(
                changes
                    .iter()
                    .inspect(|c| assert_eq!(c.op(), Op::Truncate))
                    .map(|c| c.relation().id.name.clone())
                    .collect(),
            ),
            _ => None,
        })
        .expect("a Truncate event");
    assert_eq!(truncated, ["a", "b"]);
    let messages: Vec<(bool, &str, &[u8])> = events
        .iter()
        .filter_map(|e| match e {
            DecodedEvent::Message {
                transactional,
                prefix,
                content,
                lsn,
            } => {
                assert!(lsn.as_u64() > 0);
                Some((*transactional, prefix.as_str(), content.as_ref()))
            }
            _ => None,
        })
        .collect();
    // The whole batch is one transaction: the non-transactional message is
    // decoded at once, the transactional one with its transaction's changes.
    assert_eq!(
        messages,
        [
            (false, "courier", [0u8, 0xff].as_slice()),
            (true, "courier", b"in a transaction".as_slice()),
        ]
    );
    let position = |f: &dyn Fn(&DecodedEvent) -> bool| events.iter().position(f).unwrap();
    let transactional = position(&|e| {
        matches!(
            e,
            DecodedEvent::Message {
                transactional: true,
                ..
            }
        )
    });
    assert!(position(&|e| matches!(e, DecodedEvent::Begin { .. })) < transactional);
    assert!(transactional < position(&|e| matches!(e, DecodedEvent::Commit { .. })));
    pg.cleanup().await;
}

/// Outbox tables' changes arrive marked; a transactional message of an
/// outbox prefix arrives as a change of its own, in its place in the
/// transaction; a non-transactional one is unroutable; other messages and
/// tables are as before.
#[tokio::test]
async fn outbox_sources_are_marked_in_stream_order() {
    let ddl = "CREATE TABLE s.outbox (id int PRIMARY KEY, payload jsonb); CREATE TABLE s.t (id int PRIMARY KEY)";
    let pg = Pg::setup("courier_dec_outbox", ddl, &["outbox", "t"]).await;
    pg.sql(
        "BEGIN;
         INSERT INTO s.t VALUES (1);
         INSERT INTO s.outbox VALUES (1, '{\"a\": 1}');
         SELECT pg_logical_emit_message(true, 'orders', '{\"id\": 2}');
         SELECT pg_logical_emit_message(true, 'heartbeat', 'x');
         DELETE FROM s.outbox WHERE id = 1;
         COMMIT;
         SELECT pg_logical_emit_message(false, 'orders', '{\"id\": 3}');
         INSERT INTO s.t VALUES (2);",
    )
    .await;
    let mut sources = OutboxSources::default();
    sources
        .tables
        .insert(TableId::new("courier_dec_outbox", "outbox"));
    sources.prefixes.insert("orders".into());
    let mut decoder = pg.decoder().route_outbox(sources);
    let events = pg.decode(&mut decoder).await;
    let seen: Vec<(String, Option<OutboxSource>, Op)> = changes(&events)
        .into_iter()
        .map(|c| (c.relation().id.to_string(), c.outbox(), c.op()))
        .collect();
    assert_eq!(
        seen,
        [
            ("courier_dec_outbox.t".to_string(), None, Op::Insert),
            (
                "courier_dec_outbox.outbox".to_string(),
                Some(OutboxSource::Table),
                Op::Insert
            ),
            (
                "pg_logical_emit_message.orders".to_string(),
                Some(OutboxSource::Message),
                Op::Insert
            ),
            (
                "courier_dec_outbox.outbox".to_string(),
                Some(OutboxSource::Table),
                Op::Delete
            ),
            ("courier_dec_outbox.t".to_string(), None, Op::Insert),
        ]
    );
    let message = changes(&events)[2];
    assert_eq!(
        message.after(),
        Some(&[Value::Bytes(b"{\"id\": 2}".to_vec())][..])
    );
    assert_eq!(
        message.version(),
        changes(&events)[0].version(),
        "the transaction's commit LSN"
    );
    assert_eq!(message.xid(), changes(&events)[0].xid());
    assert!(events.iter().any(|e| matches!(e,
        DecodedEvent::Message { prefix, transactional: true, .. } if prefix == "heartbeat")));
    assert!(
        events.iter().any(|e| matches!(e,
            DecodedEvent::UnroutableMessage { prefix, .. } if prefix == "orders")),
        "a non-transactional message of an outbox prefix is unroutable: {events:#?}"
    );
    pg.cleanup().await;
}

#[tokio::test]
async fn a_change_before_its_relation_is_a_protocol_error() {
    let ddl = "CREATE TABLE s.r (id int PRIMARY KEY)";
    let pg = Pg::setup("courier_dec_norel", ddl, &["r"]).await;
    pg.sql("INSERT INTO s.r VALUES (1)").await;
    let mut decoder = pg.decoder();
    let mut error = None;
    for m in pg.messages().await {
        if matches!(message::parse(m.clone()), Ok(Message::Relation(_))) {
            continue;
        }
        if let Err(e) = decoder.decode(m).await {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the insert fails");
    assert!(matches!(error, DecodeError::UnknownRelation { .. }));
    assert!(!error.is_retriable());
    assert!(error.to_string().contains("relation OID"));
    pg.cleanup().await;
}
