use courier_core::quote_ident;
use tokio_postgres::Client;

use super::{SetupError, SourceTable};

/// Creates the publication for `tables` if it does not exist; otherwise
/// checks that it publishes every operation and adds any missing table.
///
/// Returns the tables that were newly added to an existing publication.
pub async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[SourceTable],
) -> Result<Vec<SourceTable>, SetupError> {
    let row = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(SetupError::query(format!("look up publication {name}")))?;
    let Some(row) = row else {
        let list: Vec<String> = tables.iter().map(|t| t.id.quoted()).collect();
        // Without tables (only outbox messages are routed) the publication
        // publishes nothing; the stream carries the messages regardless.
        let sql = if list.is_empty() {
            format!("CREATE PUBLICATION {}", quote_ident(name))
        } else {
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(name),
                list.join(", ")
            )
        };
        client.batch_execute(&sql).await.map_err(SetupError::query(format!(
            "create publication {name} (the role needs CREATE on the database and ownership of the tables; \
             or create it as an admin: {sql})"
        )))?;
        tracing::info!(
            publication = name,
            tables = tables.len(),
            "created publication"
        );
        return Ok(Vec::new());
    };
    for (i, op) in [(1, "insert"), (2, "update"), (3, "delete"), (4, "truncate")] {
        if !row.get::<_, bool>(i) {
            return Err(SetupError::PublicationOps(name.to_string(), op));
        }
    }
    if row.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let published: Vec<(String, String)> = client
        .query("SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1", &[&name])
        .await
        .map_err(SetupError::query(format!("list tables of publication {name}")))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut added = Vec::new();
    for t in tables {
        if published
            .iter()
            .any(|(s, n)| *s == t.id.schema && *n == t.id.name)
        {
            continue;
        }
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(name),
            t.id.quoted()
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|source| SetupError::PublicationMissingTable {
                publication: name.to_string(),
                table: t.id.clone(),
                quoted: t.id.quoted(),
                source,
            })?;
        tracing::info!(publication = name, table = %t.id, "added table to publication");
        added.push(t.clone());
    }
    Ok(added)
}
