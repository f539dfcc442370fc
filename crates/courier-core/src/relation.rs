use std::fmt;

/// A table's identity: schema and name, as PostgreSQL spells them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub schema: String,
    pub name: String,
}

impl TableId {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The identifier quoted for use in SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The PostgreSQL type of a column, resolved through domains to the base type.
///
/// Sinks map from this to their own column types; values of the column arrive
/// as the matching [`crate::Value`] variant (see each variant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgType {
    /// `bool` → `Value::Bool`
    Bool,
    /// `int2` → `Value::Int`
    Int2,
    /// `int4` → `Value::Int`
    Int4,
    /// `int8` → `Value::Int`
    Int8,
    /// `oid` → `Value::Int`
    Oid,
    /// `float4` → `Value::Float4`
    Float4,
    /// `float8` → `Value::Float8`
    Float8,
    /// `numeric(p,s)` → `Value::Numeric`; precision and scale when declared.
    Numeric {
        precision: Option<u16>,
        scale: Option<u16>,
    },
    /// `text`, `varchar`, `bpchar`, `name`, `citext`, `char` → `Value::Text`
    Text,
    /// `bytea` → `Value::Bytes`
    Bytea,
    /// `uuid` → `Value::Uuid`
    Uuid,
    /// `date` → `Value::Date`
    Date,
    /// `time` → `Value::Time`
    Time,
    /// `timetz` → `Value::Time`
    TimeTz,
    /// `timestamp` → `Value::Timestamp`
    Timestamp,
    /// `timestamptz` → `Value::TimestampTz` (always UTC)
    TimestampTz,
    /// `interval` → `Value::Text` (ISO 8601 duration)
    Interval,
    /// `json` → `Value::Json`
    Json,
    /// `jsonb` → `Value::Json`
    Jsonb,
    /// A user-defined enum → `Value::Text` (the label)
    Enum,
    /// An array of the element type → `Value::Array`
    Array(Box<PgType>),
    /// Anything else (`inet`, `money`, geometric, ranges, ...) → `Value::Text`
    /// holding PostgreSQL's text form.
    Other,
}

impl PgType {
    /// The type of a built-in OID, or `None` for OIDs that need a catalog look-up.
    pub fn from_builtin_oid(oid: u32) -> Option<PgType> {
        use PgType::*;
        let t = match oid {
            16 => Bool,
            17 => Bytea,
            18 | 19 | 25 | 1042 | 1043 => Text,
            20 => Int8,
            21 => Int2,
            23 => Int4,
            26 => Oid,
            114 => Json,
            3802 => Jsonb,
            700 => Float4,
            701 => Float8,
            1700 => Numeric {
                precision: None,
                scale: None,
            },
            2950 => Uuid,
            1082 => Date,
            1083 => Time,
            1266 => TimeTz,
            1114 => Timestamp,
            1184 => TimestampTz,
            1186 => Interval,
            // inet, cidr, macaddr, macaddr8, money, point, lseg, path, box,
            // polygon, line, circle, bit, varbit, xml, tsvector, tsquery,
            // pg_lsn, int4range..tstzrange
            869 | 650 | 829 | 774 | 790 | 600 | 601 | 602 | 603 | 604 | 628 | 718 | 1560 | 1562
            | 142 | 3614 | 3615 | 3220 | 3904 | 3906 | 3908 | 3910 | 3912 | 3926 => Other,
            _ => {
                let elem = builtin_array_element(oid)?;
                Array(Box::new(PgType::from_builtin_oid(elem)?))
            }
        };
        Some(t)
    }

    /// Applies a type modifier (`atttypmod`) where it carries meaning.
    pub fn with_modifier(self, typmod: i32) -> PgType {
        match self {
            PgType::Numeric { .. } if typmod >= 4 => {
                let m = typmod - 4;
                PgType::Numeric {
                    precision: Some(((m >> 16) & 0xFFFF) as u16),
                    scale: Some((m & 0xFFFF) as u16),
                }
            }
            PgType::Array(inner) => PgType::Array(Box::new(inner.with_modifier(typmod))),
            other => other,
        }
    }
}

fn builtin_array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => 16,
        1001 => 17,
        1002 => 18,
        1003 => 19,
        1016 => 20,
        1005 => 21,
        1007 => 23,
        1009 => 25,
        1028 => 26,
        199 => 114,
        3807 => 3802,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        2951 => 2950,
        1182 => 1082,
        1183 => 1083,
        1270 => 1266,
        1115 => 1114,
        1185 => 1184,
        1187 => 1186,
        1014 => 1042,
        1015 => 1043,
        1041 => 869,
        651 => 650,
        1040 => 829,
        791 => 790,
        _ => return None,
    })
}

/// One column of a table as Courier streams it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The column's type OID as PostgreSQL reports it (the domain's, for domains).
    pub type_oid: u32,
    /// `atttypmod`, or -1.
    pub type_modifier: i32,
    /// The SQL name of the type, e.g. `numeric(12,2)`, `text[]`, `mood`.
    pub type_name: String,
    /// The resolved type that decides the value's shape.
    pub pg_type: PgType,
    /// Whether the column may hold NULL (`false` for `NOT NULL` and key columns).
    pub nullable: bool,
    /// Whether the column is part of the row's key (the primary key, or the
    /// replica identity when there is no primary key).
    pub is_key: bool,
}

/// A table's shape at a point in the stream: its identity and its columns.
///
/// A relation changes when the table's schema changes; every [`crate::Change`]
/// carries the relation that was current when it was decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// PostgreSQL's OID of the table.
    pub oid: u32,
    pub id: TableId,
    pub columns: Vec<Column>,
}

impl Relation {
    /// Indexes of the key columns, in column order.
    pub fn key_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
    }

    /// The index of the named column.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The shape of the `pg_logical_emit_message` messages of `prefix`, as
    /// outbox sources: no table behind it (OID 0), named
    /// `pg_logical_emit_message.<prefix>`, one `bytea` column `content`.
    pub fn logical_message(prefix: &str) -> Relation {
        Relation {
            oid: 0,
            id: TableId::new(MESSAGE_SCHEMA, prefix),
            columns: vec![Column {
                name: "content".into(),
                type_oid: 17,
                type_modifier: -1,
                type_name: "bytea".into(),
                pg_type: PgType::Bytea,
                nullable: false,
                is_key: false,
            }],
        }
    }
}

/// The schema part of the name of a [`Relation::logical_message`].
pub const MESSAGE_SCHEMA: &str = "pg_logical_emit_message";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_modifier_carries_precision_and_scale() {
        let t = PgType::from_builtin_oid(1700)
            .unwrap()
            .with_modifier((12 << 16 | 2) + 4);
        assert_eq!(
            t,
            PgType::Numeric {
                precision: Some(12),
                scale: Some(2)
            }
        );
        let a = PgType::from_builtin_oid(1231).unwrap();
        assert_eq!(
            a,
            PgType::Array(Box::new(PgType::Numeric {
                precision: None,
                scale: None
            }))
        );
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(
            TableId::new("public", "we\"ird").quoted(),
            "\"public\".\"we\"\"ird\""
        );
    }
}
