//! The Redis sink against real servers started by `dev/redis.sh` and
//! `dev/redis-cluster.sh` (or at `COURIER_TEST_REDIS` /
//! `COURIER_TEST_REDIS_CLUSTER` when set).

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use courier_core::{Op, Relation, Sink, SinkErrorKind, Value};

use super::readback::RedisReadback;
use super::*;
use crate::compliance::fixtures::{batch, change, table, truncate};
use crate::compliance::{run_compliance, Options, Readback};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a dev script once per test process.
fn started(script: &str, cell: &'static OnceLock<()>) {
    cell.get_or_init(|| {
        let status = Command::new(repo().join("dev").join(script))
            .arg("start")
            .status()
            .unwrap_or_else(|e| panic!("run dev/{script}: {e}"));
        assert!(status.success(), "dev/{script} start failed");
    });
}

fn standalone_url() -> String {
    static STARTED: OnceLock<()> = OnceLock::new();
    std::env::var("COURIER_TEST_REDIS").unwrap_or_else(|_| {
        started("redis.sh", &STARTED);
        "redis://127.0.0.1:56379".to_string()
    })
}

fn cluster_url() -> String {
    static STARTED: OnceLock<()> = OnceLock::new();
    std::env::var("COURIER_TEST_REDIS_CLUSTER").unwrap_or_else(|_| {
        started("redis-cluster.sh", &STARTED);
        "redis://127.0.0.1:57001".to_string()
    })
}

fn parse(toml_text: &str) -> Result<RedisSinkConfig, toml::de::Error> {
    toml::from_str(toml_text)
}

async fn sink(toml_text: &str) -> RedisSink {
    let config = parse(toml_text).unwrap_or_else(|e| panic!("config: {e}"));
    build("test", config)
        .await
        .unwrap_or_else(|e| panic!("build: {e}"))
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn compliance(url: String, cluster: bool, format: Format) {
    let format_name = match format {
        Format::Json => "json",
        Format::Hash => "hash",
    };
    let config = format!(
        "url = {url:?}\ncluster = {cluster}\ntables = [\"courier_compliance.*\"]\nformat = {format_name:?}\n"
    );
    let mut readback = RedisReadback::connect(&[&url], cluster, "{schema}.{table}:{pk}", format)
        .await
        .unwrap();
    run_compliance(|| sink(&config), &mut readback, Options::default()).await;
}

#[tokio::test]
async fn passes_compliance_json() {
    compliance(standalone_url(), false, Format::Json).await;
}

#[tokio::test]
async fn passes_compliance_hash() {
    compliance(standalone_url(), false, Format::Hash).await;
}

#[tokio::test]
async fn passes_compliance_on_a_cluster() {
    compliance(cluster_url(), true, Format::Json).await;
    compliance(cluster_url(), true, Format::Hash).await;
}

fn unique(prefix: &str) -> Arc<Relation> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    table(prefix, &format!("t{nanos:x}"))
}

#[tokio::test]
async fn ttl_applies_to_rows_and_tombstones() {
    let url = standalone_url();
    let mut s = sink(&format!(
        "url = {url:?}\nttl = \"1h\"\ntombstone_ttl = \"2h\""
    ))
    .await;
    let rel = unique("ttl");
    s.apply(&batch(vec![
        change(&rel, Op::Insert, 1, "kept", 10),
        change(&rel, Op::Insert, 2, "gone", 10),
        change(&rel, Op::Delete, 2, "", 11),
    ]))
    .await
    .unwrap();
    let mut conn = redis_conn(&url).await;
    let pttl = |id: i64| {
        let key = format!("{}.{}:{id}", rel.id.schema, rel.id.name);
        redis::cmd("PTTL").arg(key).clone()
    };
    let row_ttl: i64 = pttl(1).query_async(&mut conn).await.unwrap();
    let tomb_ttl: i64 = pttl(2).query_async(&mut conn).await.unwrap();
    assert!(
        (3_590_000..=3_600_000).contains(&row_ttl),
        "row PTTL {row_ttl}"
    );
    assert!(
        (7_190_000..=7_200_000).contains(&tomb_ttl),
        "tombstone PTTL {tomb_ttl}"
    );
}

