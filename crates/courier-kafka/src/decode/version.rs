//! The version each decoded change carries (the module documentation of
//! [`super`] says why it is safe), and what a partition remembers for its
//! tombstones.

use courier_core::{Lsn, Op};

use super::envelope::Source;

/// Header with the commit LSN of the change, on every record of Courier's
/// Kafka sink (its tombstones included).
pub(super) const COURIER_LSN_HEADER: &str = "courier.lsn";
/// Header with the change's transaction id, on Courier's records.
pub(super) const COURIER_TXID_HEADER: &str = "courier.txid";

/// Who wrote a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Producer {
    /// Courier's Kafka sink: `source.lsn` and the `courier.lsn` header are
    /// the commit LSN.
    Courier,
    /// Debezium's PostgreSQL connector: `source.lsn` is the change's own
    /// LSN, `source.sequence` `["<last commit LSN>", "<lsn>"]`.
    Debezium,
}

impl Producer {
    /// Courier's records say so in `source.version` (`courier-<version>`)
    /// and carry the `courier.lsn` header.
    pub(super) fn of(source: &Source<'_>, courier_lsn: Option<&[u8]>) -> Producer {
        let courier = courier_lsn.is_some()
            || source
                .version
                .as_deref()
                .is_some_and(|v| v.starts_with("courier-"));
        if courier {
            Producer::Courier
        } else {
            Producer::Debezium
        }
    }
}

/// A decimal header value as a number.
pub(super) fn header_number(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The version of a change; `Err` names what is missing.
pub(super) fn of_change(
    producer: Producer,
    op: Op,
    source: &Source<'_>,
    courier_lsn: Option<&[u8]>,
) -> Result<Lsn, &'static str> {
    match producer {
        Producer::Courier => courier_lsn
            .and_then(header_number)
            .or(source.lsn)
            .map(Lsn)
            .ok_or("no courier.lsn header and no source.lsn"),
        Producer::Debezium => {
            if let Some(last_commit) = source.sequence.as_deref().and_then(last_commit_lsn) {
                return Ok(last_commit);
            }
            if op == Op::Read {
                return Ok(Lsn::ZERO);
            }
            source
                .lsn
                .map(Lsn)
                .ok_or("no source.sequence and no source.lsn")
        }
    }
}

/// The first element of Debezium's `source.sequence`, `["<lastCommitLsn>",
/// "<lsn>"]`, when it is not null.
fn last_commit_lsn(sequence: &str) -> Option<Lsn> {
    // `["123","456"]` as Debezium writes it, without a JSON parse.
    if let Some(rest) = sequence.strip_prefix("[\"") {
        let digits = &rest[..rest.find('"')?];
        return digits.parse().ok().map(Lsn);
    }
    let parts: Vec<Option<String>> = serde_json::from_str(sequence).ok()?;
    parts.first()?.as_deref()?.parse().ok().map(Lsn)
}

/// What a partition's earlier records tell about its next tombstone.
#[derive(Debug, Default)]
pub(super) struct PartitionState {
    /// The offset of the partition's last record decoded.
    last_offset: Option<i64>,
    /// The key of the delete that was the partition's last record.
    last_delete: Option<Vec<u8>>,
    /// The greatest version decoded from the partition since it was
    /// (re)assigned.
    greatest: Option<Lsn>,
}

impl PartitionState {
    /// Takes note of a record at `offset` before it is decoded: an offset
    /// not after the last one means the partition is read again from an
    /// earlier position (a seek, a replay), so what came just before it is
    /// not known any more.
    pub(super) fn at(&mut self, offset: i64) {
        if self.last_offset.is_some_and(|last| offset <= last) {
            *self = PartitionState::default();
        }
        self.last_offset = Some(offset);
    }

