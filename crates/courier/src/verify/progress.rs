//! How far a verification or a rebuild got: rows read from the snapshot
//! per table, against the rows expected. The job that runs one writes it;
//! the admin API and the CLI's progress line read it.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

/// A shared, cheap-to-clone progress record. A default one is watched by
/// nobody, which costs a lock per batch of rows.
#[derive(Clone, Default)]
pub struct Progress(Arc<Mutex<ProgressReport>>);

/// What a [`Progress`] holds at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProgressReport {
    /// What the work is doing: `compare`, `recheck` (a second look at what
    /// disagreed), `verify after repair`, `rebuild`; empty before it starts.
    pub stage: &'static str,
    /// The tables of the stage, in the order they were started.
    pub tables: Vec<TableProgress>,
}

/// One table of a stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableProgress {
    pub table: String,
    /// Rows read from the snapshot so far.
    pub done: u64,
    /// Rows expected: the planner's estimate (`pg_class.reltuples`) while
    /// the table is read, the rows read once it is done; `None` when
    /// PostgreSQL has no estimate (a table never analyzed).
    pub expected: Option<u64>,
    /// Whether every row of the table was read.
    pub finished: bool,
}

impl Progress {
    /// Starts a stage: the tables of the previous one are forgotten.
    pub fn stage(&self, stage: &'static str) {
        let mut p = self.lock();
        p.stage = stage;
        p.tables.clear();
    }

    /// Starts (or starts again) `table`, of about `estimated` rows (0: unknown).
    pub fn start_table(&self, table: &str, estimated: u64) {
        let mut p = self.lock();
        let fresh = TableProgress {
            table: table.to_string(),
            done: 0,
            expected: (estimated > 0).then_some(estimated),
            finished: false,
        };
        match p.tables.iter_mut().find(|t| t.table == table) {
            Some(t) => *t = fresh,
            None => p.tables.push(fresh),
        }
    }

    /// Counts `rows` more rows read of `table`.
    pub fn add_rows(&self, table: &str, rows: u64) {
        let mut p = self.lock();
        if let Some(t) = p.tables.iter_mut().find(|t| t.table == table) {
            t.done += rows;
        }
    }

    /// Records that every row of `table` was read: the rows read are the
    /// rows expected from now on.
    pub fn finish_table(&self, table: &str) {
        let mut p = self.lock();
        if let Some(t) = p.tables.iter_mut().find(|t| t.table == table) {
            t.expected = Some(t.done);
            t.finished = true;
        }
    }

    /// What it holds now.
    pub fn report(&self) -> ProgressReport {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, ProgressReport> {
        // A panic elsewhere while holding the lock leaves counters, still readable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ProgressReport {
    /// One line for a terminal: the stage, the table being read, and rows
    /// read of rows expected.
    pub fn line(&self) -> String {
        let current = self
            .tables
            .iter()
            .rev()
            .find(|t| !t.finished)
            .or(self.tables.last());
        let Some(t) = current else {
            return format!("{}: starting", self.stage);
        };
        let of = match t.expected {
            Some(e) if e > 0 => {
                let e = e.max(t.done);
                format!(" of ~{e} ({:.0}%)", t.done as f64 * 100.0 / e as f64)
            }
            _ => String::new(),
        };
        let (done_tables, all) = (
            self.tables.iter().filter(|t| t.finished).count(),
            self.tables.len(),
        );
        format!(
            "{}: {} {} rows{of} [{done_tables}/{all} tables done]",
            self.stage, t.table, t.done
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_per_table_and_a_finished_table_expects_what_it_read() {
        let p = Progress::default();
        p.stage("compare");
        p.start_table("public.a", 100);
        p.add_rows("public.a", 40);
        p.start_table("public.b", 0);
        p.add_rows("public.b", 7);
        p.add_rows("public.unknown", 7);
        let r = p.report();
        assert_eq!(r.tables[1].expected, None);
        assert_eq!(r.line(), "compare: public.b 7 rows [0/2 tables done]");
        p.finish_table("public.a");
        p.finish_table("public.b");
        let r = p.report();
        assert_eq!(r.tables[0].expected, Some(40));
        assert_eq!(r.tables[1].expected, Some(7));
        assert_eq!(
            r.line(),
            "compare: public.b 7 rows of ~7 (100%) [2/2 tables done]"
        );

        p.stage("recheck");
        assert!(p.report().tables.is_empty());
        p.start_table("public.a", 40);
        p.add_rows("public.a", 10);
        assert_eq!(
            p.report().line(),
            "recheck: public.a 10 rows of ~40 (25%) [0/1 tables done]"
        );
    }
}
