//! The sink-compliance suite: the behaviour every sink must show against a
//! real server, whatever its storage.
//!
//! A sink passes when, reading its rows back after each step:
//!
//! * **replay** — applying an already applied batch (or its tail) again
//!   changes nothing;
//! * **out of order** — a change older than the stored version is ignored,
//!   across batches and within one;
//! * **delete, then a late older write** — the row stays deleted, while a
//!   newer write brings it back;
//! * **ties** — between changes with the same version, the later one in
//!   stream order wins (inserts, updates and deletes alike);
//! * **key change** — an update that changes the key moves the row: the old
//!   key is gone (at the update's version) and the new key holds the row,
//!   also when the batch is replayed;
//! * **restart mid-batch** — a sink dropped after applying part of a batch,
//!   then rebuilt and given the whole batch, converges to the same rows;
//! * **truncate** (when [`Options::truncate`]) — rows at or below the
//!   truncate's version disappear, a newer row survives a replayed truncate,
//!   and a write in the same transaction after the truncate stays. When
//!   [`Options::truncate_blocks_older_writes`], a write older than the
//!   truncate replayed after it stays deleted too (the sink keeps tombstones);
//! * **outbox sources** — changes marked as outbox rows (of a table the sink
//!   selects, a truncate among them) and logical decoding messages are never
//!   applied as rows, while the other changes of the same batch are.
//!
//! Each check works on its own table, `courier_compliance.<run>_<check>`,
//! so the sink under test must accept the schema `courier_compliance`. Rows
//! come from [`fixtures::table`]; a column that reads back absent counts as
//! NULL.
//!
//! Compiled for this crate's tests and under the `compliance` feature, so
//! other crates' tests can run it:
//!
//! ```ignore
//! let mut readback = MyReadback::new(...);
//! run_compliance(|| async { build_my_sink().await }, &mut readback, Options::default()).await;
//! ```

pub mod fixtures;
mod model;

use std::future::Future;

use async_trait::async_trait;
use std::sync::Arc;

use courier_core::{Batch, Change, Lsn, Op, Relation, Sink, Value};
use serde_json::Map;

use fixtures::{batch, change, expected_json, moved, table, truncate};
use model::Model;

/// Reads a sink's copy of a row, for the suite to compare.
#[async_trait]
pub trait Readback: Send {
    /// The row stored under `key` (the key columns' values, in key order) as
    /// a JSON object per the type mapping; `None` when the row is absent or
    /// deleted (a tombstone reads as `None`).
    async fn read_row(
        &mut self,
        relation: &Relation,
        key: &[Value],
    ) -> Option<Map<String, serde_json::Value>>;
}

/// What the sink under test supports beyond the core checks.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The sink applies TRUNCATE.
    pub truncate: bool,
    /// A write older than a truncate, replayed after it, stays deleted.
    pub truncate_blocks_older_writes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            truncate: true,
            truncate_blocks_older_writes: true,
        }
    }
}

/// Runs every check against sinks made by `make_sink`; panics with the name
/// of the check and the row that differs on the first failure.
///
/// `make_sink` is called again wherever a check simulates a restart.
pub async fn run_compliance<S, F, Fut, R>(mut make_sink: F, readback: &mut R, options: Options)
where
    S: Sink,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    R: Readback,
{
    let run = run_id();
    let mut ctx = Ctx {
        run: &run,
        readback,
    };
    ctx.replay(&mut make_sink).await;
    ctx.out_of_order(&mut make_sink).await;
    ctx.delete_then_late_write(&mut make_sink).await;
    ctx.ties(&mut make_sink).await;
    ctx.key_change(&mut make_sink).await;
    ctx.restart_mid_batch(&mut make_sink).await;
    if options.truncate {
        ctx.truncate(&mut make_sink, options.truncate_blocks_older_writes)
            .await;
    }
    ctx.outbox_sources(&mut make_sink).await;
}

struct Ctx<'a, R> {
    run: &'a str,
    readback: &'a mut R,
}