#[tokio::test]
async fn a_json_row_written_over_an_existing_key_is_as_if_written_anew() {
    let url = standalone_url();
    let rel = unique("inplace");
    let key = |id: i64| format!("{}.{}:{id}", rel.id.schema, rel.id.name);
    let mut conn = redis_conn(&url).await;
    // Row 1 written with a TTL, row 2 deleted (a tombstone, which expires),
    // row 3 written in the hash format: then all updated without a TTL.
    let mut with_ttl = sink(&format!("url = {url:?}\nttl = \"1h\"")).await;
    with_ttl
        .apply(&batch(vec![
            change(&rel, Op::Insert, 1, "one", 10),
            change(&rel, Op::Insert, 2, "two", 10),
            change(&rel, Op::Delete, 2, "", 11),
        ]))
        .await
        .unwrap();
    let mut hash = sink(&format!("url = {url:?}\nformat = \"hash\"")).await;
    hash.apply(&batch(vec![change(&rel, Op::Insert, 3, "three", 10)]))
        .await
        .unwrap();
    let mut plain = sink(&format!("url = {url:?}")).await;
    plain
        .apply(&batch(vec![
            change(&rel, Op::Update, 1, "one again", 20),
            change(&rel, Op::Insert, 2, "two again", 20),
            change(&rel, Op::Update, 3, "three again", 20),
        ]))
        .await
        .unwrap();
    let mut rb = RedisReadback::connect(&[&url], false, "{schema}.{table}:{pk}", Format::Json)
        .await
        .unwrap();
    for (id, name) in [(1, "one again"), (2, "two again"), (3, "three again")] {
        let row = rb.read_row(&rel, &[Value::Int(id)]).await.unwrap();
        assert_eq!(row["name"], name, "row {id}");
        let mut fields: Vec<String> = rb
            .fields(key(id).as_bytes())
            .await
            .unwrap()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        fields.sort();
        assert_eq!(fields, [VERSION_FIELD, ROW_FIELD], "fields of row {id}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key(id))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ttl, -1, "row {id} no longer expires");
    }
    // And an older write over a live row still changes nothing.
    plain
        .apply(&batch(vec![change(&rel, Op::Update, 1, "stale", 15)]))
        .await
        .unwrap();
    let row = rb.read_row(&rel, &[Value::Int(1)]).await.unwrap();
    assert_eq!(row["name"], "one again");
}

#[tokio::test]
async fn invalidate_mode_unlinks_keys() {
    let url = standalone_url();
    let mut s = sink(&format!("url = {url:?}\nmode = \"invalidate\"")).await;
    let rel = unique("inval");
    let other = unique("inval_other");
    let mut conn = redis_conn(&url).await;
    let key = |r: &Relation, id: i64| format!("{}.{}:{id}", r.id.schema, r.id.name);
    for id in 1..=3 {
        let _: () = redis::cmd("SET")
            .arg(key(&rel, id))
            .arg("cached by the app")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg(key(&other, 1))
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    s.apply(&batch(vec![change(&rel, Op::Update, 1, "changed", 5)]))
        .await
        .unwrap();
    let exists = |k: String| redis::cmd("EXISTS").arg(k).clone();
    let n: i64 = exists(key(&rel, 1)).query_async(&mut conn).await.unwrap();
    assert_eq!(n, 0, "the changed row's key is unlinked");
    let n: i64 = exists(key(&rel, 2)).query_async(&mut conn).await.unwrap();
    assert_eq!(n, 1, "other rows stay cached");
    // Invalidation never writes: a replay leaves nothing behind.
    s.apply(&batch(vec![change(&rel, Op::Update, 1, "changed", 5)]))
        .await
        .unwrap();
    let n: i64 = exists(key(&rel, 1)).query_async(&mut conn).await.unwrap();
    assert_eq!(n, 0);
    s.apply(&batch(vec![truncate(&rel, 6)])).await.unwrap();
    for id in 1..=3 {
        let n: i64 = exists(key(&rel, id)).query_async(&mut conn).await.unwrap();
        assert_eq!(n, 0, "truncate unlinks row {id}");
    }
    let n: i64 = exists(key(&other, 1)).query_async(&mut conn).await.unwrap();
    assert_eq!(n, 1, "another table's keys stay");
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_a_fatal_error_naming_table_and_lsn() {
    let url = standalone_url();
    let mut s = sink(&format!("url = {url:?}")).await;
    let rel = unique("wrongtype");
    let mut conn = redis_conn(&url).await;
    let key = format!("{}.{}:1", rel.id.schema, rel.id.name);
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("planted by hand")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = s
        .apply(&batch(vec![
            change(&rel, Op::Insert, 2, "fine", 0x1_0000_0010),
            change(&rel, Op::Insert, 1, "secret-value", 0x1_0000_0020),
        ]))
        .await
        .expect_err("a string where the row's hash belongs must fail");
    assert_eq!(err.kind, SinkErrorKind::Rejected);
    let text = err.to_string();
    assert!(text.contains("WRONGTYPE"), "{text}");
    assert!(text.contains("{schema}.{table}:{pk}"), "{text}");
    assert!(text.contains(&rel.id.to_string()), "{text}");
    assert!(text.contains("LSN 1/20"), "{text}");
    assert!(!text.contains("secret-value"), "{text}");
    let planted: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(planted, "planted by hand");
}

#[tokio::test]
async fn reloads_the_script_after_script_flush() {
    let url = standalone_url();
    let mut s = sink(&format!("url = {url:?}")).await;
    let rel = unique("noscript");
    let mut rb = RedisReadback::connect(&[&url], false, "{schema}.{table}:{pk}", Format::Json)
        .await
        .unwrap();
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "before", 10)]))
        .await
        .unwrap();
    let mut conn = redis_conn(&url).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    s.apply(&batch(vec![change(&rel, Op::Update, 1, "after", 20)]))
        .await
        .unwrap();
    let row = rb.read_row(&rel, &[Value::Int(1)]).await.unwrap();
    assert_eq!(row["name"], "after");
}

