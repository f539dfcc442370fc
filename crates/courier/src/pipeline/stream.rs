//! The replication stream: decodes pgoutput into batches for the fan-out,
//! reports the ack watermark to PostgreSQL, and reconnects with backoff
//! when the connection drops (resuming from the slot).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use courier_core::Lsn;
use courier_postgres::catalog::Catalog;
use courier_postgres::pgoutput::{DecodedEvent, Decoder, OutboxSources, Routed, Streamed};
use courier_postgres::{PgConfig, ReplicationClient, ReplicationMessage, ReplicationStream};
use tokio::sync::watch;
use tokio::time::Instant;

use super::batcher::{Batcher, Pending};
use super::errors::{awaits_promotion, is_retriable, StreamEnded};
use super::fanout::Fanout;
use super::metrics::EventCounter;
use crate::config::PipelineConfig;
use crate::retry::Backoff;
use crate::status::Status;

/// What the stream needs to run.
pub struct StreamContext {
    pub pg: PgConfig,
    pub slot: String,
    pub publication: String,
    /// Leave out changes that replication applied (`origin 'none'`).
    pub origin_none: bool,
    /// Stream large transactions while they run (protocol 2), holding them
    /// under this folder until they commit; `None` for protocol 1.
    pub streaming: Option<PathBuf>,
    pub pipeline: PipelineConfig,
    pub status_interval: Duration,
    pub fanout: Fanout,
    pub status: Status,
    /// The outbox tables and message prefixes, decoded as outbox sources.
    pub outbox: OutboxSources,
}

/// Bytes of streamed, uncommitted transactions held in memory before they
/// spill to files.
const STREAMED_MEMORY: usize = 8 << 20;

/// How often the stream looks for a new primary while the only hosts that
/// answer are standbys (a failover under way).
const PROMOTION_POLL: Duration = Duration::from_millis(500);

/// Why a connection's stream ended.
enum Ended {
    Shutdown,
}

/// Streams until `shutdown` turns true; reconnects on retriable errors.
pub async fn stream_until_shutdown(
    ctx: StreamContext,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match stream_once(&ctx, &mut shutdown, &mut backoff).await {
            Ok(Ended::Shutdown) => return Ok(()),
            Err(e) if is_retriable(&e) => {
                ctx.status.set_streaming(false);
                let mut wait = backoff.next_delay();
                if awaits_promotion(&e) {
                    // The standby takes over within moments: look often.
                    wait = wait.min(PROMOTION_POLL);
                }
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "replication stream lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) => return Err(explain_slot_lost(&ctx, e).await),
        }
    }
}

/// `e`, or the plain account of what happened when the stream failed
/// because PostgreSQL invalidated the slot (the server's own words say
/// little about what it means for the stores).
async fn explain_slot_lost(ctx: &StreamContext, e: anyhow::Error) -> anyhow::Error {
    let Ok(client) = ctx.pg.connect().await else {
        return e;
    };
    match courier_postgres::setup::slot_info(&client, &ctx.slot).await {
        Err(lost @ courier_postgres::setup::SetupError::SlotLost { .. }) => {
            anyhow::anyhow!("{lost} (PostgreSQL said: {e:#})")
        }
        _ => e,
    }
}