    /// Records a decoded change.
    pub(super) fn decoded(&mut self, op: Op, key: Option<&[u8]>, version: Lsn) {
        self.last_delete = key.filter(|_| op == Op::Delete).map(<[u8]>::to_vec);
        self.greatest = Some(self.greatest.map_or(version, |g| g.max(version)));
    }

    /// Whether a tombstone with `key` directly follows the delete of the
    /// same key (and forgets that delete).
    pub(super) fn follows_its_delete(&mut self, key: &[u8]) -> bool {
        self.last_delete.take().is_some_and(|k| k == key)
    }

    /// The version of a tombstone that follows no delete of its key, when
    /// the record gives none: the greatest version decoded from the
    /// partition so far (records of a partition are in version order), or
    /// zero when it is the first.
    pub(super) fn lone_tombstone_version(&self) -> Lsn {
        self.greatest.unwrap_or(Lsn::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(json: &str) -> Source<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn debezium_changes_carry_the_last_commit_before_them() {
        let s = source(r#"{"sequence":"[\"10228925800\",\"10228925936\"]","lsn":10228925936}"#);
        assert_eq!(
            of_change(Producer::Debezium, Op::Update, &s, None),
            Ok(Lsn(10_228_925_800))
        );
        // The first transaction after a snapshot has no last commit: its
        // change LSN (never above its commit).
        let s = source(r#"{"sequence":"[null,\"10228920528\"]","lsn":10228920528}"#);
        assert_eq!(
            of_change(Producer::Debezium, Op::Insert, &s, None),
            Ok(Lsn(10_228_920_528))
        );
        // Snapshot reads without a last commit rank below every change.
        let s =
            source(r#"{"sequence":"[null,\"10228914512\"]","lsn":10228914512,"snapshot":"true"}"#);
        assert_eq!(
            of_change(Producer::Debezium, Op::Read, &s, None),
            Ok(Lsn::ZERO)
        );
        assert!(of_change(Producer::Debezium, Op::Insert, &source("{}"), None).is_err());
        let spaced = source(r#"{"sequence":"[ \"7\" , \"9\" ]","lsn":9}"#);
        assert_eq!(
            of_change(Producer::Debezium, Op::Update, &spaced, None),
            Ok(Lsn(7))
        );
    }

    #[test]
    fn courier_changes_carry_their_commit_lsn() {
        let s = source(r#"{"version":"courier-0.1.0","lsn":77,"sequence":null}"#);
        assert_eq!(Producer::of(&s, None), Producer::Courier);
        assert_eq!(
            of_change(Producer::Courier, Op::Read, &s, None),
            Ok(Lsn(77))
        );
        assert_eq!(
            of_change(Producer::Courier, Op::Insert, &s, Some(b"78")),
            Ok(Lsn(78))
        );
        let d = source(r#"{"version":"3.6.1.Final"}"#);
        assert_eq!(Producer::of(&d, None), Producer::Debezium);
        assert_eq!(Producer::of(&d, Some(b"1")), Producer::Courier);
    }

    #[test]
    fn tombstones_know_their_delete() {
        let mut p = PartitionState::default();
        assert_eq!(p.lone_tombstone_version(), Lsn::ZERO);
        p.decoded(Op::Delete, Some(b"k1"), Lsn(5));
        assert!(!p.follows_its_delete(b"k2"));
        p.decoded(Op::Delete, Some(b"k1"), Lsn(6));
        assert!(p.follows_its_delete(b"k1"));
        assert!(!p.follows_its_delete(b"k1"), "only once");
        p.decoded(Op::Update, Some(b"k1"), Lsn(4));
        assert!(!p.follows_its_delete(b"k1"));
        assert_eq!(p.lone_tombstone_version(), Lsn(6));
        // Read again from an earlier offset: nothing is known of before.
        p.at(10);
        p.decoded(Op::Delete, Some(b"k2"), Lsn(7));
        p.at(3);
        assert!(!p.follows_its_delete(b"k2"));
        assert_eq!(p.lone_tombstone_version(), Lsn::ZERO);
    }
}
