use std::fmt;

/// A PostgreSQL text value that Courier cannot decode into the column's type.
///
/// The error names the type and what was wrong, never the value itself:
/// values may be sensitive and must not reach logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {type_name} text: {reason}")]
pub struct ValueError {
    /// The PostgreSQL type being decoded, e.g. `int4`, `timestamptz[]`.
    pub type_name: String,
    /// What was wrong with the text, without quoting it.
    pub reason: String,
}

impl ValueError {
    pub(crate) fn new(type_name: impl fmt::Display, reason: impl Into<String>) -> Self {
        ValueError {
            type_name: type_name.to_string(),
            reason: reason.into(),
        }
    }
}
