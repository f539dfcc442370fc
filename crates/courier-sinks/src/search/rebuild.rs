//! Rebuilding a table's index behind its alias while it serves.
//!
//! `courier rebuild` creates the next concrete index (`<alias>_v<N+1>`, with
//! the mapping Courier derives today, so a changed `mappings` file takes
//! effect) and points a marker alias, `<alias>-courier-rebuild`, at it. A
//! running sink looks the marker up at most once a second per alias
//! ([`Shadows`]) and, while it exists, sends every write to the new index
//! as well. Once every write is doubled, the rebuild copies a snapshot into
//! the new index at the snapshot's version (versions make the order of the
//! two writers irrelevant), then moves the alias and removes the marker in
//! one `_aliases` call, and deletes the old index after a grace period.
//! Readers of the alias see the old index, whole, until the move, then the
//! new one, whole.
//!
//! A rebuild that dies leaves the marker and the unfinished index; the next
//! rebuild of the table removes them before it starts (until then the sink
//! keeps writing into it, which costs but corrupts nothing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use courier_core::{Batch, Relation, SinkError, SinkErrorKind, TableId};
use reqwest::Method;
use serde_json::json;

use super::bulk::send_items;
use super::client::{Client, HttpError};
use super::encode::{collapse, doc_id, Item};
use super::indexes::{create_index, write_index};
use super::mapping::properties;
use super::{SearchSink, SearchSinkConfig};
use crate::BuildError;

/// How long a sink trusts what it last read of a marker.
pub const MARKER_TTL: Duration = Duration::from_secs(1);

/// The marker alias of a rebuild of `alias`.
pub fn marker(alias: &str) -> String {
    format!("{alias}-courier-rebuild")
}

/// What a sink knows of the rebuilds in progress: per alias, the index
/// being filled (if any) and when that was read.
#[derive(Default)]
pub(crate) struct Shadows {
    known: HashMap<String, (Option<String>, Instant)>,
}

impl Shadows {
    /// The index a rebuild of `alias` is filling, if one is.
    pub async fn of(&mut self, client: &Client, alias: &str) -> Result<Option<String>, SinkError> {
        if let Some((shadow, read)) = self.known.get(alias) {
            if read.elapsed() < MARKER_TTL {
                return Ok(shadow.clone());
            }
        }
        let shadow = marked_index(client, alias).await.map_err(|e| {
            SinkError::new(
                e.kind(),
                format!("search: look for a rebuild of {alias}: {e}"),
            )
        })?;
        if shadow.is_some() != self.known.get(alias).is_some_and(|(s, _)| s.is_some()) {
            match &shadow {
                Some(index) => tracing::info!(
                    alias,
                    index,
                    "a rebuild is filling a new index: writing to it too"
                ),
                None => tracing::info!(alias, "no rebuild in progress: writing to the alias only"),
            }
        }
        self.known
            .insert(alias.to_string(), (shadow.clone(), Instant::now()));
        Ok(shadow)
    }

    /// Adds, for every item whose alias is being rebuilt, the same write to
    /// the new index.
    pub async fn add_writes<'a>(
        &mut self,
        client: &Client,
        items: &mut Vec<Item<'a>>,
    ) -> Result<(), SinkError> {
        let mut aliases: Vec<String> = items.iter().map(|i| i.alias.clone()).collect();
        aliases.sort_unstable();
        aliases.dedup();
        let mut shadows = HashMap::new();
        for alias in aliases {
            if let Some(s) = self.of(client, &alias).await? {
                shadows.insert(alias, s);
            }
        }
        if shadows.is_empty() {
            return Ok(());
        }
        let doubled: Vec<Item<'a>> = items
            .iter()
            .filter_map(|i| {
                shadows.get(&i.alias).map(|s| Item {
                    change: i.change,
                    alias: s.clone(),
                    id: i.id.clone(),
                })
            })
            .collect();
        items.extend(doubled);
        Ok(())
    }
}

/// The index the marker of `alias` points at, if the marker exists.
async fn marked_index(client: &Client, alias: &str) -> Result<Option<String>, HttpError> {
    let (status, body) = client
        .get(&format!("/_alias/{}", marker(alias)), &[404])
        .await?;
    if status.as_u16() == 404 {
        return Ok(None);
    }
    Ok(body.as_object().and_then(|o| o.keys().next().cloned()))
}

/// One table's rebuild in progress.
#[derive(Clone, Debug)]
pub struct Shadow {
    pub table: TableId,
    pub alias: String,
    /// The index readers use until the move (none when the alias is new).
    pub old: Option<String>,
    /// The index being filled.
    pub new: String,
}

/// The search side of `courier rebuild`: a connection made as the sink's.
pub struct Rebuilder {
    sink: SearchSink,
}

/// Reaches the server as the sink `name` would.
pub async fn rebuilder(name: &str, config: SearchSinkConfig) -> Result<Rebuilder, BuildError> {
    Ok(Rebuilder {
        sink: super::build(name, config).await?,
    })
}

impl Rebuilder {
    fn error(table: &TableId, what: &str, e: HttpError) -> SinkError {
        SinkError::new(e.kind(), format!("search: {what} for {table}: {e}")).with_table(table)
    }

    /// Whether the sink receives this table.
    pub fn includes(&self, table: &TableId) -> bool {
        self.sink.settings.selection.includes(table)
    }