impl<R: Readback> Ctx<'_, R> {
    async fn replay<S: Sink, Fut: Future<Output = S>>(&mut self, make: &mut impl FnMut() -> Fut) {
        let rel = table("courier_compliance", &format!("{}_replay", self.run));
        let mut sink = make().await;
        let mut model = Model::default();
        let b = batch(vec![
            change(&rel, Op::Insert, 1, "one", 10),
            change(&rel, Op::Insert, 2, "two", 10),
            change(&rel, Op::Insert, 3, "three", 10),
            change(&rel, Op::Update, 1, "one-b", 20),
            change(&rel, Op::Delete, 2, "", 20),
        ]);
        apply(&mut sink, &b, &mut model, "replay").await;
        self.expect(&rel, &model, "replay: first apply").await;
        apply(&mut sink, &b, &mut model, "replay").await;
        self.expect(&rel, &model, "replay: same batch again").await;
        let tail = Batch {
            changes: b.changes[3..].to_vec(),
            through: b.through,
        };
        apply(&mut sink, &tail, &mut model, "replay").await;
        self.expect(&rel, &model, "replay: tail of the batch again")
            .await;
    }

    async fn out_of_order<S: Sink, Fut: Future<Output = S>>(
        &mut self,
        make: &mut impl FnMut() -> Fut,
    ) {
        let rel = table("courier_compliance", &format!("{}_order", self.run));
        let mut sink = make().await;
        let mut m = Model::default();
        let steps = [
            batch(vec![change(&rel, Op::Insert, 1, "new", 200)]),
            batch(vec![change(&rel, Op::Update, 1, "old", 150)]),
            batch(vec![
                change(&rel, Op::Update, 2, "newer", 300),
                change(&rel, Op::Read, 2, "snapshot-older", 250),
            ]),
        ];
        for (i, b) in steps.iter().enumerate() {
            apply(&mut sink, b, &mut m, "out of order").await;
            self.expect(&rel, &m, &format!("out of order: step {}", i + 1))
                .await;
        }
    }

    async fn delete_then_late_write<S: Sink, Fut: Future<Output = S>>(
        &mut self,
        make: &mut impl FnMut() -> Fut,
    ) {
        let rel = table("courier_compliance", &format!("{}_tombstone", self.run));
        let mut sink = make().await;
        let mut m = Model::default();
        let steps = [
            batch(vec![change(&rel, Op::Insert, 1, "alive", 300)]),
            batch(vec![change(&rel, Op::Delete, 1, "", 310)]),
            batch(vec![change(&rel, Op::Update, 1, "late", 305)]),
            batch(vec![change(&rel, Op::Insert, 1, "replayed", 300)]),
            batch(vec![change(&rel, Op::Insert, 1, "reborn", 320)]),
        ];
        for (i, b) in steps.iter().enumerate() {
            apply(&mut sink, b, &mut m, "delete then late write").await;
            self.expect(&rel, &m, &format!("delete then late write: step {}", i + 1))
                .await;
        }
    }

    async fn ties<S: Sink, Fut: Future<Output = S>>(&mut self, make: &mut impl FnMut() -> Fut) {
        let rel = table("courier_compliance", &format!("{}_ties", self.run));
        let mut sink = make().await;
        let mut m = Model::default();
        let steps = [
            batch(vec![
                change(&rel, Op::Insert, 1, "first", 400),
                change(&rel, Op::Update, 1, "second", 400),
            ]),
            batch(vec![change(&rel, Op::Update, 1, "third", 400)]),
            batch(vec![change(&rel, Op::Delete, 1, "", 400)]),
            batch(vec![change(&rel, Op::Insert, 1, "back", 400)]),
        ];
        for (i, b) in steps.iter().enumerate() {
            apply(&mut sink, b, &mut m, "ties").await;
            self.expect(&rel, &m, &format!("ties: step {}", i + 1))
                .await;
        }
    }

    async fn key_change<S: Sink, Fut: Future<Output = S>>(
        &mut self,
        make: &mut impl FnMut() -> Fut,
    ) {
        let rel = table("courier_compliance", &format!("{}_key_change", self.run));
        let mut sink = make().await;
        let mut m = Model::default();
        let steps = [
            batch(vec![
                change(&rel, Op::Insert, 1, "one", 500),
                change(&rel, Op::Insert, 3, "three", 500),
            ]),
            batch(vec![moved(&rel, 1, 2, "moved", 510)]),
            batch(vec![moved(&rel, 1, 2, "moved", 510)]),
            // In one transaction: 3 moves to 4, and a new row takes key 3.
            batch(vec![
                moved(&rel, 3, 4, "four", 520),
                change(&rel, Op::Insert, 3, "new three", 520),
            ]),
        ];
        for (i, b) in steps.iter().enumerate() {
            apply(&mut sink, b, &mut m, "key change").await;
            self.expect(&rel, &m, &format!("key change: step {}", i + 1))
                .await;
        }
    }

    async fn restart_mid_batch<S: Sink, Fut: Future<Output = S>>(
        &mut self,
        make: &mut impl FnMut() -> Fut,
    ) {
        let rel = table("courier_compliance", &format!("{}_restart", self.run));
        let mut changes = Vec::new();
        for step in 0..60u64 {
            let id = (step % 10) as i64 + 1;
            let op = match step % 7 {
                0 if step > 10 => Op::Delete,
                _ if step < 10 => Op::Insert,
                _ => Op::Update,
            };
            changes.push(change(&rel, op, id, &format!("v{step}"), 1000 + step / 3));
        }
        let whole = batch(changes);
        let mut m = Model::default();
        for c in &whole.changes {
            m.apply(c);
        }
        let mut first = make().await;
        let part = Batch {
            changes: whole.changes[..27].to_vec(),
            through: None,
        };
        if let Err(e) = first.apply(&part).await {
            panic!("restart mid-batch: applying the first part failed: {e}");
        }
        drop(first);
        let mut second = make().await;
        let mut scratch = Model::default();
        apply(&mut second, &whole, &mut scratch, "restart mid-batch").await;
        self.expect(&rel, &m, "restart mid-batch").await;
    }

    async fn truncate<S: Sink, Fut: Future<Output = S>>(
        &mut self,
        make: &mut impl FnMut() -> Fut,
        blocks_older: bool,
    ) {
        let rel = table("courier_compliance", &format!("{}_truncate", self.run));
        let mut sink = make().await;
        let mut m = Model::with_truncate_tombstones(blocks_older);
        let steps = [
            batch(vec![
                change(&rel, Op::Insert, 1, "a", 500),
                change(&rel, Op::Insert, 2, "b", 500),
                change(&rel, Op::Insert, 3, "c", 505),
            ]),
            batch(vec![truncate(&rel, 510)]),
            batch(vec![change(&rel, Op::Insert, 1, "replayed-older", 505)]),
            batch(vec![change(&rel, Op::Insert, 4, "newer", 520)]),
            batch(vec![truncate(&rel, 510)]),
            batch(vec![
                change(&rel, Op::Insert, 5, "before-in-tx", 530),
                truncate(&rel, 530),
                change(&rel, Op::Insert, 6, "after-in-tx", 530),
            ]),
        ];
        for (i, b) in steps.iter().enumerate() {
            apply(&mut sink, b, &mut m, "truncate").await;
            self.expect(&rel, &m, &format!("truncate: step {}", i + 1))
                .await;
        }
    }

    async fn outbox_sources<S: Sink, Fut: Future<Output = S>>(
        &mut self,
        make: &mut impl FnMut() -> Fut,
    ) {
        let rel = table("courier_compliance", &format!("{}_outbox", self.run));
        let messages = Arc::new(Relation::logical_message("courier_compliance"));
        let message = Change::logical_message(messages, br#"{"id": 9}"#.to_vec(), Lsn(600), 700, 0)
            .unwrap_or_else(|e| panic!("outbox sources: a message of the wrong shape: {e}"));
        let mut sink = make().await;
        let mut m = Model::default();
        let steps = [
            batch(vec![
                change(&rel, Op::Insert, 1, "row", 600),
                change(&rel, Op::Insert, 2, "event", 600).into_outbox_row(),
                message,
                change(&rel, Op::Insert, 3, "row", 600),
            ]),
            batch(vec![
                change(&rel, Op::Update, 1, "event-update", 610).into_outbox_row(),
                change(&rel, Op::Delete, 3, "", 610).into_outbox_row(),
                truncate(&rel, 610).into_outbox_row(),
            ]),
        ];
        for (i, b) in steps.iter().enumerate() {
            apply(&mut sink, b, &mut m, "outbox sources").await;
            self.expect(&rel, &m, &format!("outbox sources: step {}", i + 1))
                .await;
        }
    }

    /// Reads every row the model knows and compares.
    async fn expect(&mut self, rel: &Relation, model: &Model, what: &str) {
        for (id, want) in model.rows() {
            let got = self.readback.read_row(rel, &[Value::Int(id)]).await;
            let want = want.map(|row| expected_json(rel, &row));
            assert_eq!(
                got, want,
                "{what}: row id={id} of {} reads back wrong",
                rel.id
            );
        }
    }
}

async fn apply<S: Sink>(sink: &mut S, b: &Batch, model: &mut Model, what: &str) {
    if let Err(e) = sink.apply(b).await {
        panic!("{what}: apply failed: {e}");
    }
    for c in &b.changes {
        model.apply(c);
    }
}

/// A per-run prefix, so runs against a long-lived server do not see each
/// other's rows.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("r{:x}", nanos ^ u128::from(std::process::id()))
}