async fn stream_once(
    ctx: &StreamContext,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> anyhow::Result<Ended> {
    let client = ctx
        .pg
        .connect()
        .await
        .context("connect to PostgreSQL for catalog look-ups")?;
    let mut decoder = Decoder::new(Catalog::new(Arc::new(client)))
        .defer_toast_reads()
        .route_outbox(ctx.outbox.clone());
    let mut repl = ReplicationClient::connect(&ctx.pg)
        .await
        .context("open replication connection")?;
    let system = repl.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let mut options = vec![
        ("proto_version", "1"),
        ("publication_names", ctx.publication.as_str()),
        ("messages", "true"),
    ];
    if ctx.origin_none {
        options.push(("origin", "none"));
    }
    // Transactions streamed before a reconnect are streamed again from their
    // start: what an earlier connection held is dropped.
    let mut streamed = match &ctx.streaming {
        Some(dir) => {
            options[0].1 = "2";
            options.push(("streaming", "on"));
            Some(
                Streamed::open(dir, STREAMED_MEMORY)
                    .context("prepare the streamed transactions' folder")?,
            )
        }
        None => None,
    };
    let mut stream = repl
        .start_logical_replication(&ctx.slot, Lsn::ZERO, &options)
        .await
        .with_context(|| format!("start replication from slot {}", ctx.slot))?;
    tracing::info!(slot = %ctx.slot, server_wal = %system.xlogpos, "streaming changes");
    ctx.status.set_streaming(true);

    // A PostgreSQL source's positions are LSNs.
    let start = ctx.status.watermark.min().map_or(Lsn::ZERO, |p| p.as_lsn());
    let mut b = Batcher::new(start, &ctx.pipeline);
    let mut counter = EventCounter::default();
    let mut report = Reporter::new(ctx.status_interval);
    let mut flush_tick =
        tokio::time::interval(ctx.pipeline.batch_delay.max(Duration::from_millis(1)));
    let mut reset_backoff = true;

    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                if b.has_unsent() {
                    send(ctx, &mut decoder, &mut b, &mut stream, &mut report).await?;
                }
                ctx.fanout.barrier().await?;
                counter.flush();
                report.last_word(ctx, stream).await;
                return Ok(Ended::Shutdown);
            }
            msg = stream.next() => {
                let msg = msg.context("read replication stream")?.ok_or(StreamEnded)?;
                if reset_backoff {
                    backoff.reset();
                    reset_backoff = false;
                }
                on_message(ctx, &mut decoder, streamed.as_mut(), &mut b, &mut counter, &mut stream, &mut report, msg).await?;
                // Drain what is already buffered before going back to select!,
                // reporting progress on time however long the burst lasts:
                // under load the socket always has data, so the status tick
                // below would never win.
                let mut quiet = false;
                for _ in 0..4096 {
                    report.if_due(ctx, &mut stream).await?;
                    let Some(msg) = stream.try_next().context("read replication stream")? else {
                        quiet = true;
                        break;
                    };
                    on_message(ctx, &mut decoder, streamed.as_mut(), &mut b, &mut counter, &mut stream, &mut report, msg).await?;
                }
                // The stream went quiet after a commit: nothing more is on
                // its way right now, so waiting out batch_delay would only
                // widen the consistency window. Under load the socket
                // always has data and batches still fill.
                if quiet && b.has_unsent_commit() {
                    send(ctx, &mut decoder, &mut b, &mut stream, &mut report).await?;
                    counter.flush();
                }
                report.if_due(ctx, &mut stream).await?;
            }
            _ = flush_tick.tick() => {
                if b.is_due() {
                    send(ctx, &mut decoder, &mut b, &mut stream, &mut report).await?;
                    counter.flush();
                }
            }
            _ = tokio::time::sleep_until(report.due_at()) => report.now(ctx, &mut stream).await?,
        }
    }
}

/// Reports the ack watermark to PostgreSQL: every `interval`, when the
/// server asks, and a last time at shutdown.
struct Reporter {
    interval: Duration,
    last_sent: Instant,
}

/// How long a stopping stream waits for the server to confirm the final
/// position, and then for the stream to end cleanly. A logical walsender
/// answers only between transactions; the position is safe either way.
const LAST_WORD_WAIT: Duration = Duration::from_secs(2);

impl Reporter {
    fn new(interval: Duration) -> Self {
        Reporter {
            interval,
            last_sent: Instant::now(),
        }
    }

    /// When the next report is due.
    fn due_at(&self) -> Instant {
        self.last_sent + self.interval
    }

