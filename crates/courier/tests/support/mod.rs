//! The end-to-end test harness: a fresh database per test on the project's
//! PostgreSQL (`dev/pg.sh start`), the real `courier` binary as a child
//! process, and readers that fold a sink's output into rows to compare with
//! PostgreSQL's.
#![allow(dead_code)]

pub mod bulk_tap;
pub mod chaos;
pub mod connect;
pub mod fold;
pub mod kafka;
pub mod load;
pub mod outbox;
pub mod pair;
pub mod redis;
pub mod search;
pub mod seed;
pub mod skip;
pub mod verify;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// The superuser URL of the test cluster for `db`.
pub fn pg_url(db: &str) -> String {
    let base = std::env::var("COURIER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:55432/postgres".to_string());
    match base.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{db}"),
        None => base,
    }
}

/// `host:port` of the test cluster, as it appears in [`pg_url`]'s URLs.
pub fn pg_host_port() -> String {
    let url = pg_url("postgres");
    let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// The folder of the test cluster's server programs (`initdb`, `pg_ctl`,
/// `postgres`) for tests that start a throwaway cluster of the same version:
/// `COURIER_TEST_PG_BIN` (`dev/pg.sh bin` prints it), else Debian's
/// PostgreSQL 15.
pub fn pg_server_bin() -> PathBuf {
    std::env::var_os("COURIER_TEST_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// The folder that holds every test's scratch folder. Runs against another
/// cluster than the default one (`COURIER_TEST_PG` naming another
/// `host:port`, as `dev/test.sh` does for each PostgreSQL version) get their
/// own, so that the same test run against two clusters at once shares no
/// state folder.
fn scratch_root() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    match pg_host_port().as_str() {
        "127.0.0.1:55432" => target.join("e2e"),
        other => target.join(format!("e2e-{}", other.replace([':', '.', '[', ']'], "_"))),
    }
}

/// A connected client to `db`.
pub async fn connect(db: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(&pg_url(db), NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to the test PostgreSQL ({}): {e}; run dev/pg.sh start",
                pg_url(db)
            )
        });
    tokio::spawn(conn);
    client
}