    /// Creates the next index of `rel`'s alias with today's mapping and
    /// marks it, after removing what an interrupted rebuild left.
    pub async fn begin(&mut self, rel: &Relation) -> Result<Shadow, SinkError> {
        let table = &rel.id;
        let client = &self.sink.client;
        let alias = self
            .sink
            .settings
            .index
            .alias(table)
            .map_err(|e| SinkError::new(SinkErrorKind::Config, e).with_table(table))?;
        let old = write_index(client, &alias)
            .await
            .map_err(|e| Self::error(table, "find the index behind the alias", e))?;
        if let Some(left) = marked_index(client, &alias)
            .await
            .map_err(|e| Self::error(table, "look for an interrupted rebuild", e))?
        {
            if Some(&left) != old.as_ref() {
                tracing::warn!(alias, index = %left, "removing the index an interrupted rebuild left");
                delete_index(client, &left)
                    .await
                    .map_err(|e| Self::error(table, "remove an interrupted rebuild's index", e))?;
            }
        }
        let new = next_index(&alias, old.as_deref());
        // An index of that name without the marker is a leftover too.
        delete_index(client, &new)
            .await
            .map_err(|e| Self::error(table, "remove a leftover index", e))?;
        let overrides = self.sink.settings.overrides.get(&table.to_string());
        let wanted = properties(rel, self.sink.server.flat_json_type(), overrides);
        let aliases = json!({ marker(&alias): {} });
        tracing::info!(alias, index = %new, "creating the index the rebuild fills");
        create_index(client, &self.sink.settings, &new, &wanted, aliases)
            .await
            .map_err(|e| Self::error(table, "create the new index", e))?;
        Ok(Shadow {
            table: table.clone(),
            alias,
            old,
            new,
        })
    }

    /// Writes snapshot rows into the new index; a row the index refuses is
    /// an error naming it (never its values).
    pub async fn write(&mut self, shadow: &Shadow, batch: &Batch) -> Result<(), SinkError> {
        let mut items = Vec::with_capacity(batch.changes.len());
        for c in &batch.changes {
            let Some(row) = c.key_row() else { continue };
            let id = doc_id(c.relation(), row).map_err(|reason| {
                SinkError::new(
                    SinkErrorKind::Schema,
                    format!("search: {} cannot be indexed: {reason}", c.relation().id),
                )
            })?;
            items.push(Item {
                change: c,
                alias: shadow.new.clone(),
                id,
            });
        }
        let items = collapse(items);
        let rejected = send_items(&self.sink.client, &items, &self.sink.limits()).await?;
        if let Some(r) = rejected.first() {
            return Err(SinkError::new(
                SinkErrorKind::Rejected,
                format!(
                    "search: index {} refused document {} of {}: HTTP {} {}; fix the mapping and rebuild again \
                     (readers still use {})",
                    shadow.new,
                    items[r.index].id,
                    shadow.table,
                    r.status,
                    r.error_type,
                    shadow.alias
                ),
            )
            .with_table(&shadow.table));
        }
        Ok(())
    }

    /// Makes the new index searchable, then moves the alias to it and
    /// removes the marker, in one step readers cannot see half of.
    pub async fn swap(&mut self, shadow: &mut Shadow) -> Result<(), SinkError> {
        let client = &self.sink.client;
        let table = shadow.table.clone();
        let err = |what: &'static str| {
            let table = table.clone();
            move |e| Self::error(&table, what, e)
        };
        client
            .send(
                Method::POST,
                &format!("/{}/_refresh", shadow.new),
                None,
                &[],
            )
            .await
            .map_err(err("refresh the new index"))?;
        let mut actions = vec![
            json!({"add": {"index": shadow.new, "alias": shadow.alias, "is_write_index": true}}),
            json!({"remove": {"index": shadow.new, "alias": marker(&shadow.alias)}}),
        ];
        // Read again: the sink may have created the alias's first index meanwhile.
        let current = write_index(client, &shadow.alias)
            .await
            .map_err(err("find the index behind the alias"))?;
        shadow.old = current.filter(|c| *c != shadow.new);
        if let Some(old) = &shadow.old {
            actions.push(json!({"remove": {"index": old, "alias": shadow.alias}}));
        }
        client
            .json(
                Method::POST,
                "/_aliases",
                &json!({ "actions": actions }),
                &[],
            )
            .await
            .map_err(err("move the alias"))?;
        tracing::info!(alias = %shadow.alias, index = %shadow.new, old = shadow.old.as_deref().unwrap_or(""), "alias moved to the rebuilt index");
        Ok(())
    }

    /// Deletes the index readers used before the move.
    pub async fn drop_old(&mut self, shadow: &Shadow) -> Result<(), SinkError> {
        if let Some(old) = &shadow.old {
            delete_index(&self.sink.client, old)
                .await
                .map_err(|e| Self::error(&shadow.table, "delete the old index", e))?;
            tracing::info!(index = %old, "old index deleted");
        }
        Ok(())
    }
}

/// `<alias>_v<N+1>` after `<alias>_v<N>`; `<alias>_v2` after anything else.
fn next_index(alias: &str, old: Option<&str>) -> String {
    let n = old
        .and_then(|o| {
            o.strip_prefix(alias)?
                .strip_prefix("_v")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(1);
    format!("{alias}_v{}", n + 1)
}

async fn delete_index(client: &Client, index: &str) -> Result<(), HttpError> {
    client
        .send(Method::DELETE, &format!("/{index}"), None, &[404])
        .await?;
    Ok(())
}

#[cfg(test)]
mod naming {
    use super::*;

    #[test]
    fn the_next_index_counts_on_from_the_alias_s_index() {
        assert_eq!(
            next_index("shop_products", Some("shop_products_v1")),
            "shop_products_v2"
        );
        assert_eq!(
            next_index("shop_products", Some("shop_products_v9")),
            "shop_products_v10"
        );
        assert_eq!(
            next_index("shop_products", Some("legacy")),
            "shop_products_v2"
        );
        assert_eq!(next_index("shop_products", None), "shop_products_v2");
        assert_eq!(marker("shop_products"), "shop_products-courier-rebuild");
    }
}
