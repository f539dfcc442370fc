use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use courier_core::{Lsn, TableFilter};
use courier_postgres::catalog::Catalog;
use courier_postgres::pgoutput::{DecodedEvent, Decoder};
use courier_postgres::setup::{ensure_publication, resolve_tables};
use courier_postgres::{PgConfig, ReplicationClient, ReplicationMessage};
use courier_sinks::envelope::{now_ms, EnvelopeEncoder, SourceInfo};

use crate::config::Config;

/// `courier tail`: prints changes made from now on as envelope lines, from a
/// TEMPORARY slot, so the configured slot is never acknowledged or moved.
pub async fn tail(path: &Path, only: &[String]) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let source = config.source.postgres("courier tail")?;
    let only = if only.is_empty() {
        None
    } else {
        Some(TableFilter::new(only).context("--table")?)
    };
    let pg = PgConfig::from_url(&source.url).context("source.url")?;
    let client = pg
        .connect()
        .await
        .with_context(|| format!("connect to {}", pg.redacted()))?;
    let tables = resolve_tables(&client, &source.tables, &source.table_patterns).await?;
    ensure_publication(
        &client,
        &source.publication,
        &tables,
        source.generated_columns(),
    )
    .await?;
    let database = pg.dbname.clone();
    let mut decoder = Decoder::new(Catalog::new(Arc::new(client)));

    let mut repl = ReplicationClient::connect(&pg)
        .await
        .context("open replication connection")?;
    let slot = format!("{}_tail_{}", source.slot, std::process::id());
    repl.create_logical_slot(&slot, true, false)
        .await
        .context("create a temporary slot")?;
    let options = [
        ("proto_version", "1"),
        ("publication_names", source.publication.as_str()),
    ];
    let mut stream = repl
        .start_logical_replication(&slot, Lsn::ZERO, &options)
        .await
        .context("start replication")?;
    eprintln!("tailing changes from a temporary slot; Ctrl-C to stop");

    let encoder = EnvelopeEncoder::new(&SourceInfo {
        name: source.slot.clone(),
        database,
    });
    let mut line = Vec::with_capacity(4096);
    let mut last = Lsn::ZERO;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m.context("read replication stream")?,
            _ = tokio::signal::ctrl_c() => break,
        };
        match msg {
            None => break,
            Some(ReplicationMessage::XLogData { data, wal_end, .. }) => {
                last = last.max(wal_end);
                let changes = match decoder
                    .decode(data)
                    .await
                    .context("decode pgoutput message")?
                {
                    Some(DecodedEvent::Change(c)) => vec![c],
                    Some(DecodedEvent::Truncate(cs)) => cs,
                    _ => continue,
                };
                let mut out = std::io::stdout().lock();
                for c in changes
                    .iter()
                    .filter(|c| only.as_ref().is_none_or(|f| f.matches(&c.relation().id)))
                {
                    line.clear();
                    encoder.encode_line(c, now_ms(), &mut line);
                    out.write_all(&line).context("write to standard output")?;
                }
                out.flush().context("write to standard output")?;
            }
            Some(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
                ..
            }) => {
                last = last.max(wal_end);
                if reply_requested {
                    // A temporary slot disappears with the connection: acknowledging
                    // it moves nothing that outlives this command.
                    stream
                        .send_status(last, last, last, false)
                        .await
                        .context("send status")?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