#[tokio::test]
async fn truncate_spares_newer_rows_and_keys_that_are_not_rows() {
    let url = standalone_url();
    let mut s = sink(&format!("url = {url:?}")).await;
    let rel = unique("trunc");
    let mut rb = RedisReadback::connect(&[&url], false, "{schema}.{table}:{pk}", Format::Json)
        .await
        .unwrap();
    let mut conn = redis_conn(&url).await;
    let foreign = format!("{}.{}:foreign", rel.id.schema, rel.id.name);
    let _: () = redis::cmd("HSET")
        .arg(&foreign)
        .arg("owner")
        .arg("someone else")
        .query_async(&mut conn)
        .await
        .unwrap();
    let rows: Vec<_> = (1..=2500)
        .map(|id| change(&rel, Op::Insert, id, "r", 100))
        .chain([change(&rel, Op::Insert, 9999, "newer", 300)])
        .collect();
    s.apply(&batch(rows)).await.unwrap();
    s.apply(&batch(vec![truncate(&rel, 200)])).await.unwrap();
    for id in [1, 1234, 2500] {
        assert_eq!(rb.read_row(&rel, &[Value::Int(id)]).await, None, "row {id}");
    }
    let newer = rb.read_row(&rel, &[Value::Int(9999)]).await.unwrap();
    assert_eq!(newer["name"], "newer");
    let owner: String = redis::cmd("HGET")
        .arg(&foreign)
        .arg("owner")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner, "someone else");
}

/// A server of its own, so the test can stop and restart it.
struct OwnServer {
    child: std::process::Child,
}

