//! A PostgreSQL primary and its physical standby of their own
//! (`dev/pg-failover.sh` on free ports, data under the target folder), for
//! the tests that need a standby.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_postgres::{Client, NoTls};

use super::free_port;

/// A primary and its standby, destroyed when dropped.
pub struct Pair {
    pub home: PathBuf,
    pub primary: u16,
    pub standby: u16,
}

impl Pair {
    /// Creates and starts a new pair (removing one an earlier run left).
    pub fn start(name: &str) -> Pair {
        let pair = Pair {
            home: Path::new(env!("CARGO_TARGET_TMPDIR")).join(name),
            primary: free_port(),
            standby: free_port(),
        };
        pair.script("destroy");
        pair.script("start");
        pair
    }

    pub fn script(&self, command: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/pg-failover.sh");
        let st = Command::new("bash")
            .arg(script)
            .arg(command)
            .env("COURIER_PG_FAILOVER_HOME", &self.home)
            .env("COURIER_PG_FAILOVER_PORT", self.primary.to_string())
            .env("COURIER_PG_FAILOVER_STANDBY_PORT", self.standby.to_string())
            .status()
            .expect("run dev/pg-failover.sh");
        assert!(st.success(), "dev/pg-failover.sh {command} failed");
    }

    /// Creates the database `db` on the primary; a client of it there.
    pub async fn create_database(&self, db: &str) -> Client {
        connect(self.primary, "postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap_or_else(|e| panic!("create database {db}: {e}"));
        connect(self.primary, db).await
    }

    /// The superuser URL of one node.
    pub fn url(port: u16, db: &str) -> String {
        format!("postgres://postgres:postgres@127.0.0.1:{port}/{db}")
    }

    /// Both nodes, the standby first: Courier must pass it over while it
    /// is a standby, and land on it once it is promoted.
    pub fn multi_host_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
            self.standby, self.primary
        )
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.script("destroy");
    }
}

pub async fn connect(port: u16, db: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(&Pair::url(port, db), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}/{db}: {e}"));
    tokio::spawn(conn);
    client
}
