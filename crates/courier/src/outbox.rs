//! The outbox routers' PostgreSQL side of a run: each router's outbox
//! table found and checked against what the router reads, the tables
//! published (never snapshotted), and the sources the decoder marks.

use anyhow::{bail, Context};
use courier_postgres::catalog::Catalog;
use courier_postgres::pgoutput::OutboxSources;
use courier_postgres::setup::{resolve_outbox_table, SourceTable};
use courier_sinks::outbox::{Router, Source};

/// The routers of a run and their outbox tables.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    routers: Vec<Router>,
    tables: Vec<SourceTable>,
}

impl Outbox {
    /// Finds each router's outbox table and checks that it has the columns
    /// the router reads (and a key, so that its rows can be deleted once it
    /// is published). Errors name the router and the fix.
    pub async fn prepare(catalog: &mut Catalog, routers: &[Router]) -> anyhow::Result<Outbox> {
        let mut tables: Vec<SourceTable> = Vec::new();
        for r in routers {
            let Source::Table(id) = &r.source else {
                continue;
            };
            let table = resolve_outbox_table(catalog.client(), id)
                .await
                .with_context(|| format!("outbox.{}", r.name))?;
            let relation = catalog
                .relation(table.oid)
                .await
                .with_context(|| format!("outbox.{}: read the columns of {id}", r.name))?
                .with_context(|| format!("outbox.{}: table {id} was dropped", r.name))?;
            let problems = r.check_table(&relation);
            if !problems.is_empty() {
                bail!("outbox.{}: {}", r.name, problems.join("; "));
            }
            if !tables.iter().any(|t| t.id == table.id) {
                tables.push(table);
            }
        }
        Ok(Outbox {
            routers: routers.to_vec(),
            tables,
        })
    }

    /// The outbox tables, to publish with the captured tables.
    pub fn tables(&self) -> &[SourceTable] {
        &self.tables
    }

    /// Takes the outbox tables out of the captured `tables` (a pattern of
    /// `source.tables` may match one): their rows are events, never rows
    /// to snapshot or to apply.
    pub fn leave_out(&self, tables: &mut Vec<SourceTable>) {
        tables.retain(|t| {
            let outbox = self.tables.iter().any(|o| o.id == t.id);
            if outbox {
                tracing::info!(table = %t.id, "an outbox table matches source.tables; routed as events only");
            }
            !outbox
        });
    }

    /// What the decoder marks as outbox sources.
    pub fn sources(&self) -> OutboxSources {
        let mut s = OutboxSources::default();
        for r in &self.routers {
            match &r.source {
                Source::Table(t) => s.tables.insert(t.clone()),
                Source::Messages(p) => s.prefixes.insert(p.clone()),
            };
        }
        s
    }
}
