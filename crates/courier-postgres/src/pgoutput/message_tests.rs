use super::*;

/// Builds pgoutput messages byte by byte.
#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn tag(c: u8) -> Self {
        Buf(vec![c])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    fn text(self, s: &str) -> Self {
        let mut b = self.u8(b't').i32(s.len() as i32);
        b.0.extend_from_slice(s.as_bytes());
        b
    }
    fn parse(self) -> Result<Message, DecodeError> {
        parse(Bytes::from(self.0))
    }
}

const UNIX_2024: i64 = 1_704_067_200_000_000; // 2024-01-01T00:00:00Z
const PG_2024: i64 = UNIX_2024 - 946_684_800_000_000;

#[test]
fn parses_begin_and_commit() {
    let m = Buf::tag(b'B')
        .u64(0x16_B374_D848)
        .i64(PG_2024)
        .u32(771)
        .parse()
        .unwrap();
    assert_eq!(
        m,
        Message::Begin(Begin {
            final_lsn: Lsn(0x16_B374_D848),
            commit_time_us: UNIX_2024,
            xid: 771
        })
    );
    let m = Buf::tag(b'C')
        .u8(0)
        .u64(10)
        .u64(20)
        .i64(PG_2024 + 1)
        .parse()
        .unwrap();
    assert_eq!(
        m,
        Message::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(10),
            end_lsn: Lsn(20),
            commit_time_us: UNIX_2024 + 1
        })
    );
}

#[test]
fn parses_relation_type_and_origin() {
    let m = Buf::tag(b'R')
        .u32(16384)
        .str("public")
        .str("products")
        .u8(b'd')
        .u16(2)
        .u8(1)
        .str("id")
        .u32(23)
        .i32(-1)
        .u8(0)
        .str("price")
        .u32(1700)
        .i32((12 << 16 | 2) + 4)
        .parse()
        .unwrap();
    let Message::Relation(r) = m else {
        panic!("not a relation: {m:?}")
    };
    assert_eq!(
        (r.oid, r.namespace.as_str(), r.name.as_str()),
        (16384, "public", "products")
    );
    assert_eq!(r.replica_identity, b'd');
    assert_eq!(
        r.columns[1],
        RelationColumn {
            is_key: false,
            name: "price".into(),
            type_oid: 1700,
            type_modifier: (12 << 16 | 2) + 4
        }
    );
    assert!(r.columns[0].is_key);

    let m = Buf::tag(b'Y')
        .u32(90000)
        .str("public")
        .str("mood")
        .parse()
        .unwrap();
    assert_eq!(
        m,
        Message::Type(TypeMessage {
            oid: 90000,
            namespace: "public".into(),
            name: "mood".into()
        })
    );
    let m = Buf::tag(b'O').u64(5).str("east").parse().unwrap();
    assert_eq!(
        m,
        Message::Origin(Origin {
            commit_lsn: Lsn(5),
            name: "east".into()
        })
    );
}

#[test]
fn parses_row_changes() {
    let m = Buf::tag(b'I')
        .u32(7)
        .u8(b'N')
        .u16(3)
        .text("1")
        .u8(b'n')
        .text("東京")
        .parse()
        .unwrap();
    assert_eq!(
        m,
        Message::Insert(Insert {
            relation_oid: 7,
            new: vec![
                TupleValue::Text(Bytes::from_static(b"1")),
                TupleValue::Null,
                TupleValue::Text(Bytes::from("東京")),
            ]
        })
    );

    let plain = Buf::tag(b'U').u32(7).u8(b'N').u16(2).text("1").u8(b'u');
    let Message::Update(u) = plain.parse().unwrap() else {
        panic!()
    };
    assert_eq!(u.old, None);
    assert_eq!(u.new[1], TupleValue::UnchangedToast);

    let keyed = Buf::tag(b'U')
        .u32(7)
        .u8(b'K')
        .u16(2)
        .text("1")
        .u8(b'n')
        .u8(b'N')
        .u16(2)
        .text("2")
        .text("x");
    let Message::Update(u) = keyed.parse().unwrap() else {
        panic!()
    };
    assert_eq!(
        u.old,
        Some(OldTuple::Key(vec![
            TupleValue::Text(Bytes::from_static(b"1")),
            TupleValue::Null
        ]))
    );

    let full = Buf::tag(b'U')
        .u32(7)
        .u8(b'O')
        .u16(1)
        .text("a")
        .u8(b'N')
        .u16(1)
        .text("b");
    assert!(matches!(
        full.parse().unwrap(),
        Message::Update(Update {
            old: Some(OldTuple::Full(_)),
            ..
        })
    ));

    let delete = Buf::tag(b'D').u32(7).u8(b'K').u16(1).text("1");
    assert_eq!(
        delete.parse().unwrap(),
        Message::Delete(Delete {
            relation_oid: 7,
            old: OldTuple::Key(vec![TupleValue::Text(Bytes::from_static(b"1"))])
        })
    );
}

#[test]
fn parses_truncate_and_logical_messages() {
    let m = Buf::tag(b'T').u32(2).u8(3).u32(7).u32(8).parse().unwrap();
    assert_eq!(
        m,
        Message::Truncate(Truncate {
            cascade: true,
            restart_identity: true,
            relation_oids: vec![7, 8]
        })
    );
    let mut b = Buf::tag(b'M').u8(1).u64(99).str("courier").i32(3);
    b.0.extend_from_slice(b"a\0b");
    assert_eq!(
        b.parse().unwrap(),
        Message::Logical(LogicalMessage {
            transactional: true,
            lsn: Lsn(99),
            prefix: "courier".into(),
            content: Bytes::from_static(b"a\0b")
        })
    );
}

#[test]
fn column_values_share_the_input_buffer() {
    let data = Bytes::from(Buf::tag(b'I').u32(7).u8(b'N').u16(1).text("hello").0);
    let start = data.as_ptr() as usize;
    let Message::Insert(i) = parse(data).unwrap() else {
        panic!()
    };
    let TupleValue::Text(v) = &i.new[0] else {
        panic!()
    };
    assert_eq!(v.as_ptr() as usize, start + 13);
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let full = Buf::tag(b'U')
        .u32(7)
        .u8(b'O')
        .u16(2)
        .text("a")
        .u8(b'u')
        .u8(b'N')
        .u16(1)
        .text("b")
        .0;
    // Every truncation of a valid message is rejected.
    for len in 0..full.len() {
        assert!(
            parse(Bytes::copy_from_slice(&full[..len])).is_err(),
            "len {len}"
        );
    }
    let bad = [
        Buf::tag(b'Z').u32(1),
        Buf::tag(b'I').u32(7).u8(b'X'),
        Buf::tag(b'I').u32(7).u8(b'N').u16(1).u8(b't').i32(-1),
        Buf::tag(b'I').u32(7).u8(b'N').u16(1).u8(b't').i32(100),
        Buf::tag(b'I').u32(7).u8(b'N').u16(1).u8(b'b').i32(0),
        Buf::tag(b'D').u32(7).u8(b'N').u16(0),
        Buf::tag(b'T').u32(u32::MAX).u8(0),
        Buf::tag(b'Y').u32(1).str("ns").u8(b'x'),
        Buf::tag(b'B').u64(1).i64(1).u32(1).u8(0),
    ];
    for b in bad {
        assert!(b.parse().is_err());
    }
    assert!(matches!(
        Buf::tag(b'S').parse(),
        Err(DecodeError::UnknownMessage { tag: 'S' })
    ));
}
