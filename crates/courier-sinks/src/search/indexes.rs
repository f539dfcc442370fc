//! Each table's alias and the versioned index behind it: created with the
//! derived mapping on first use, and kept in step with new columns.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use courier_core::{Column, Relation, SinkError, SinkErrorKind, TableId};
use reqwest::Method;
use serde_json::{json, Map, Value as Json};

use super::client::{Client, HttpError};
use super::config::Settings;
use super::mapping::{diff, properties, Conflict};
use super::server::Server;

/// The concrete index behind a new alias: `<alias>_v1`; a rebuild writes
/// `<alias>_v2` and moves the alias.
pub(crate) fn first_index(alias: &str) -> String {
    format!("{alias}_v1")
}

/// The tables whose index is known to be ready, with the columns it was
/// checked for.
#[derive(Default)]
pub(crate) struct Indexes {
    ready: HashMap<TableId, (String, Vec<Column>)>,
    /// Set once the server refused its flat JSON field type as unknown (a
    /// cluster without the module that provides it): from then on JSON
    /// columns map as unindexed objects.
    no_flat_json: bool,
    /// Every alias made ready so far, shared with the refresher.
    written: Arc<Mutex<BTreeSet<String>>>,
}

/// Why an index could not be made ready.
enum Unready {
    Http(HttpError),
    /// A column's type changed beyond what the index's mapping holds.
    Conflict {
        concrete: String,
        conflict: Conflict,
    },
}

impl Indexes {
    /// The alias to write `rel`'s rows to, after making sure its index
    /// exists and maps every column of `rel`.
    pub async fn ensure(
        &mut self,
        client: &Client,
        settings: &Settings,
        server: &Server,
        rel: &Relation,
    ) -> Result<String, SinkError> {
        if let Some((alias, cols)) = self.ready.get(&rel.id) {
            if *cols == rel.columns {
                return Ok(alias.clone());
            }
        }
        let fatal = |kind, m: String| SinkError::new(kind, m).with_table(&rel.id);
        let alias = settings.index.alias(&rel.id).map_err(|e| {
            fatal(
                SinkErrorKind::Config,
                format!("search: index name for {}: {e}", rel.id),
            )
        })?;
        let overrides = settings.overrides.get(&rel.id.to_string());
        let flat_json = server.flat_json_type().filter(|_| !self.no_flat_json);
        let wanted = properties(rel, flat_json, overrides);
        let mut result = prepare(client, settings, &alias, &wanted).await;
        if let (Err(Unready::Http(e)), Some(t)) = (&result, flat_json) {
            if e.refuses_field_type(t) {
                tracing::warn!(%server, field_type = t, "the search server does not know this field type \
                    (a module is missing); JSON columns map as unindexed objects");
                self.no_flat_json = true;
                let wanted = properties(rel, None, overrides);
                result = prepare(client, settings, &alias, &wanted).await;
            }
        }
        match result {
            Ok(()) => {}
            Err(Unready::Http(e)) => {
                let m = format!(
                    "search: prepare the index of {} (alias {alias}): {e}",
                    rel.id
                );
                return Err(SinkError::new(e.kind(), m).with_table(&rel.id));
            }
            Err(Unready::Conflict { concrete, conflict: c }) => {
                return Err(fatal(SinkErrorKind::Schema, format!(
                    "search: column {} of {} is now mapped as {:?} but index {concrete} holds it as {:?}, \
                     a change a mapping cannot follow; rebuild the index (write a new {alias}_vN and move \
                     the alias {alias} to it), or map the column in the `mappings` file as the index has it",
                    c.column, rel.id, c.wanted, c.existing
                )))
            }
        }
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(alias.clone());
        self.ready
            .insert(rel.id.clone(), (alias.clone(), rel.columns.clone()));
        Ok(alias)
    }

    /// The aliases this sink writes, as they become ready.
    pub fn written(&self) -> Arc<Mutex<BTreeSet<String>>> {
        self.written.clone()
    }
}