    async fn if_due(
        &mut self,
        ctx: &StreamContext,
        stream: &mut ReplicationStream,
    ) -> anyhow::Result<()> {
        if Instant::now() >= self.due_at() {
            self.now(ctx, stream).await?;
        }
        Ok(())
    }

    async fn now(
        &mut self,
        ctx: &StreamContext,
        stream: &mut ReplicationStream,
    ) -> anyhow::Result<()> {
        self.last_sent = Instant::now();
        send_status(ctx, stream, false).await.map(|_| ())
    }

    /// At shutdown, after the final barrier: reports the final position
    /// asking for a reply, waits (bounded) until the server answered, so it
    /// has processed the position before the connection closes, then ends
    /// the stream (also bounded). Failures only cost a replay.
    async fn last_word(&mut self, ctx: &StreamContext, mut stream: ReplicationStream) {
        let confirmed = async {
            if !send_status(ctx, &mut stream, true).await? {
                return Ok(());
            }
            // Messages still in flight are dropped: they come again after
            // the position just reported.
            while let Some(msg) = stream.next().await? {
                if matches!(msg, ReplicationMessage::Keepalive { .. }) {
                    break;
                }
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(LAST_WORD_WAIT, confirmed).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %format!("{e:#}"), "final standby status"),
            Err(_) => tracing::debug!("the server did not answer the final standby status in time"),
        }
        match tokio::time::timeout(LAST_WORD_WAIT, stream.finish()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "closing replication stream"),
            Err(_) => tracing::debug!("the replication stream did not end in time; closing it"),
        }
    }
}

/// Hands the batch so far to the fan-out, once its unchanged TOAST values
/// are read (one query per table). While a full queue holds the batch back
/// (a slow sink, or one whose store is down), the position keeps being
/// reported: the server hears from Courier every status interval and does
/// not end the connection for silence (`wal_sender_timeout`).
async fn send(
    ctx: &StreamContext,
    decoder: &mut Decoder,
    b: &mut Batcher,
    stream: &mut ReplicationStream,
    report: &mut Reporter,
) -> anyhow::Result<()> {
    let Pending { mut batch, gaps } = b.take();
    if !gaps.is_empty() {
        decoder
            .fill_toast(&mut batch.changes, &gaps)
            .await
            .context("re-read unchanged TOAST values")?;
    }
    let sending = ctx.fanout.send(batch);
    tokio::pin!(sending);
    loop {
        tokio::select! {
            sent = &mut sending => return Ok(sent?),
            _ = tokio::time::sleep_until(report.due_at()) => report.now(ctx, stream).await?,
        }
    }
}

/// Handles one message from the replication stream.
#[allow(clippy::too_many_arguments)]
async fn on_message(
    ctx: &StreamContext,
    decoder: &mut Decoder,
    streamed: Option<&mut Streamed>,
    b: &mut Batcher,
    counter: &mut EventCounter,
    stream: &mut ReplicationStream,
    report: &mut Reporter,
    msg: ReplicationMessage,
) -> anyhow::Result<()> {
    match msg {
        ReplicationMessage::XLogData { data, .. } => {
            let Some(streamed) = streamed else {
                return on_data(ctx, decoder, b, counter, stream, report, data).await;
            };
            match streamed
                .route(data)
                .context("sort a streamed pgoutput message")?
            {
                Routed::Message(data) => {
                    on_data(ctx, decoder, b, counter, stream, report, data).await?;
                }
                Routed::Held => {}
                Routed::Started { xid, first_segment } => {
                    tracing::debug!(xid, first_segment, "streamed transaction block");
                    metrics::counter!("courier_streamed_blocks_total").increment(1);
                }
                Routed::Aborted { xid, subxid } => {
                    let whole = if xid == subxid {
                        "transaction"
                    } else {
                        "subtransaction"
                    };
                    tracing::debug!(
                        xid,
                        subxid,
                        "streamed {whole} rolled back; its changes are left out"
                    );
                    metrics::counter!("courier_streamed_aborts_total", "of" => whole).increment(1);
                }
                Routed::Committed(mut replay) => {
                    tracing::debug!(xid = replay.xid, commit_lsn = %replay.commit_lsn, messages = replay.messages, "streamed transaction committed");
                    metrics::counter!("courier_streamed_commits_total").increment(1);
                    // Replayed in order through the same path as any
                    // transaction, so batches fill and wait for full
                    // queues as they do for one sent after its commit;
                    // the socket is not read meanwhile, so progress is
                    // reported from here.
                    while let Some(data) = replay
                        .next_message()
                        .context("read a streamed transaction back")?
                    {
                        on_data(ctx, decoder, b, counter, stream, report, data).await?;
                        report.if_due(ctx, stream).await?;
                    }
                }
            }
        }
        ReplicationMessage::Keepalive {
            wal_end,
            reply_requested,
            ..
        } => {
            if b.keepalive(wal_end) {
                send(ctx, decoder, b, stream, report).await?;
            }
            if reply_requested {
                send_status(ctx, stream, false).await?;
            }
        }
    }
    Ok(())
}

