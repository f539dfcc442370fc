//! Text of replication commands, with names and option values quoted the
//! way the walsender's command parser expects.

use courier_core::Lsn;

use crate::conn::PgError;

/// Checks a slot name against PostgreSQL's rule (1-63 characters of
/// `a-z`, `0-9`, `_`) so a bad name fails with a clear message locally.
pub(crate) fn check_slot_name(name: &str) -> Result<(), PgError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(PgError::config(
            "slot",
            format!(
                "{name:?} is not a valid replication slot name: use 1 to 63 lower-case \
                 letters, digits and underscores"
            ),
        ))
    }
}

/// `"name"`, with embedded double quotes doubled.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'`, with embedded single quotes doubled.
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `CREATE_REPLICATION_SLOT` in the syntax every server since 10 accepts.
pub(crate) fn create_logical_slot(name: &str, temporary: bool, export_snapshot: bool) -> String {
    format!(
        "CREATE_REPLICATION_SLOT {}{} LOGICAL pgoutput {}",
        quote_ident(name),
        if temporary { " TEMPORARY" } else { "" },
        if export_snapshot {
            "EXPORT_SNAPSHOT"
        } else {
            "NOEXPORT_SNAPSHOT"
        }
    )
}

/// `CREATE_REPLICATION_SLOT` of a permanent failover slot (PostgreSQL 17+),
/// in the option-list syntax of PostgreSQL 15+.
pub(crate) fn create_failover_slot(name: &str, export_snapshot: bool) -> String {
    format!(
        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{}', FAILOVER)",
        quote_ident(name),
        if export_snapshot { "export" } else { "nothing" }
    )
}

/// `ALTER_REPLICATION_SLOT name (FAILOVER)` (PostgreSQL 17+).
pub(crate) fn make_failover_slot(name: &str) -> String {
    format!("ALTER_REPLICATION_SLOT {} (FAILOVER)", quote_ident(name))
}

/// `START_REPLICATION SLOT name LOGICAL X/Y ("k" 'v', ...)`.
pub(crate) fn start_logical_replication(
    slot: &str,
    start: Lsn,
    options: &[(&str, &str)],
) -> String {
    let mut command = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_ident(slot)
    );
    if !options.is_empty() {
        let rendered: Vec<String> = options
            .iter()
            .map(|(key, value)| format!("{} {}", quote_ident(key), quote_literal(value)))
            .collect();
        command.push_str(" (");
        command.push_str(&rendered.join(", "));
        command.push(')');
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_start_replication_with_quoted_options() {
        let command = start_logical_replication(
            "courier",
            Lsn(0x1_0000_00A0),
            &[
                ("proto_version", "1"),
                ("publication_names", "o'brien,\"x\""),
            ],
        );
        assert_eq!(
            command,
            "START_REPLICATION SLOT \"courier\" LOGICAL 1/A0 \
             (\"proto_version\" '1', \"publication_names\" 'o''brien,\"x\"')"
        );
        assert_eq!(
            start_logical_replication("s", Lsn::ZERO, &[]),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0"
        );
    }

    #[test]
    fn renders_create_slot() {
        assert_eq!(
            create_logical_slot("snap_1", true, true),
            "CREATE_REPLICATION_SLOT \"snap_1\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_logical_slot("main", false, false),
            "CREATE_REPLICATION_SLOT \"main\" LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
    }

    #[test]
    fn renders_failover_slot_commands() {
        assert_eq!(
            create_failover_slot("main", true),
            "CREATE_REPLICATION_SLOT \"main\" LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER)"
        );
        assert_eq!(
            create_failover_slot("main", false),
            "CREATE_REPLICATION_SLOT \"main\" LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER)"
        );
        assert_eq!(
            make_failover_slot("main"),
            "ALTER_REPLICATION_SLOT \"main\" (FAILOVER)"
        );
    }

    #[test]
    fn rejects_invalid_slot_names() {
        assert!(check_slot_name("courier_1").is_ok());
        for bad in ["", "Courier", "a-b", "x\"; DROP", &"a".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad:?}");
        }
    }
}
