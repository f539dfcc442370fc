use courier_core::quote_ident;
use tokio_postgres::Client;

use super::{SetupError, SourceTable};
use crate::catalog::Generated;

/// Which generated columns the publication publishes (PostgreSQL 18's
/// `publish_generated_columns`), and so which columns a snapshot copies:
/// a snapshot's rows have exactly the columns the stream's rows have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeneratedColumns {
    /// None: PostgreSQL's default, and all there is before 18.
    #[default]
    Omitted,
    /// Stored generated columns (PostgreSQL 18+). Virtual ones are never
    /// published.
    Stored,
}

impl GeneratedColumns {
    /// Whether a column of this kind is published, so a row carries it.
    pub fn publishes(self, column: Generated) -> bool {
        match column {
            Generated::No => true,
            Generated::Stored => self == GeneratedColumns::Stored,
            Generated::Virtual => false,
        }
    }

    /// The value of `publish_generated_columns` that means this.
    fn option(self) -> &'static str {
        match self {
            GeneratedColumns::Omitted => "none",
            GeneratedColumns::Stored => "stored",
        }
    }
}

/// Creates the publication for `tables` if it does not exist; otherwise
/// checks that it publishes every operation and adds any missing table.
/// Either way the publication publishes the `generated` columns (and, on
/// PostgreSQL 18, an existing one is changed to, with a log line).
/// `GeneratedColumns::Stored` needs PostgreSQL 18.
///
/// Returns the tables that were newly added to an existing publication.
pub async fn ensure_publication(
    client: &Client,
    name: &str,
    tables: &[SourceTable],
    generated: GeneratedColumns,
) -> Result<Vec<SourceTable>, SetupError> {
    if generated == GeneratedColumns::Stored {
        let version: String = client
            .query_one("SHOW server_version_num", &[])
            .await
            .map_err(SetupError::query("query server_version_num"))?
            .get(0);
        if version.parse::<u32>().unwrap_or(0) < 180_000 {
            return Err(SetupError::GeneratedColumnsNeed18(version));
        }
    }
    // `pubgencols` exists from PostgreSQL 18 on; through JSON, older
    // servers answer NULL instead of an error.
    let row = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, to_jsonb(p) ->> 'pubgencols', \
                    pg_is_in_recovery() \
             FROM pg_publication p WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(SetupError::query(format!("look up publication {name}")))?;
    let Some(row) = row else {
        let list: Vec<String> = tables.iter().map(|t| t.id.quoted()).collect();
        // Without tables (only outbox messages are routed) the publication
        // publishes nothing; the stream carries the messages regardless.
        let mut sql = if list.is_empty() {
            format!("CREATE PUBLICATION {}", quote_ident(name))
        } else {
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(name),
                list.join(", ")
            )
        };
        if generated == GeneratedColumns::Stored {
            sql.push_str(" WITH (publish_generated_columns = stored)");
        }
        on_primary(client, name, &sql).await?;
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
    let publishes = match row.get::<_, Option<String>>(5).as_deref() {
        Some("s") => GeneratedColumns::Stored,
        _ => GeneratedColumns::Omitted,
    };
    let standby = row.get::<_, bool>(6);
    if publishes != generated {
        let sql = format!(
            "ALTER PUBLICATION {} SET (publish_generated_columns = {})",
            quote_ident(name),
            generated.option()
        );
        if standby {
            return Err(SetupError::PublicationOnStandby {
                publication: name.to_string(),
                sql,
            });
        }
        client.batch_execute(&sql).await.map_err(|source| {
            SetupError::PublicationGeneratedColumns {
                publication: name.to_string(),
                sql: sql.clone(),
                source,
            }
        })?;
        tracing::info!(
            publication = name,
            publish_generated_columns = generated.option(),
            "changed which generated columns the publication publishes, as source.generated_columns says"
        );
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
        if standby {
            return Err(SetupError::PublicationOnStandby {
                publication: name.to_string(),
                sql,
            });
        }
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

/// An error naming `sql` when the server is a standby, where a publication
/// can be neither created nor changed (the primary's reaches it through
/// replication).
async fn on_primary(client: &Client, publication: &str, sql: &str) -> Result<(), SetupError> {
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(SetupError::query("query pg_is_in_recovery()"))?
        .get(0);
    if standby {
        return Err(SetupError::PublicationOnStandby {
            publication: publication.to_string(),
            sql: sql.to_string(),
        });
    }
    Ok(())
}