/// Decodes one pgoutput message of a whole transaction into the batch.
async fn on_data(
    ctx: &StreamContext,
    decoder: &mut Decoder,
    b: &mut Batcher,
    counter: &mut EventCounter,
    stream: &mut ReplicationStream,
    report: &mut Reporter,
    data: Bytes,
) -> anyhow::Result<()> {
    match decoder
        .decode(data)
        .await
        .context("decode pgoutput message")?
    {
        Some(DecodedEvent::Begin { .. }) => b.begin(),
        Some(DecodedEvent::PartialChange(c, gap)) => {
            counter.count(&c);
            b.push_partial(c, gap);
            if b.is_full() {
                send(ctx, decoder, b, stream, report).await?;
            }
        }
        Some(DecodedEvent::Change(c)) => {
            counter.count(&c);
            b.push(c);
            if b.is_full() {
                send(ctx, decoder, b, stream, report).await?;
            }
        }
        Some(DecodedEvent::Truncate(cs)) => {
            for c in cs {
                counter.count(&c);
                b.push(c);
            }
        }
        Some(DecodedEvent::Commit {
            end_lsn,
            commit_lsn,
            commit_time_us,
        }) => {
            b.commit(end_lsn);
            ctx.status
                .note_commit_received(commit_lsn.into(), commit_time_us);
            if b.is_full() || b.is_due() {
                send(ctx, decoder, b, stream, report).await?;
                counter.flush();
            }
        }
        Some(DecodedEvent::Relation(rel)) => {
            tracing::info!(table = %rel.id, columns = rel.columns.len(), "table shape received");
        }
        Some(DecodedEvent::UnroutableMessage { prefix, lsn }) => {
            tracing::warn!(%prefix, %lsn, "a non-transactional pg_logical_emit_message of an outbox prefix is not an event (use pg_logical_emit_message(true, ...)); left out");
            metrics::counter!("courier_outbox_unroutable_messages_total", "prefix" => prefix)
                .increment(1);
        }
        Some(DecodedEvent::Message { .. }) | None => {}
    }
    Ok(())
}

/// Reports the watermark as written, flushed and applied (flush is what
/// moves the slot); with `reply` the server answers at once. Returns whether
/// anything was sent (nothing before any sink reported a position).
async fn send_status(
    ctx: &StreamContext,
    stream: &mut ReplicationStream,
    reply: bool,
) -> anyhow::Result<bool> {
    let Some(l) = ctx.status.watermark.min().map(|p| p.as_lsn()) else {
        return Ok(false);
    };
    stream
        .send_status(l, l, l, reply)
        .await
        .context("send standby status update")?;
    ctx.status.set_acknowledged(l);
    Ok(true)
}
