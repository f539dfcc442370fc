use crate::TableId;

/// A set of tables named as `schema.table`, with `schema.*` for every table
/// of a schema. A name without a schema means `public`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableFilter {
    patterns: Vec<(String, Option<String>)>,
}

/// A table pattern that is not `schema.table`, `schema.*` or `table`.
#[derive(Debug, thiserror::Error)]
#[error("invalid table pattern {0:?}: expected \"schema.table\", \"schema.*\" or \"table\"")]
pub struct TablePatternError(pub String);

impl TableFilter {
    /// Parses the patterns; an empty list matches nothing (see [`TableFilter::matches`]).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, TablePatternError> {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim();
            let (schema, table) = match p.split_once('.') {
                Some((s, t)) => (s, t),
                None => ("public", p),
            };
            if schema.is_empty() || table.is_empty() || table.contains('.') || schema == "*" {
                return Err(TablePatternError(p.to_string()));
            }
            let table = if table == "*" {
                None
            } else {
                Some(table.to_string())
            };
            out.push((schema.to_string(), table));
        }
        Ok(TableFilter { patterns: out })
    }

    /// Whether the table is one of the set.
    pub fn matches(&self, t: &TableId) -> bool {
        self.patterns
            .iter()
            .any(|(s, n)| *s == t.schema && n.as_ref().is_none_or(|n| *n == t.name))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Patterns naming one table exactly (no wildcard).
    pub fn exact_tables(&self) -> impl Iterator<Item = TableId> + '_ {
        self.patterns
            .iter()
            .filter_map(|(s, n)| n.as_ref().map(|n| TableId::new(s.clone(), n.clone())))
    }

    /// Schemas named with a wildcard (`schema.*`).
    pub fn wildcard_schemas(&self) -> impl Iterator<Item = &str> + '_ {
        self.patterns
            .iter()
            .filter(|(_, n)| n.is_none())
            .map(|(s, _)| s.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_and_wildcard() {
        let f = TableFilter::new(&["public.products", "audit.*", "orders"]).unwrap();
        assert!(f.matches(&TableId::new("public", "products")));
        assert!(f.matches(&TableId::new("public", "orders")));
        assert!(f.matches(&TableId::new("audit", "anything")));
        assert!(!f.matches(&TableId::new("public", "customers")));
        assert!(TableFilter::new(&["a.b.c"]).is_err());
        assert!(TableFilter::new(&["*.x"]).is_err());
    }
}
