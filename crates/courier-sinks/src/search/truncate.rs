//! TRUNCATE: every document of the table is deleted at the truncate's
//! version, so documents written later (a newer version) stay, and older
//! replayed writes meet a tombstone.

use courier_core::{Change, SinkError, SinkErrorKind};
use reqwest::Method;
use serde_json::{json, Value as Json};

use super::bulk::{send_items, Limits};
use super::client::{Client, HttpError};
use super::encode::Item;

/// Deletes, at `c.version`, every document the alias holds.
pub(crate) async fn truncate(
    client: &Client,
    alias: &str,
    c: &Change,
    limits: &Limits,
) -> Result<(), SinkError> {
    let err = |e: HttpError| {
        let m = format!("search: truncate {} (alias {alias}): {e}", c.relation().id);
        SinkError::new(e.kind(), m)
            .with_table(&c.relation().id)
            .with_lsn(c.version())
    };
    // Documents written just before the truncate must be visible to the search.
    client
        .send(Method::POST, &format!("/{alias}/_refresh"), None, &[])
        .await
        .map_err(err)?;
    let body = json!({"size": limits.batch_size.min(10_000), "_source": false, "sort": ["_doc"]});
    let Some(mut scroll) = client.scroll(alias, &body).await.map_err(err)? else {
        return Ok(());
    };
    loop {
        let ids: Vec<String> = scroll
            .page()
            .await
            .map_err(err)?
            .iter()
            .filter_map(|h| h.get("_id").and_then(Json::as_str).map(str::to_string))
            .collect();
        if ids.is_empty() {
            break;
        }
        let items: Vec<Item> = ids
            .into_iter()
            .map(|id| Item {
                change: c,
                alias: alias.to_string(),
                id,
            })
            .collect();
        let rejected = send_items(client, &items, limits).await?;
        if let Some(r) = rejected.first() {
            return Err(SinkError::new(SinkErrorKind::Rejected, format!(
                "search: truncate {} (alias {alias}): the server refused to delete a document: HTTP {} {}",
                c.relation().id, r.status, r.error_type
            ))
            .with_table(&c.relation().id)
            .with_lsn(c.version()));
        }
    }
    scroll.close().await;
    Ok(())
}
