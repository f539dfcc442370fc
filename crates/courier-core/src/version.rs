//! The version rule every sink applies: the newest version wins, and a later
//! change wins a tie.
//!
//! A change's version is its transaction's commit LSN (a snapshot's
//! consistent point for rows it read). All changes of one transaction share
//! a version, so among equal versions stream order decides: the change that
//! came later is the newer one. Stores apply the same rule on their side
//! (Redis's write script, `version_type=external_gte` on search servers,
//! `ReplacingMergeTree(_version)` in ClickHouse); each sink's documentation
//! says where, and these functions are the rule's one statement in Rust.

use crate::Lsn;

/// Whether a change at version `incoming`, arriving after the row a store
/// holds at version `stored`, replaces it: `true` when `incoming` is newer
/// or equal ("greater or equal"), `false` when it is older.
///
/// Within a batch, a sink that keeps one change per row asks the same
/// question of each change in stream order, with the change kept so far as
/// the stored one.
///
/// A tie goes to the incoming change because, at one version, the change
/// that arrives later is later in its transaction. Replaying a change that
/// was already applied therefore writes the same data again, which is
/// harmless; an older replayed change is never applied over newer data.
pub fn incoming_wins(stored: Lsn, incoming: Lsn) -> bool {
    incoming >= stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_and_equal_versions_win_older_ones_lose() {
        assert!(incoming_wins(Lsn(10), Lsn(11)), "newer");
        assert!(
            incoming_wins(Lsn(10), Lsn(10)),
            "a tie goes to the later change"
        );
        assert!(!incoming_wins(Lsn(10), Lsn(9)), "older");
        assert!(incoming_wins(Lsn::ZERO, Lsn::ZERO));
        assert!(incoming_wins(Lsn(u64::MAX - 1), Lsn(u64::MAX)));
        assert!(!incoming_wins(Lsn(u64::MAX), Lsn(0)));
        // Across the 32-bit halves of PostgreSQL's X/Y form.
        assert!(incoming_wins(Lsn(0xFFFF_FFFF), Lsn(0x1_0000_0000)));
    }
}
