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
/// * **Errors.** Every error has a [`SinkErrorKind`]. A retriable one
///   (unreachable, timed out, overloaded, unavailable, local I/O) makes
///   Courier retry the same batch with backoff. A fatal one stops Courier's progress (nothing is
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

    /// When what `apply` made durable can be read from the store. The
    /// default: at once (a key-value store, a database table).
    fn visibility(&self) -> Visibility {
        Visibility::OnApply
    }
}

/// When a sink's applied changes become readable (what the wait API waits
/// for).
#[derive(Clone)]
pub enum Visibility {
    /// Readable as soon as `apply` returned.
    OnApply,
    /// Readable only after a refresh that started once `apply` returned
    /// (a search index): Courier calls it when someone waits.
    AfterRefresh(std::sync::Arc<dyn Refresh>),
}

impl fmt::Debug for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Visibility::OnApply => "OnApply",
            Visibility::AfterRefresh(_) => "AfterRefresh",
        })
    }
}

/// Makes everything a sink applied before the call readable.
#[async_trait]
pub trait Refresh: Send + Sync {
    /// Returns `Ok` once every change applied before the call began is
    /// readable; safe to call concurrently with `apply`.
    async fn refresh(&self) -> Result<(), SinkError>;
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

/// What kind of failure a sink met, which decides whether retrying can help
/// ([`SinkErrorKind::is_retriable`]) and what its message says.
///
/// Every sink classifies its store's answers into these kinds in one place
/// (its client), so a stopped server reads as unreachable, not overloaded,
/// whatever the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SinkErrorKind {
    /// No connection to the store: connection refused or reset, host name
    /// not resolved, connection lost mid-request. Retriable.
    Unreachable,
    /// The store did not answer in time. Retriable.
    TimedOut,
    /// The store is reachable but refuses work until it catches up: HTTP
    /// 429, a full write queue, too many parts, a busy script, out of
    /// memory. Retriable.
    Overloaded,
    /// The store is reachable but not serving writes for now: starting,
    /// failing over, a read-only replica, a 5xx without more detail, an
    /// answer cut short. Retriable.
    Unavailable,
    /// Writing to local storage failed (a full disk, an I/O error).
    /// Retriable: space may be freed.
    Io,
    /// The store refused the data or the statement itself (a value that
    /// does not fit its column or mapping, a document too large, a key of
    /// another type): retrying the same data cannot help. Fatal.
    Rejected,
    /// The table's shape is one the store cannot follow (a type change its
    /// mapping cannot hold, a table without a key). Fatal.
    Schema,
    /// How Courier or the store is set up must change: settings,
    /// credentials, permissions, an unsupported server, an output nobody
    /// reads. Fatal.
    Config,
}

impl SinkErrorKind {
    /// Whether retrying the same batch later can succeed: true for
    /// [`Unreachable`](Self::Unreachable), [`TimedOut`](Self::TimedOut),
    /// [`Overloaded`](Self::Overloaded), [`Unavailable`](Self::Unavailable)
    /// and [`Io`](Self::Io); false for the kinds a person must act on.
    pub fn is_retriable(self) -> bool {
        match self {
            SinkErrorKind::Unreachable
            | SinkErrorKind::TimedOut
            | SinkErrorKind::Overloaded
            | SinkErrorKind::Unavailable
            | SinkErrorKind::Io => true,
            SinkErrorKind::Rejected | SinkErrorKind::Schema | SinkErrorKind::Config => false,
        }
    }
}

impl fmt::Display for SinkErrorKind {
    /// The kind as words that follow the store's name in a message:
    /// "search server 127.0.0.1:9200 unreachable (connection refused)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SinkErrorKind::Unreachable => "unreachable",
            SinkErrorKind::TimedOut => "timed out",
            SinkErrorKind::Overloaded => "overloaded",
            SinkErrorKind::Unavailable => "unavailable",
            SinkErrorKind::Io => "failed to write",
            SinkErrorKind::Rejected => "rejected the data",
            SinkErrorKind::Schema => "cannot follow the table's schema",
            SinkErrorKind::Config => "refused the configuration",
        })
    }
}

/// A failure to apply a batch, with the context a person needs to act on it.
///
/// Messages name the store, the table and the LSN, never row values,
/// passwords or tokens.
#[derive(Debug)]
pub struct SinkError {
    /// What kind of failure it is; decides [`SinkError::is_retriable`].
    pub kind: SinkErrorKind,
    /// What failed and why, in words.
    pub message: String,
    /// The table whose change failed, when one did.
    pub table: Option<TableId>,
    /// The version of the change that failed, when known.
    pub lsn: Option<Lsn>,
    /// The underlying error, if any.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// An error of `kind` with `message` and no table, LSN or source yet.
    pub fn new(kind: SinkErrorKind, message: impl Into<String>) -> Self {
        SinkError {
            kind,
            message: message.into(),
            table: None,
            lsn: None,
            source: None,
        }
    }

    /// The error, naming `table`.
    pub fn with_table(mut self, table: &TableId) -> Self {
        self.table = Some(table.clone());
        self
    }

    /// The error, naming the version `lsn` of the change that failed.
    pub fn with_lsn(mut self, lsn: Lsn) -> Self {
        self.lsn = Some(lsn);
        self
    }

    /// The error, caused by `source`.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether Courier should retry the batch: see [`SinkErrorKind::is_retriable`].
    pub fn is_retriable(&self) -> bool {
        self.kind.is_retriable()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrying_follows_the_kind() {
        use SinkErrorKind::*;
        for kind in [Unreachable, TimedOut, Overloaded, Unavailable, Io] {
            assert!(SinkError::new(kind, "x").is_retriable(), "{kind:?}");
        }
        for kind in [Rejected, Schema, Config] {
            assert!(!SinkError::new(kind, "x").is_retriable(), "{kind:?}");
        }
        let e = SinkError::new(
            Unreachable,
            "redis at 127.0.0.1:1 unreachable (connection refused)",
        )
        .with_table(&TableId::new("public", "t"))
        .with_lsn(Lsn(0x1_0000_0002));
        assert_eq!(
            e.to_string(),
            "redis at 127.0.0.1:1 unreachable (connection refused) (table public.t, LSN 1/2)"
        );
    }
}