impl OwnServer {
    fn start(port: u16) -> Self {
        started("redis.sh", {
            static S: OnceLock<()> = OnceLock::new();
            &S
        });
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnServer { child }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn connection_loss_is_retriable_and_a_restarted_server_gets_the_script_again() {
    let port = 56391;
    let server = OwnServer::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let mut s = sink(&format!("url = {url:?}\ntimeout = \"2s\"")).await;
    let rel = unique("restart");
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "one", 10)]))
        .await
        .unwrap();
    drop(server);
    let err = s
        .apply(&batch(vec![change(&rel, Op::Insert, 2, "two", 20)]))
        .await
        .expect_err("no server");
    assert_eq!(err.kind, SinkErrorKind::Unreachable, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("redis at 127.0.0.1:{port} unreachable")),
        "{text}"
    );
    let _server = OwnServer::start(port);
    let mut applied = false;
    for _ in 0..50 {
        match s
            .apply(&batch(vec![change(&rel, Op::Insert, 2, "two", 20)]))
            .await
        {
            Ok(()) => {
                applied = true;
                break;
            }
            Err(e) if e.is_retriable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("not retriable: {e}"),
        }
    }
    assert!(applied, "the sink resumes once the server is back");
    let mut rb = RedisReadback::connect(&[&url], false, "{schema}.{table}:{pk}", Format::Json)
        .await
        .unwrap();
    let row = rb.read_row(&rel, &[Value::Int(2)]).await.unwrap();
    assert_eq!(row["name"], "two");
}

#[tokio::test]
async fn connects_over_tls_with_the_dev_ca() {
    let url = standalone_url();
    let ca = repo().join(".dev/redis/tls/ca.crt");
    if !url.contains("127.0.0.1:56379") {
        return crate::skips::skip(
            &format!(
                "COURIER_TEST_REDIS={url:?} is not the dev Redis, whose TLS port this test uses"
            ),
            "unset COURIER_TEST_REDIS to test TLS against dev/redis.sh's server",
        );
    }
    if !ca.exists() {
        return crate::skips::skip(
            &format!("the dev Redis serves no TLS: {} is missing", ca.display()),
            "install a redis-server built with TLS (Debian's is) and run dev/redis.sh start",
        );
    }
    let mut s = sink(&format!(
        "url = \"rediss://127.0.0.1:56380\"\ntls_ca_file = {:?}",
        ca.display().to_string()
    ))
    .await;
    let rel = unique("tls");
    s.apply(&batch(vec![change(&rel, Op::Insert, 1, "over tls", 10)]))
        .await
        .unwrap();
    let mut rb = RedisReadback::connect(&[&url], false, "{schema}.{table}:{pk}", Format::Json)
        .await
        .unwrap();
    let row = rb.read_row(&rel, &[Value::Int(1)]).await.unwrap();
    assert_eq!(row["name"], "over tls");
}

#[test]
fn parses_tls_cluster_and_secrets() {
    let c = parse(
        "url = \"rediss://courier:s3cret@cache.example:6380/2\"\nttl = 90\nformat = \"hash\"",
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("s3cret"));
    let s = c.validate().unwrap();
    assert_eq!(s.ttl, Some(Duration::from_secs(90)));
    assert!(!format!("{s:?}").contains("s3cret"));
    let info = redis::IntoConnectionInfo::into_connection_info(s.urls[0].as_str()).unwrap();
    assert!(
        matches!(info.addr, redis::ConnectionAddr::TcpTls { ref host, port: 6380, .. } if host == "cache.example")
    );
    assert_eq!(info.redis.password.as_deref(), Some("s3cret"));
    assert_eq!(info.redis.username.as_deref(), Some("courier"));

    let c = parse("url = \"redis://a:1,redis://b:2\"\ncluster = true").unwrap();
    assert_eq!(c.validate().unwrap().urls, ["redis://a:1", "redis://b:2"]);
    let c = parse("url = [\"redis://a:1\", \"redis://b:2\"]").unwrap();
    let e = c.validate().unwrap_err();
    assert!(e.contains("cluster = true"), "{e}");
}

