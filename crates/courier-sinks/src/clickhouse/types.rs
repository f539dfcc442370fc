//! ClickHouse column types: the mapping from PostgreSQL types, the server
//! features it depends on, and which type changes ClickHouse can follow.

use std::fmt;

use courier_core::{Column, PgType};

/// What the connected server supports, from `SELECT version()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `major.minor` of the server.
    pub version: (u32, u32),
    /// `DateTime64` (20.1).
    pub datetime64: bool,
    /// `Date32` (21.9).
    pub date32: bool,
    /// `ReplacingMergeTree(ver, is_deleted)` (23.2).
    pub is_deleted: bool,
    /// `insert_deduplication_token` with `non_replicated_deduplication_window` (22.2).
    pub dedup_token: bool,
    /// The `async_insert` setting (21.11), which Courier sets to 0: an
    /// INSERT is answered once its rows are stored, never queued.
    pub async_insert: bool,
}

impl Features {
    /// The features of a server reporting `version` (e.g. `18.16.1`).
    pub fn of_version(version: &str) -> Features {
        let mut parts = version
            .trim()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Features {
            version: v,
            datetime64: v >= (20, 1),
            date32: v >= (21, 9),
            is_deleted: v >= (23, 2),
            dedup_token: v >= (22, 2),
            async_insert: v >= (21, 11),
        }
    }
}

/// A ClickHouse column type, as far as Courier creates or changes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChType {
    UInt8,
    UInt32,
    UInt64,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    Decimal(u16, u16),
    String,
    Uuid,
    Date,
    Date32,
    /// `DateTime('UTC')`, whole seconds.
    DateTime,
    /// `DateTime64(6, 'UTC')`, microseconds.
    DateTime64,
    Array(Box<ChType>),
    Nullable(Box<ChType>),
    /// A type Courier does not create, as the server spells it.
    Other(String),
}

impl ChType {
    /// The ClickHouse type of a PostgreSQL column on a server with `f`.
    ///
    /// Nullable where the column may hold NULL (key columns never do);
    /// arrays are never Nullable (ClickHouse has no `Nullable(Array)`), so a
    /// NULL array is stored as an empty one.
    pub fn of_column(c: &Column, f: &Features) -> ChType {
        match &c.pg_type {
            PgType::Array(inner) => {
                ChType::Array(Box::new(ChType::Nullable(Box::new(base(inner, f)))))
            }
            t if c.nullable && !c.is_key => ChType::Nullable(Box::new(base(t, f))),
            t => base(t, f),
        }
    }

    /// The type without `Nullable`.
    pub fn inner(&self) -> &ChType {
        match self {
            ChType::Nullable(t) => t,
            t => t,
        }
    }

    pub fn is_nullable(&self) -> bool {
        matches!(self, ChType::Nullable(_))
    }

    /// The type as ClickHouse spells it in `system.columns`.
    pub fn parse(s: &str) -> ChType {
        let s = s.trim();
        let (name, args) = match s.find('(') {
            Some(i) if s.ends_with(')') => (&s[..i], &s[i + 1..s.len() - 1]),
            _ => (s, ""),
        };
        match (name, args) {
            ("UInt8", "") => ChType::UInt8,
            ("UInt32", "") => ChType::UInt32,
            ("UInt64", "") => ChType::UInt64,
            ("Int16", "") => ChType::Int16,
            ("Int32", "") => ChType::Int32,
            ("Int64", "") => ChType::Int64,
            ("Float32", "") => ChType::Float32,
            ("Float64", "") => ChType::Float64,
            ("String", "") => ChType::String,
            ("UUID", "") => ChType::Uuid,
            ("Date", "") => ChType::Date,
            ("Date32", "") => ChType::Date32,
            ("DateTime", "'UTC'") => ChType::DateTime,
            ("DateTime64", a) if a.replace(' ', "") == "6,'UTC'" => ChType::DateTime64,
            ("Decimal", a) => {
                let mut it = a.split(',').map(|p| p.trim().parse::<u16>());
                match (it.next(), it.next(), it.next()) {
                    (Some(Ok(p)), Some(Ok(s)), None) => ChType::Decimal(p, s),
                    _ => ChType::Other(s.to_string()),
                }
            }
            ("Array", a) => ChType::Array(Box::new(ChType::parse(a))),
            ("Nullable", a) => ChType::Nullable(Box::new(ChType::parse(a))),
            _ => ChType::Other(s.to_string()),
        }
    }

    /// The type a column of type `self` must become to hold values of
    /// `want`, when ClickHouse can convert the stored values exactly
    /// (`ALTER TABLE ... MODIFY COLUMN`): `Ok(None)` when `self` already
    /// holds them, `Err(())` when no such change exists.
    pub(crate) fn follow(&self, want: &ChType) -> Result<Option<ChType>, ()> {
        if self == want || self == &ChType::Nullable(Box::new(want.clone())) {
            return Ok(None);
        }
        let target = match (self, want) {
            (ChType::Nullable(a), b) => ChType::Nullable(Box::new(widen(a, b.inner())?)),
            (a, ChType::Nullable(b)) => ChType::Nullable(Box::new(widen(a, b)?)),
            (a, b) => widen(a, b)?,
        };
        Ok(if &target == self { None } else { Some(target) })
    }
}