/// A client to `db`, or the error.
pub async fn try_connect(db: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&pg_url(db), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs `dev/pg.sh` with `args` (the project's PostgreSQL).
pub fn dev_pg(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/pg.sh");
    let st = Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("run dev/pg.sh");
    assert!(st.success(), "dev/pg.sh {args:?} failed");
}

/// A loopback port that was free a moment ago, for a server a test starts
/// (Courier's API, a throwaway PostgreSQL): the system picks it for a
/// listener that is closed again at once, so tests running side by side do
/// not compete for a fixed port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Drops and creates database `name`, removing slots left on it by an
/// earlier run; returns a client connected to it.
pub async fn fresh_db(name: &str) -> Client {
    let admin = connect("postgres").await;
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active",
            &[&name],
        )
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    connect(name).await
}

/// Drops the test's database and its slots, so no slot retains WAL after
/// the test (a failed test leaves them for the next run's `fresh_db`).
pub async fn drop_db(name: &str) {
    let admin = connect("postgres").await;
    let _ = admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active",
            &[&name],
        )
        .await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

/// Polls `f` until it returns true, panicking with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until Courier streams from the slot, every snapshot of it is done
/// (its plan in the state store has no table left), and the slot
/// acknowledged everything committed so far, which Courier does only after
/// every sink applied it.
pub async fn wait_caught_up(client: &Client, slot: &str, timeout: Duration) {
    let start = Instant::now();
    wait_until(
        &format!("the snapshot of slot {slot} to finish"),
        timeout,
        || async { snapshot_done(slot) },
    )
    .await;
    let timeout = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_secs(1));
    let target = current_wal_lsn(client).await;
    let what = format!("slot {slot} to reach {target}");
    wait_until(&what, timeout, || async {
        client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active AND confirmed_flush_lsn >= $2::text::pg_lsn",
                &[&slot, &target],
            )
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
}

/// The server's current WAL write position, as PostgreSQL prints it.
pub async fn current_wal_lsn(client: &Client) -> String {
    client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Whether the snapshot plan of `slot` (in a test folder's `state/`, the
/// layout every test config uses) has no table left to copy.
pub fn snapshot_done(slot: &str) -> bool {
    let Ok(dirs) = std::fs::read_dir(scratch_root()) else {
        return false;
    };
    for d in dirs.flatten() {
        let plan = d.path().join("state").join(format!("snapshot-{slot}.json"));
        if let Ok(text) = std::fs::read_to_string(plan) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            return v["tables"].as_object().is_some_and(|t| t.is_empty());
        }
    }
    false
}

/// A `courier` child process with its own folder (config, state, logs).
pub struct CourierProc {
    pub child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl CourierProc {
    /// Writes `config` to `<dir>/courier.toml` and starts `courier run` on it.
    pub fn start(dir: &Path, config: &str) -> CourierProc {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("courier.toml");
        std::fs::write(&path, config).unwrap();
        Self::spawn(dir, &path)
    }

    /// Starts `courier run` again on the same folder and config.
    pub fn restart(&mut self) {
        *self = Self::spawn(&self.dir.clone(), &self.config.clone());
    }

    /// Starts `courier run` on an existing `config` in `dir`, logging to
    /// `<dir>/<log>` and with the extra environment `env` (two processes on
    /// one configuration, each with its own log and variables).
    pub fn start_with(dir: &Path, config: &Path, log: &str, env: &[(&str, String)]) -> CourierProc {
        let child = Self::command(dir, config, log)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .spawn()
            .expect("start courier");
        CourierProc {
            child,
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
        }
    }

    fn command(dir: &Path, config: &Path, log: &str) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(log))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_courier"));
        command
            .args(["run", "--config"])
            .arg(config)
            .env("COURIER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    fn spawn(dir: &Path, config: &Path) -> CourierProc {
        Self::start_with(dir, config, "courier.log", &[])
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > Duration::from_secs(60) {
                self.kill9();
                panic!(
                    "courier did not stop within 60s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit on its own; its exit status. Panics
    /// with `what` and the log after `timeout`.
    pub async fn wait_exit(&mut self, what: &str, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Peak resident memory so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("courier.log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for CourierProc {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Runs the `courier` binary with `args` to completion: (exit code, stdout, stderr).
pub fn courier_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A per-test scratch folder under the target dir (kept for inspection).
pub fn scratch(name: &str) -> PathBuf {
    let dir = scratch_root().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config streaming `tables` of database `db` through slot `slot` into one
/// sink `[sinks.<name>]` whose keys are `sink` (its `type` included).
pub fn sink_config(
    db: &str,
    slot: &str,
    tables: &[&str],
    dir: &Path,
    name: &str,
    sink: &str,
) -> String {
    let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"
[source]
url = "{url}"
slot = "{slot}"
tables = [{tables}]
status_interval = "200ms"
snapshot_chunk_rows = 5000

[api]
listen = "off"

[state]
dir = "{state}"

[sinks.{name}]
{sink}
"#,
        url = pg_url(db),
        tables = tables.join(", "),
        state = dir.join("state").display(),
    )
}

/// A config with a file sink at `<dir>/out.jsonl`.
pub fn file_config(
    db: &str,
    slot: &str,
    tables: &[&str],
    dir: &Path,
    extra_source: &str,
) -> String {
    let tables: Vec<String> = tables.iter().map(|t| format!("{t:?}")).collect();
    format!(
        r#"
[source]
url = "{url}"
slot = "{slot}"
tables = [{tables}]
status_interval = "200ms"
{extra_source}

[api]
listen = "off"

[state]
dir = "{state}"

[sinks.out]
type = "file"
path = "{out}"
"#,
        url = pg_url(db),
        tables = tables.join(", "),
        state = dir.join("state").display(),
        out = dir.join("out.jsonl").display(),
    )
}
