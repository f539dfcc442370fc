//! Comparing what a store holds for one table with what PostgreSQL held at
//! a snapshot: pure bookkeeping, no I/O.
//!
//! The rule (README "Rebuild and verify"): a stored row newer than the
//! snapshot changed after it and is skipped; otherwise the store must hold
//! exactly the snapshot's row, and nothing the snapshot lacks.

use std::collections::{HashMap, HashSet};

use courier_core::Lsn;
use courier_sinks::inspect::{Digest, ExpectedRow, StoredRow};
use serde_json::Value as Json;

/// How a stored row disagrees with the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Drift {
    /// The snapshot has the row; the store has none (or a tombstone).
    Missing,
    /// The store has a row the snapshot lacks.
    Extra,
    /// Both have it, with different contents.
    Different,
}

/// One disagreement: where, and for an extra row its key as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub drift: Drift,
    pub address: Vec<u8>,
    pub key: Option<Vec<Json>>,
}

/// The counts of one table of one sink.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Rows of the snapshot.
    pub checked: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// Stored rows newer than the snapshot, which were not compared.
    pub newer: u64,
}

impl Counts {
    pub fn drift(&self) -> u64 {
        self.missing + self.extra + self.different
    }

    fn count(&mut self, d: Drift) {
        match d {
            Drift::Missing => self.missing += 1,
            Drift::Extra => self.extra += 1,
            Drift::Different => self.different += 1,
        }
    }
}

/// One table of one sink against one snapshot at `at`.
pub struct Comparison {
    at: Lsn,
    /// Snapshot rows by address: their digest, and whether the store was
    /// seen holding something there (a scan may show a key twice).
    expected: HashMap<Vec<u8>, (Digest, bool)>,
    /// When set, only these addresses are compared (a second look at what
    /// an earlier comparison found).
    only: Option<HashSet<Vec<u8>>>,
    findings: Vec<Finding>,
    extras_seen: HashSet<Vec<u8>>,
    counts: Counts,
}

impl Comparison {
    /// Compares every row.
    pub fn new(at: Lsn) -> Self {
        Comparison {
            at,
            expected: HashMap::new(),
            only: None,
            findings: Vec::new(),
            extras_seen: HashSet::new(),
            counts: Counts::default(),
        }
    }

    /// Compares only the rows at `addresses`.
    pub fn only(at: Lsn, addresses: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Comparison {
            only: Some(addresses.into_iter().collect()),
            ..Comparison::new(at)
        }
    }