/// A non-Nullable type that holds every value of `have` and of `want`.
fn widen(have: &ChType, want: &ChType) -> Result<ChType, ()> {
    use ChType::*;
    let rank = |t: &ChType| match t {
        Int16 => Some(1),
        Int32 => Some(2),
        Int64 => Some(3),
        _ => None,
    };
    Ok(match (have, want) {
        (a, b) if a == b => a.clone(),
        (a, b) if rank(a).is_some() && rank(b).is_some() => {
            if rank(a) > rank(b) {
                a.clone()
            } else {
                b.clone()
            }
        }
        (Int16 | Int32 | Float32, Float64) => Float64,
        (Float64, Int16 | Int32 | Float32) => Float64,
        (Decimal(p1, s1), Decimal(p2, s2)) => {
            let s = (*s1).max(*s2);
            let int = (p1 - s1).max(p2 - s2);
            if int + s > 38 {
                return Err(());
            }
            Decimal(int + s, s)
        }
        (Date, Date32) | (Date32, Date) => Date32,
        (DateTime, DateTime64) | (DateTime64, DateTime) => DateTime64,
        (Array(a), Array(b)) => {
            let inner = match (a.as_ref(), b.as_ref()) {
                (Nullable(x), Nullable(y)) => Nullable(Box::new(widen(x, y)?)),
                _ => return Err(()),
            };
            Array(Box::new(inner))
        }
        // Any scalar has a text form; the other way round there may be none.
        (Array(_) | Other(_), String) => return Err(()),
        (_, String) => String,
        _ => return Err(()),
    })
}

fn base(t: &PgType, f: &Features) -> ChType {
    match t {
        PgType::Bool => ChType::UInt8,
        PgType::Int2 => ChType::Int16,
        PgType::Int4 => ChType::Int32,
        PgType::Int8 => ChType::Int64,
        PgType::Oid => ChType::UInt32,
        PgType::Float4 => ChType::Float32,
        PgType::Float8 => ChType::Float64,
        PgType::Numeric {
            precision: Some(p),
            scale: Some(s),
        } if (1..=38).contains(p) && s <= p => ChType::Decimal(*p, *s),
        PgType::Uuid => ChType::Uuid,
        PgType::Date if f.date32 => ChType::Date32,
        PgType::Date => ChType::Date,
        PgType::Timestamp | PgType::TimestampTz if f.datetime64 => ChType::DateTime64,
        PgType::Timestamp | PgType::TimestampTz => ChType::DateTime,
        // Nested arrays do not occur: PostgreSQL's array types are flat.
        PgType::Array(inner) => ChType::Array(Box::new(ChType::Nullable(Box::new(base(inner, f))))),
        _ => ChType::String,
    }
}

impl fmt::Display for ChType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChType::UInt8 => f.write_str("UInt8"),
            ChType::UInt32 => f.write_str("UInt32"),
            ChType::UInt64 => f.write_str("UInt64"),
            ChType::Int16 => f.write_str("Int16"),
            ChType::Int32 => f.write_str("Int32"),
            ChType::Int64 => f.write_str("Int64"),
            ChType::Float32 => f.write_str("Float32"),
            ChType::Float64 => f.write_str("Float64"),
            ChType::Decimal(p, s) => write!(f, "Decimal({p}, {s})"),
            ChType::String => f.write_str("String"),
            ChType::Uuid => f.write_str("UUID"),
            ChType::Date => f.write_str("Date"),
            ChType::Date32 => f.write_str("Date32"),
            ChType::DateTime => f.write_str("DateTime('UTC')"),
            ChType::DateTime64 => f.write_str("DateTime64(6, 'UTC')"),
            ChType::Array(t) => write!(f, "Array({t})"),
            ChType::Nullable(t) => write!(f, "Nullable({t})"),
            ChType::Other(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_what_it_prints() {
        for t in [
            ChType::Nullable(Box::new(ChType::Decimal(12, 2))),
            ChType::Array(Box::new(ChType::Nullable(Box::new(ChType::String)))),
            ChType::DateTime,
            ChType::DateTime64,
            ChType::Uuid,
        ] {
            assert_eq!(ChType::parse(&t.to_string()), t);
        }
        assert_eq!(
            ChType::parse("LowCardinality(String)"),
            ChType::Other("LowCardinality(String)".into())
        );
    }

    #[test]
    fn follows_widening_and_refuses_narrowing() {
        let n = |t| ChType::Nullable(Box::new(t));
        assert_eq!(
            ChType::Int32.follow(&ChType::Int64),
            Ok(Some(ChType::Int64))
        );
        assert_eq!(ChType::Int64.follow(&ChType::Int32), Ok(None));
        assert_eq!(
            ChType::Int32.follow(&n(ChType::Int32)),
            Ok(Some(n(ChType::Int32)))
        );
        assert_eq!(n(ChType::Int32).follow(&ChType::Int32), Ok(None));
        assert_eq!(
            n(ChType::Decimal(12, 2)).follow(&n(ChType::Decimal(14, 4))),
            Ok(Some(n(ChType::Decimal(14, 4))))
        );
        assert_eq!(
            ChType::Int64.follow(&ChType::String),
            Ok(Some(ChType::String))
        );
        assert_eq!(ChType::String.follow(&ChType::Int64), Err(()));
        assert_eq!(ChType::Uuid.follow(&ChType::Int64), Err(()));
    }

    #[test]
    fn gates_types_on_the_server_version() {
        let old = Features::of_version("18.16.1");
        assert!(!old.datetime64 && !old.date32 && !old.is_deleted && !old.dedup_token);
        assert!(!old.async_insert);
        let new = Features::of_version("26.9.2.1");
        assert!(new.datetime64 && new.date32 && new.is_deleted && new.dedup_token);
        assert!(new.async_insert);
    }
}
