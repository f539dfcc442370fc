//! Whether an outbox table has what its router reads: `courier check`, and
//! `courier run` before it starts, ask before any event is routed.

use courier_core::{PgType, Relation};

use super::config::{Placement, Router};

impl Router {
    /// What the outbox table `relation` lacks for this router, one message
    /// per problem with its fix; empty when it has everything.
    pub fn check_table(&self, relation: &Relation) -> Vec<String> {
        let mut problems = Vec::new();
        let column = |name: &str| relation.column_index(name).map(|i| &relation.columns[i]);
        for (name, setting) in self.fields() {
            if column(name).is_none() {
                problems.push(format!(
                    "{} has no column {name:?} ({setting}): add it, or set outbox.{}.{} to the column that holds it",
                    relation.id,
                    self.name,
                    if setting.starts_with("additional") { "additional" } else { &setting }
                ));
            }
        }
        let c = &self.columns;
        if let Some(p) = column(&c.payload).filter(|_| self.expand_json_payload) {
            if !matches!(p.pg_type, PgType::Json | PgType::Jsonb | PgType::Text) {
                problems.push(format!(
                    "column {:?} is {}, and expand_json_payload = true needs json, jsonb or text: \
                     store the payload as jsonb, or set outbox.{}.expand_json_payload = false",
                    c.payload, p.type_name, self.name
                ));
            }
        }
        if let Some(t) = c
            .timestamp
            .as_deref()
            .and_then(|t| column(t).map(|col| (t, col)))
        {
            let (name, col) = t;
            if !matches!(
                col.pg_type,
                PgType::Timestamp | PgType::TimestampTz | PgType::Int8 | PgType::Int4
            ) {
                problems.push(format!(
                    "column {name:?} (columns.timestamp) is {}: use a timestamp, timestamptz or bigint (epoch milliseconds) column",
                    col.type_name
                ));
            }
        }
        for a in &self.additional {
            if let Some(col) = column(&a.column).filter(|_| a.placement == Placement::Partition) {
                if !matches!(col.pg_type, PgType::Int2 | PgType::Int4 | PgType::Int8) {
                    problems.push(format!(
                        "column {:?} (additional, placement = \"partition\") is {}: a partition number needs an integer column",
                        a.column, col.type_name
                    ));
                }
            }
        }
        for name in self.topic.fields() {
            if let Some(col) = column(name) {
                if matches!(
                    col.pg_type,
                    PgType::Bytea | PgType::Array(_) | PgType::Json | PgType::Jsonb
                ) {
                    problems.push(format!(
                        "column {name:?} names the topic but is {}: use a text column",
                        col.type_name
                    ));
                }
            }
        }
        problems
    }
}