    /// Whether a row at `address` is compared at all.
    pub fn wants(&self, address: &[u8]) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(address))
    }

    /// A row of the snapshot.
    pub fn expect(&mut self, row: ExpectedRow) {
        if self.wants(&row.address) {
            self.expected.insert(row.address, (row.digest, false));
        }
    }

    /// Rows the store holds.
    pub fn stored(&mut self, rows: impl IntoIterator<Item = StoredRow>) {
        for row in rows {
            if !self.wants(&row.address) {
                continue;
            }
            let expected = self.expected.get_mut(&row.address);
            if row.version > self.at {
                self.counts.newer += 1;
                if let Some(e) = expected {
                    // Accounted for: neither missing nor compared.
                    e.1 = true;
                }
                continue;
            }
            match (expected, row.digest) {
                (Some(e), _) if e.1 => {}
                (Some(e), stored) => {
                    e.1 = true;
                    match stored {
                        None => self.found(Drift::Missing, row.address, None),
                        Some(d) if d != e.0 => self.found(Drift::Different, row.address, None),
                        Some(_) => {}
                    }
                }
                // A tombstone of a row the snapshot lacks is as it should be.
                (None, None) => {}
                (None, Some(_)) => {
                    if self.extras_seen.insert(row.address.clone()) {
                        self.found(Drift::Extra, row.address, row.key);
                    }
                }
            }
        }
    }

    fn found(&mut self, drift: Drift, address: Vec<u8>, key: Option<Vec<Json>>) {
        self.counts.count(drift);
        self.findings.push(Finding {
            drift,
            address,
            key,
        });
    }

    /// The counts and every disagreement; snapshot rows the store never
    /// showed are missing.
    pub fn finish(mut self) -> (Counts, Vec<Finding>) {
        self.counts.checked = self.expected.len() as u64;
        let unseen: Vec<Vec<u8>> = self
            .expected
            .iter()
            .filter(|(_, (_, seen))| !seen)
            .map(|(a, _)| a.clone())
            .collect();
        for address in unseen {
            self.found(Drift::Missing, address, None);
        }
        self.findings
            .sort_by(|a, b| (a.drift, &a.address).cmp(&(b.drift, &b.address)));
        (self.counts, self.findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(a: &str, d: Digest) -> ExpectedRow {
        ExpectedRow {
            address: a.as_bytes().to_vec(),
            digest: d,
        }
    }

    fn st(a: &str, version: u64, d: Option<Digest>) -> StoredRow {
        StoredRow {
            address: a.as_bytes().to_vec(),
            version: Lsn(version),
            digest: d,
            key: None,
        }
    }

    fn drifts(findings: &[Finding]) -> Vec<(Drift, String)> {
        findings
            .iter()
            .map(|f| (f.drift, String::from_utf8_lossy(&f.address).into_owned()))
            .collect()
    }

    #[test]
    fn equal_rows_report_nothing() {
        let mut c = Comparison::new(Lsn(100));
        c.expect(exp("a", 1));
        c.expect(exp("b", 2));
        c.stored([st("a", 90, Some(1)), st("b", 100, Some(2))]);
        let (counts, findings) = c.finish();
        assert_eq!(counts.checked, 2);
        assert_eq!(counts.drift(), 0);
        assert!(findings.is_empty());
    }

    #[test]
    fn each_kind_of_drift_is_found() {
        let mut c = Comparison::new(Lsn(100));
        for (a, d) in [("same", 1), ("changed", 2), ("gone", 3), ("deleted", 4)] {
            c.expect(exp(a, d));
        }
        c.stored([
            st("same", 50, Some(1)),
            st("changed", 50, Some(99)),
            st("deleted", 50, None),
            st("stray", 50, Some(5)),
            // A tombstone of a row PostgreSQL does not have either.
            st("old-delete", 50, None),
        ]);
        let (counts, findings) = c.finish();
        assert_eq!((counts.missing, counts.extra, counts.different), (2, 1, 1));
        assert_eq!(
            drifts(&findings),
            vec![
                (Drift::Missing, "deleted".into()),
                (Drift::Missing, "gone".into()),
                (Drift::Extra, "stray".into()),
                (Drift::Different, "changed".into()),
            ]
        );
    }

    #[test]
    fn rows_newer_than_the_snapshot_are_skipped_not_compared() {
        let mut c = Comparison::new(Lsn(100));
        c.expect(exp("updated-later", 1));
        c.expect(exp("deleted-later", 2));
        c.stored([
            st("updated-later", 101, Some(9)),
            st("deleted-later", 120, None),
            st("inserted-later", 130, Some(3)),
        ]);
        let (counts, findings) = c.finish();
        assert_eq!(counts.newer, 3);
        assert_eq!(counts.drift(), 0, "{findings:?}");
    }

    #[test]
    fn a_key_shown_twice_by_a_scan_counts_once() {
        let mut c = Comparison::new(Lsn(100));
        c.expect(exp("a", 1));
        c.stored([st("a", 50, Some(1)), st("x", 50, Some(2))]);
        c.stored([st("a", 50, Some(1)), st("x", 50, Some(2))]);
        let (counts, _) = c.finish();
        assert_eq!((counts.checked, counts.drift(), counts.extra), (1, 1, 1));
    }

    #[test]
    fn a_second_look_compares_only_what_the_first_found() {
        let mut c = Comparison::only(Lsn(200), [b"gone".to_vec(), b"stray".to_vec()]);
        c.expect(exp("fine", 1));
        c.expect(exp("gone", 2));
        c.stored([st("fine", 150, Some(7)), st("stray", 150, Some(3))]);
        let (counts, findings) = c.finish();
        assert_eq!(counts.checked, 1);
        assert_eq!(
            drifts(&findings),
            vec![
                (Drift::Missing, "gone".into()),
                (Drift::Extra, "stray".into())
            ]
        );
    }
}