#[test]
fn rejects_bad_settings_by_name() {
    let e = parse("url = \"redis://h:1\"\nttll = \"1h\"").unwrap_err();
    assert!(e.to_string().contains("ttll"), "{e}");
    let e = parse("url = \"redis://h:1\"\nmode = \"write\"").unwrap_err();
    assert!(e.to_string().contains("write"), "{e}");
    let e = parse("url = \"redis://h:1\"\nttl = \"1 fortnight\"").unwrap_err();
    assert!(e.to_string().contains("invalid duration"), "{e}");
    let bad = |t: &str| parse(t).unwrap().validate().unwrap_err();
    assert!(bad("url = \"http://h:1\"").contains("redis://"));
    assert!(bad("url = \"redis://h:1\"\nkey = \"{table}\"").contains("{pk}"));
    assert!(bad("url = \"redis://h:1\"\nttl = 0").contains("ttl"));
    assert!(
        bad("url = \"redis://h:1\"\nmode = \"invalidate\"\nttl = \"1h\"").contains("invalidate")
    );
    assert!(bad("url = \"redis://h:1\"\ntables = [\"a.b.c\"]").contains("tables"));
    assert!(
        bad("url = \"redis://h:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"").contains("rediss://")
    );
    assert!(
        bad("url = \"rediss://h:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"")
            .contains("tls_ca_file")
    );
}

#[tokio::test]
async fn unreachable_server_fails_to_build_without_showing_the_password() {
    let config = parse("url = \"redis://:hunter2@127.0.0.1:1\"\ntimeout = \"1s\"").unwrap();
    let err = match build("cache", config).await {
        Ok(_) => panic!("nothing listens on port 1"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("sinks.cache"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_server_nobody_listens_on_is_unreachable_at_start() {
    let port = crate::outage::unused_port();
    let config = parse(&format!(
        "url = \"redis://:hunter2@127.0.0.1:{port}\"\ntimeout = \"2s\""
    ))
    .unwrap();
    let e = match build("cache", config).await {
        Ok(_) => panic!("nothing listens on port {port}"),
        Err(e) => e,
    };
    let text = crate::outage::assert_unreachable_at_start(
        &e,
        &format!("redis at 127.0.0.1:{port} unreachable (connection refused)"),
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn the_write_script_applies_exactly_the_versions_that_win_in_rust() {
    let url = standalone_url();
    let mut s = sink(&format!("url = {url:?}")).await;
    let rel = unique("rule");
    // Decimal strings of different lengths, ties, and the ends of the range:
    // the script compares versions as text, so these are where it could part
    // from the numeric rule.
    let pairs: [(u64, u64); 10] = [
        (9, 10),
        (10, 9),
        (99, 100),
        (100, 99),
        (10, 10),
        (0xFFFF_FFFF, 0x1_0000_0000),
        (0x1_0000_0000, 0xFFFF_FFFF),
        (u64::MAX - 1, u64::MAX),
        (u64::MAX, u64::MAX - 1),
        (u64::MAX, u64::MAX),
    ];
    let stored: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (v, _))| change(&rel, Op::Insert, i as i64, "stored", *v))
        .collect();
    s.apply(&batch(stored)).await.unwrap();
    let incoming: Vec<_> = pairs
        .iter()
        .enumerate()
        .map(|(i, (_, v))| change(&rel, Op::Update, i as i64, "incoming", *v))
        .collect();
    s.apply(&batch(incoming)).await.unwrap();
    let mut rb = RedisReadback::connect(&[&url], false, "{schema}.{table}:{pk}", Format::Json)
        .await
        .unwrap();
    for (i, (stored, incoming)) in pairs.iter().enumerate() {
        let row = rb.read_row(&rel, &[Value::Int(i as i64)]).await.unwrap();
        let wins = courier_core::version::incoming_wins(
            courier_core::Lsn(*stored),
            courier_core::Lsn(*incoming),
        );
        let want = if wins { "incoming" } else { "stored" };
        assert_eq!(row["name"], want, "stored {stored}, incoming {incoming}");
    }
}
