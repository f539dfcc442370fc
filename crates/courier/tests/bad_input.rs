//! Bad input gets a clear error naming the fix, and `courier check`
//! reports one line per check.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn write_config(name: &str, text: &str) -> String {
    let dir = scratch(name);
    let path = dir.join("courier.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn run_once(config: &str) -> (i32, String) {
    let (code, out, err) = courier_cmd(&["run", "--config", config]);
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn unknown_config_key_is_named() {
    let dir = scratch("bad_key_dir");
    let text = file_config("postgres", "bad_key", &["public.t"], &dir, "")
        .replace("[source]", "[source]\npublications = \"x\"");
    let path = write_config("bad_key", &text);
    let (code, out) = run_once(&path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown field `publications`"), "{out}");
    let (code, stdout, _) = courier_cmd(&["check", "--config", &path]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("FAIL  config") && stdout.contains("publications"),
        "{stdout}"
    );
}

#[tokio::test]
async fn unreachable_server_names_the_address() {
    let dir = scratch("unreachable_dir");
    let text = file_config("postgres", "unreachable", &["public.t"], &dir, "")
        .replace(&pg_host_port(), "127.0.0.1:1");
    let path = write_config("unreachable", &text);
    let (code, out) = run_once(&path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("127.0.0.1:1"), "{out}");
    assert!(!out.contains(":postgres@"), "the password leaked: {out}");
    let (code, stdout, _) = courier_cmd(&["check", "--config", &path]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("FAIL  postgres") && stdout.contains("fix:"),
        "{stdout}"
    );
}

#[tokio::test]
async fn table_without_key_says_how_to_add_one() {
    let db = "e2e_nokey";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE loose (a int, b text)")
        .await
        .unwrap();
    let dir = scratch("nokey");
    let path = write_config(
        "nokey_cfg",
        &file_config(db, "nokey", &["public.loose"], &dir, ""),
    );
    let (code, out) = run_once(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("public.loose") && out.contains("REPLICA IDENTITY FULL"),
        "{out}"
    );
    // Nothing was created for a config that cannot run.
    let slots = client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'nokey'",
            &[],
        )
        .await
        .unwrap();
    assert!(slots.is_empty());
    drop_db(db).await;
}

#[tokio::test]
async fn role_without_replication_is_told_to_get_it() {
    let db = "e2e_norepl";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "DROP ROLE IF EXISTS courier_norepl; CREATE ROLE courier_norepl LOGIN PASSWORD 'pw';
             CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO courier_norepl;",
        )
        .await
        .unwrap();
    let dir = scratch("norepl");
    let text = file_config(db, "norepl", &["public.t"], &dir, "")
        .replace("postgres:postgres@", "courier_norepl:pw@");
    let path = write_config("norepl_cfg", &text);
    let (code, out) = run_once(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ALTER ROLE courier_norepl REPLICATION"),
        "{out}"
    );
    let (code, stdout, _) = courier_cmd(&["check", "--config", &path]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("FAIL  role") && stdout.contains("ALTER ROLE courier_norepl REPLICATION"),
        "{stdout}"
    );
    drop_db(db).await;
}

#[tokio::test]
async fn check_passes_on_a_good_setup() {
    let db = "e2e_check";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let dir = scratch("check");
    let path = write_config(
        "check_cfg",
        &file_config(db, "check", &["public.t"], &dir, ""),
    );
    let (code, stdout, stderr) = courier_cmd(&["check", "--config", &path]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for line in [
        "ok    wal_level",
        "ok    role",
        "ok    slot",
        "ok    table public.t",
        "ok    sink out",
        "all checks passed",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    drop_db(db).await;
}

/// A throwaway cluster with `wal_level = replica`: both `run` and `check`
/// say how to switch to logical.
#[tokio::test]
async fn wal_level_replica_is_reported() {
    let dir = scratch("walreplica");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let as_pg = |args: &[&str]| {
        let st = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .current_dir("/")
            .status()
            .expect("runuser");
        assert!(st.success(), "{args:?}");
    };
    Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&dir)
        .status()
        .unwrap();
    let bin = pg_server_bin().display().to_string();
    let data_s = data.display().to_string();
    as_pg(&[
        &format!("{bin}/initdb"),
        "-D",
        &data_s,
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
    ]);
    let port = free_port();
    as_pg(&[
        &format!("{bin}/pg_ctl"), "-D", &data_s, "-w", "-l", &format!("{data_s}/log"), "-o",
        &format!("-p {port} -c listen_addresses=127.0.0.1 -c wal_level=replica -c unix_socket_directories=/tmp"), "start",
    ]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = file_config("postgres", "walreplica", &["public.t"], &dir, "")
        .replace(&pg_host_port(), &format!("127.0.0.1:{port}"));
    let (client, conn) = tokio_postgres::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let path = write_config("walreplica_cfg", &text);
    let (code, out) = run_once(&path);
    let (check_code, stdout, _) = courier_cmd(&["check", "--config", &path]);
    as_pg(&[
        &format!("{bin}/pg_ctl"),
        "-D",
        &data_s,
        "-m",
        "immediate",
        "stop",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("wal_level") && out.contains("ALTER SYSTEM SET wal_level = logical"),
        "{out}"
    );
    assert_eq!(check_code, 1);
    assert!(stdout.contains("FAIL  wal_level"), "{stdout}");
}
