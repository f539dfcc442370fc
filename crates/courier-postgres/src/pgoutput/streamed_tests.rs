use super::*;
use crate::pgoutput::message::{self, Message};

fn start(xid: u32, first: bool) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'S');
    b.put_u32(xid);
    b.put_u8(u8::from(first));
    b.freeze()
}

fn stop() -> Bytes {
    Bytes::from_static(b"E")
}

/// A streamed Insert of one text column into relation 16384.
fn insert(subxid: u32, value: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'I');
    b.put_u32(subxid);
    b.put_u32(16384);
    b.put_u8(b'N');
    b.put_u16(1);
    b.put_u8(b't');
    b.put_u32(value.len() as u32);
    b.put_slice(value.as_bytes());
    b.freeze()
}

fn relation(subxid: u32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'R');
    b.put_u32(subxid);
    b.put_u32(16384);
    b.put_slice(b"public\0items\0");
    b.put_u8(b'd');
    b.put_u16(1);
    b.put_u8(1);
    b.put_slice(b"v\0");
    b.put_u32(25);
    b.put_i32(-1);
    b.freeze()
}

fn commit(xid: u32, lsn: u64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'c');
    b.put_u32(xid);
    b.put_u8(0);
    b.put_u64(lsn);
    b.put_u64(lsn + 48);
    b.put_u64(1_000_000);
    b.freeze()
}

fn abort(xid: u32, subxid: u32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'A');
    b.put_u32(xid);
    b.put_u32(subxid);
    b.freeze()
}

fn replayed(routed: Routed) -> Vec<Message> {
    let Routed::Committed(mut replay) = routed else {
        panic!("expected a commit, got {routed:?}");
    };
    let mut out = Vec::new();
    while let Some(m) = replay.next_message().unwrap() {
        out.push(message::parse(m).unwrap());
    }
    out
}

fn inserted(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Insert(i) => match &i.new[0] {
                message::TupleValue::Text(t) => Some(String::from_utf8(t.to_vec()).unwrap()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn spill_files(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

/// Runs two interleaved streamed transactions and an ordinary message
/// between their blocks, with `budget` bytes of memory.
fn interleaved(budget: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Streamed::open(dir.path(), budget).unwrap();
    assert!(matches!(
        s.route(start(700, true)).unwrap(),
        Routed::Started {
            xid: 700,
            first_segment: true
        }
    ));
    assert!(matches!(s.route(relation(700)).unwrap(), Routed::Held));
    for i in 0..100 {
        assert!(matches!(
            s.route(insert(700, &format!("a{i}"))).unwrap(),
            Routed::Held
        ));
    }
    s.route(stop()).unwrap();
    // An ordinary transaction between blocks passes through untouched.
    let begin = Bytes::from_static(b"B-not-parsed-here");
    assert!(matches!(s.route(begin.clone()).unwrap(), Routed::Message(m) if m == begin));
    s.route(start(701, true)).unwrap();
    s.route(relation(701)).unwrap();
    s.route(insert(701, "b0")).unwrap();
    s.route(stop()).unwrap();
    s.route(start(700, false)).unwrap();
    for i in 100..200 {
        s.route(insert(702, &format!("a{i}"))).unwrap();
    }
    s.route(stop()).unwrap();
    assert_eq!(s.in_progress(), 2);
    assert!(s.in_memory() <= budget);

    let messages = replayed(s.route(commit(700, 0x1000)).unwrap());
    let Message::Begin(b) = &messages[0] else {
        panic!("expected Begin first");
    };
    assert_eq!((b.final_lsn, b.xid), (Lsn(0x1000), 700));
    let Some(Message::Commit(c)) = messages.last() else {
        panic!("expected Commit last");
    };
    assert_eq!((c.commit_lsn, c.end_lsn), (Lsn(0x1000), Lsn(0x1030)));
    assert_eq!(b.commit_time_us, c.commit_time_us);
    let expected: Vec<String> = (0..200).map(|i| format!("a{i}")).collect();
    assert_eq!(inserted(&messages), expected);
    assert!(matches!(messages[1], Message::Relation(_)));

    // The other one aborts: nothing of it is replayed, no file stays.
    assert!(matches!(
        s.route(abort(701, 701)).unwrap(),
        Routed::Aborted { xid: 701, .. }
    ));
    assert_eq!(s.in_progress(), 0);
    assert_eq!(s.in_memory(), 0);
    assert_eq!(spill_files(dir.path()), 0);
}

#[test]
fn replays_a_committed_transaction_in_order_from_memory() {
    interleaved(1 << 20);
}

#[test]
fn replays_a_committed_transaction_in_order_from_its_file() {
    interleaved(256);
}

#[test]
fn leaves_out_a_rolled_back_subtransaction_but_keeps_its_table_descriptions() {
    for budget in [1 << 20, 0] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Streamed::open(dir.path(), budget).unwrap();
        s.route(start(800, true)).unwrap();
        s.route(insert(800, "kept-1")).unwrap();
        s.route(relation(801)).unwrap();
        s.route(insert(801, "gone")).unwrap();
        s.route(insert(802, "kept-2")).unwrap();
        s.route(stop()).unwrap();
        if budget == 0 {
            assert_eq!(spill_files(dir.path()), 1);
        }
        s.route(abort(800, 801)).unwrap();
        let messages = replayed(s.route(commit(800, 0x2000)).unwrap());
        assert_eq!(inserted(&messages), ["kept-1", "kept-2"]);
        assert!(messages.iter().any(|m| matches!(m, Message::Relation(_))));
        assert_eq!(spill_files(dir.path()), 0);
    }
}

#[test]
fn a_first_segment_again_starts_the_transaction_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Streamed::open(dir.path(), 0).unwrap();
    s.route(start(900, true)).unwrap();
    s.route(insert(900, "old")).unwrap();
    s.route(stop()).unwrap();
    s.route(start(900, true)).unwrap();
    s.route(insert(900, "new")).unwrap();
    s.route(stop()).unwrap();
    let messages = replayed(s.route(commit(900, 0x3000)).unwrap());
    assert_eq!(inserted(&messages), ["new"]);
}

#[test]
fn a_commit_of_an_unknown_transaction_is_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Streamed::open(dir.path(), 0).unwrap();
    let messages = replayed(s.route(commit(950, 0x4000)).unwrap());
    assert_eq!(messages.len(), 2);
}

#[test]
fn opening_removes_files_a_previous_run_left() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("stream-42"), b"half a record").unwrap();
    fs::write(dir.path().join("other"), b"kept").unwrap();
    Streamed::open(dir.path(), 0).unwrap();
    assert_eq!(spill_files(dir.path()), 1);
}

#[test]
fn refuses_malformed_and_misplaced_stream_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Streamed::open(dir.path(), 0).unwrap();
    assert!(s.route(Bytes::from_static(b"S\0\0")).is_err());
    assert!(s.route(stop()).is_err());
    assert!(s.route(Bytes::from_static(b"c\0\0\0\x01")).is_err());
    assert!(s.route(Bytes::from_static(b"A\0\0\0\x01")).is_err());
    s.route(start(1, true)).unwrap();
    assert!(s.route(start(2, true)).is_err());
    assert!(s.route(Bytes::from_static(b"I\0\0")).is_err());
    assert!(s.route(commit(1, 5)).is_err());
    assert!(s.route(Bytes::from_static(b"B")).is_err());
}
