//! Host selection against a real server (`COURIER_TEST_PG`, default: the
//! `dev/pg.sh` cluster, a primary): the hosts of a multi-host URL are
//! tried in order, a host that refuses the connection or whose role does
//! not fit `target_session_attrs` is passed over, and when none fits the
//! error names every host tried and why, never the password. Regular and
//! replication connections choose alike. (Passing over a real standby, and
//! finding it once promoted, is `crates/courier/tests/failover.rs`.)

use courier_postgres::{PgConfig, PgError, ReplicationClient};

const DEFAULT_URL: &str = "postgres://postgres:postgres@127.0.0.1:55432/postgres";

/// The test server's `host:port` and its URL with `hosts` in its place
/// (`{server}` stands for the test server) and `target_session_attrs`.
fn config(hosts: &str, target: &str) -> (String, PgConfig) {
    let url = std::env::var("COURIER_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let (head, rest) = url.split_once('@').expect("COURIER_TEST_PG has user@host");
    let (server, tail) = rest
        .split_once('/')
        .expect("COURIER_TEST_PG has a database");
    let hosts = hosts.replace("{server}", server);
    let sep = if tail.contains('?') { '&' } else { '?' };
    let url = format!("{head}@{hosts}/{tail}{sep}target_session_attrs={target}");
    let cfg = PgConfig::from_url(&url).expect("a valid URL");
    (server.to_string(), cfg)
}

/// `127.0.0.1:<port>` where nothing listens.
fn closed_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("a bound address").port();
    drop(listener);
    format!("127.0.0.1:{port}")
}

/// The port of the server a regular client reached.
async fn regular_port(cfg: &PgConfig) -> Result<i32, PgError> {
    let client = cfg.connect().await?;
    let row = client.query_one("SELECT inet_server_port()", &[]).await?;
    Ok(row.get(0))
}

/// The port of the server a replication connection reached.
async fn replication_port(cfg: &PgConfig) -> Result<i32, PgError> {
    let mut repl = ReplicationClient::connect(cfg).await?;
    let rows = repl.simple_query("SELECT inet_server_port()").await?;
    let port = rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .expect("one value");
    Ok(port.parse().expect("a port number"))
}

fn port_of(addr: &str) -> i32 {
    addr.rsplit_once(':')
        .expect("host:port")
        .1
        .parse()
        .expect("a port")
}

#[tokio::test]
async fn a_host_that_refuses_is_passed_over() {
    let closed = closed_addr();
    for target in ["read-write", "primary", "any", "prefer-standby"] {
        let (server, cfg) = config(&format!("{closed},{{server}}"), target);
        assert_eq!(
            regular_port(&cfg).await.unwrap(),
            port_of(&server),
            "{target}"
        );
        assert_eq!(
            replication_port(&cfg).await.unwrap(),
            port_of(&server),
            "{target}"
        );
    }
}

#[tokio::test]
async fn the_first_host_that_fits_is_used() {
    // The same server twice: the first entry is the one used.
    let (server, cfg) = config("{server},{server}", "read-write");
    assert_eq!(cfg.hosts().len(), 2);
    assert_eq!(regular_port(&cfg).await.unwrap(), port_of(&server));
    let mut repl = ReplicationClient::connect(&cfg).await.unwrap();
    let role = repl.server_role().await.unwrap();
    assert!(!role.in_recovery && !role.read_only, "{role:?}");
    repl.identify_system().await.unwrap();
}

#[tokio::test]
async fn a_primary_does_not_fit_a_standby_target_and_the_error_says_why() {
    let closed = closed_addr();
    for target in ["standby", "read-only"] {
        let (server, cfg) = config(&format!("{{server}},{closed}"), target);
        for err in [
            regular_port(&cfg).await.unwrap_err(),
            replication_port(&cfg).await.unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(matches!(err, PgError::NoHostFits { .. }), "{text}");
            assert!(
                text.contains(&format!("target_session_attrs={target}")),
                "{text}"
            );
            assert!(
                text.contains(&format!("{server}: is a primary (read-write)")),
                "{text}"
            );
            assert!(
                text.contains(&format!(
                    "{closed}: connection to PostgreSQL at {closed} failed"
                )),
                "{text}"
            );
            assert!(
                !text.contains("postgres@") && !text.contains(":postgres"),
                "{text}"
            );
            // A standby may be promoted, a stopped server started: worth retrying.
            assert!(err.is_retriable(), "{text}");
        }
    }
}