/// Makes sure the alias's index exists and maps every field of `wanted`:
/// creates it, or adds the missing fields to its mapping.
async fn prepare(
    client: &Client,
    settings: &Settings,
    alias: &str,
    wanted: &Map<String, Json>,
) -> Result<(), Unready> {
    let concrete = match write_index(client, alias).await.map_err(Unready::Http)? {
        Some(c) => c,
        None => create(client, settings, alias, wanted)
            .await
            .map_err(Unready::Http)?,
    };
    let (_, body) = client
        .get(&format!("/{concrete}/_mapping"), &[])
        .await
        .map_err(Unready::Http)?;
    let existing = body
        .get(&concrete)
        .and_then(|b| b.pointer("/mappings/properties"))
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    let add = match diff(&existing, wanted) {
        Ok(add) => add,
        Err(conflict) => return Err(Unready::Conflict { concrete, conflict }),
    };
    if !add.is_empty() {
        tracing::info!(alias, index = %concrete, fields = add.len(), "adding new columns to the search mapping");
        client
            .json(
                Method::PUT,
                &format!("/{concrete}/_mapping"),
                &json!({ "properties": add }),
                &[],
            )
            .await
            .map_err(Unready::Http)?;
    }
    Ok(())
}

/// The index the alias writes to, or `None` when the alias does not exist.
/// An index (not an alias) of that name is an error: Courier writes through
/// aliases so that indexes can be rebuilt without downtime.
pub(crate) async fn write_index(client: &Client, alias: &str) -> Result<Option<String>, HttpError> {
    let (status, body) = client.get(&format!("/_alias/{alias}"), &[404]).await?;
    if status.as_u16() == 404 {
        let (status, _) = client.get(&format!("/{alias}"), &[404]).await?;
        if status.as_u16() != 404 {
            return Err(HttpError::Status {
                server: client.server().to_string(),
                method: Method::GET,
                path: format!("/_alias/{alias}"),
                status: 400,
                reason: format!(
                    "{alias} is an index, not an alias; Courier writes through the alias {alias} \
                     to {}: reindex it there or delete it",
                    first_index(alias)
                ),
            });
        }
        return Ok(None);
    }
    let Some(indexes) = body.as_object() else {
        return Ok(None);
    };
    let write = indexes.iter().find(|(_, v)| {
        v.pointer(&format!("/aliases/{alias}/is_write_index"))
            .and_then(Json::as_bool)
            == Some(true)
    });
    Ok(match write {
        Some((name, _)) => Some(name.clone()),
        None if indexes.len() == 1 => indexes.keys().next().cloned(),
        None => {
            return Err(HttpError::Status {
                server: client.server().to_string(),
                method: Method::GET,
                path: format!("/_alias/{alias}"),
                status: 400,
                reason: format!(
                    "alias {alias} points at several indexes and none is its write index; \
                     mark one with is_write_index"
                ),
            })
        }
    })
}

/// Creates `<alias>_v1` with the mapping and the alias; returns its name.
async fn create(
    client: &Client,
    settings: &Settings,
    alias: &str,
    wanted: &Map<String, Json>,
) -> Result<String, HttpError> {
    let concrete = first_index(alias);
    tracing::info!(index = %concrete, alias, "creating the search index");
    let aliases = json!({ alias: { "is_write_index": true } });
    if create_index(client, settings, &concrete, wanted, aliases).await? {
        return Ok(concrete);
    }
    // Made by a concurrent start, or left without its alias: point it.
    client
        .json(
            Method::POST,
            "/_aliases",
            &json!({"actions": [{"add": {"index": concrete, "alias": alias, "is_write_index": true}}]}),
            &[],
        )
        .await?;
    Ok(concrete)
}

/// Creates the index `concrete` with the sink's index settings, the
/// mapping `wanted` and `aliases`; `false` when it exists already.
pub(crate) async fn create_index(
    client: &Client,
    settings: &Settings,
    concrete: &str,
    wanted: &Map<String, Json>,
    aliases: Json,
) -> Result<bool, HttpError> {
    let mut index_settings = json!({
        "number_of_shards": settings.number_of_shards,
        "gc_deletes": settings.gc_deletes,
    });
    if let Some(r) = settings.number_of_replicas {
        index_settings["number_of_replicas"] = json!(r);
    }
    let body = json!({
        "settings": { "index": index_settings },
        "mappings": { "dynamic": false, "properties": wanted },
        "aliases": aliases,
    });
    let (status, resp) = client
        .json(Method::PUT, &format!("/{concrete}"), &body, &[400])
        .await?;
    if status.as_u16() == 400 {
        let kind = resp.pointer("/error/type").and_then(Json::as_str);
        if kind != Some("resource_already_exists_exception") {
            return Err(HttpError::Status {
                server: client.server().to_string(),
                method: Method::PUT,
                path: format!("/{concrete}"),
                status: 400,
                reason: resp
                    .get("error")
                    .map(super::client::error_text)
                    .unwrap_or_default(),
            });
        }
        return Ok(false);
    }
    Ok(true)
}
