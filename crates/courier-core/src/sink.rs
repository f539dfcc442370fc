use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Batch, Lsn, TableId};

/// A derived store that Courier keeps in sync.
///
/// # Contract
///
/// * **Order.** Batches arrive in stream order, one call at a time; within a
///   batch, changes are in stream order. Changes to the same row must take
///   effect in that order.
/// * **At least once.** After a crash or reconnect, Courier replays from the
///   last acknowledged position, so a sink sees changes it has already
///   applied. Applying must be idempotent.
/// * **Versions.** Every change carries a version (its transaction's commit
///   LSN, or a snapshot's consistent point). For each row a sink keeps the
///   change with the greatest version and lets a later change win a tie
///   ("greater or equal"): a replayed or late, older change never overwrites
///   newer data, and a delete leaves a versioned tombstone that outlives any
///   replay window.
/// * **Applied.** `apply` returns `Ok` only when every change in the batch is
///   durable in the store (acknowledged by the server, fsynced for files), or
///   was deliberately routed to a dead-letter store the user configured.
///   Courier then advances the replication slot past it: a change that is
///   reported applied and then lost is lost for good.
/// * **Errors.** A retriable error makes Courier retry the same batch with
///   backoff. A fatal error stops Courier's progress (nothing is
///   acknowledged past the failing batch) and is shown to the user, so its
///   message must name the table, the LSN and the reason.
#[async_trait]
pub trait Sink: Send {
    /// Applies the batch durably, per the contract above.
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError>;

    /// How this sink wants its batches grouped. Courier hands a sink several
    /// consecutive batches at once (through [`Sink::apply_all`]) when they
    /// are already queued, up to `max_changes`, and waits up to `max_delay`
    /// for more: stores that prefer few large writes (ClickHouse parts, bulk
    /// requests) get them under load without delaying an idle stream past
    /// `max_delay`. The default groups nothing.
    fn grouping(&self) -> Grouping {
        Grouping::NONE
    }

    /// Applies consecutive batches as one unit, per the contract above: `Ok`
    /// only when every change of every batch is durable; on an error Courier
    /// retries the whole group. The default applies them one by one.
    async fn apply_all(&mut self, batches: &[&Batch]) -> Result<(), SinkError> {
        for b in batches {
            self.apply(b).await?;
        }
        Ok(())
    }

    /// Releases resources at shutdown, after the last `apply`.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// How many changes a sink wants per call and how long a queued change may
/// wait for others to join it (see [`Sink::grouping`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// Stop grouping once this many changes are gathered (a single batch
    /// larger than this is still applied whole).
    pub max_changes: usize,
    /// Stop grouping once the changes gathered hold this many bytes of
    /// values (see [`Batch::approx_bytes`]), so wide rows make smaller
    /// groups and the memory a group holds stays bounded.
    pub max_bytes: usize,
    /// The longest the first batch of a group waits for more to arrive.
    pub max_delay: Duration,
}

impl Grouping {
    /// One batch per call, no waiting.
    pub const NONE: Grouping = Grouping {
        max_changes: 0,
        max_bytes: 0,
        max_delay: Duration::ZERO,
    };
}

/// Whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// The server was unreachable, overloaded or restarting: retry later.
    Retriable,
    /// The store rejected the data or the configuration: a person must act.
    Fatal,
}

/// A failure to apply a batch, with the context a person needs to act on it.
#[derive(Debug)]
pub struct SinkError {
    pub kind: SinkErrorKind,
    pub message: String,
    pub table: Option<TableId>,
    pub lsn: Option<Lsn>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    pub fn retriable(message: impl Into<String>) -> Self {
        SinkError {
            kind: SinkErrorKind::Retriable,
            message: message.into(),
            table: None,
            lsn: None,
            source: None,
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        SinkError {
            kind: SinkErrorKind::Fatal,
            message: message.into(),
            table: None,
            lsn: None,
            source: None,
        }
    }

    pub fn with_table(mut self, table: &TableId) -> Self {
        self.table = Some(table.clone());
        self
    }

    pub fn with_lsn(mut self, lsn: Lsn) -> Self {
        self.lsn = Some(lsn);
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn is_retriable(&self) -> bool {
        self.kind == SinkErrorKind::Retriable
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(t) = &self.table {
            write!(f, " (table {t}")?;
            if let Some(l) = self.lsn {
                write!(f, ", LSN {l}")?;
            }
            f.write_str(")")?;
        } else if let Some(l) = self.lsn {
            write!(f, " (LSN {l})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
