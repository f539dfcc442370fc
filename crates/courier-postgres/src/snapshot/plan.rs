use std::collections::BTreeMap;

use courier_core::Lsn;
use serde::{Deserialize, Serialize};

use crate::setup::SourceTable;

/// A range of heap pages of one table: `[start_page, end_page)`, open-ended
/// when `end_page` is `None` (the table's last chunk takes every page added
/// since the plan was made).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Chunk {
    pub start_page: u64,
    pub end_page: Option<u64>,
}

impl Chunk {
    /// The SQL condition selecting the chunk's rows.
    pub fn ctid_condition(&self) -> String {
        match self.end_page {
            Some(end) => format!(
                "ctid >= '({},0)'::tid AND ctid < '({},0)'::tid",
                self.start_page, end
            ),
            None if self.start_page == 0 => "true".to_string(),
            None => format!("ctid >= '({},0)'::tid", self.start_page),
        }
    }
}

/// One table's snapshot progress.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TablePlan {
    pub pending: Vec<Chunk>,
    pub rows_done: u64,
    pub rows_estimated: u64,
}

/// Which tables still need copying. Persisted in the state store between
/// runs; `tables` keys are `schema.table`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotPlan {
    pub tables: BTreeMap<String, TablePlan>,
    /// Tables whose rows have been fully delivered (or that never needed a
    /// snapshot); a configured table missing here and from `tables` is new.
    pub done: Vec<String>,
    /// The consistent point of the snapshot that delivered rows so far.
    pub last_version: Option<Lsn>,
}

impl SnapshotPlan {
    /// A plan in which every table counts as delivered: nothing to copy.
    pub fn nothing_to_copy(tables: &[SourceTable]) -> Self {
        SnapshotPlan {
            done: tables.iter().map(|t| t.id.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Adds a table, split into chunks of about `chunk_rows` rows.
    pub fn add_table(&mut self, t: &SourceTable, chunk_rows: u64, parallelism: usize) {
        let pages = t.pages.max(1);
        let rows_per_page = (t.estimated_rows as f64 / pages as f64).max(1.0);
        let by_rows = (chunk_rows as f64 / rows_per_page).ceil() as u64;
        // Small tables are still split so every connection has work.
        let by_parallelism = pages.div_ceil(parallelism as u64);
        let chunk_pages = by_rows.min(by_parallelism).max(64);
        let mut pending = Vec::new();
        let mut start = 0;
        while start + chunk_pages < pages {
            pending.push(Chunk {
                start_page: start,
                end_page: Some(start + chunk_pages),
            });
            start += chunk_pages;
        }
        pending.push(Chunk {
            start_page: start,
            end_page: None,
        });
        self.tables.insert(
            t.id.to_string(),
            TablePlan {
                pending,
                rows_done: 0,
                rows_estimated: t.estimated_rows,
            },
        );
        self.done.retain(|d| *d != t.id.to_string());
    }

    /// Records a chunk as delivered; a table with no chunks left is done.
    pub fn chunk_done(&mut self, table: &str, chunk: Chunk, rows: u64) {
        let Some(tp) = self.tables.get_mut(table) else {
            return;
        };
        tp.pending.retain(|c| *c != chunk);
        tp.rows_done += rows;
        if tp.pending.is_empty() {
            self.tables.remove(table);
            self.done.push(table.to_string());
        }
    }

    /// Whether any chunk is left.
    pub fn is_complete(&self) -> bool {
        self.tables.is_empty()
    }

    /// Whether the table is done or planned.
    pub fn knows(&self, table: &str) -> bool {
        self.done.iter().any(|d| d == table) || self.tables.contains_key(table)
    }
}

#[cfg(test)]
mod tests {
    use courier_core::TableId;

    use super::*;

    #[test]
    fn splits_tables_into_page_ranges_and_tracks_progress() {
        let t = SourceTable {
            id: TableId::new("public", "big"),
            oid: 1,
            estimated_rows: 1_000_000,
            pages: 10_000,
        };
        let mut plan = SnapshotPlan::default();
        plan.add_table(&t, 250_000, 4);
        let chunks = plan.tables["public.big"].pending.clone();
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks[0],
            Chunk {
                start_page: 0,
                end_page: Some(2500)
            }
        );
        assert_eq!(chunks[3].end_page, None);
        for c in &chunks {
            assert!(!plan.is_complete());
            plan.chunk_done("public.big", *c, 10);
        }
        assert!(plan.is_complete());
        assert!(plan.knows("public.big"));
        assert_eq!(
            Chunk {
                start_page: 0,
                end_page: None
            }
            .ctid_condition(),
            "true"
        );
    }
}
