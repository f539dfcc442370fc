//! The `stdout` sink: every change as one envelope line on standard output
//! (and every event of its outbox routers as one line, see [`crate::outbox`]).
//!
//! Logs go to standard error, so standard output carries only changes.
//! "Applied" means written and flushed to the stdout file descriptor.

use std::io::Write;

use async_trait::async_trait;
use courier_core::{Batch, Sink, SinkError, SinkErrorKind};
use serde::Deserialize;

use crate::envelope::{EnvelopeLines, SourceInfo};
use crate::failure;
use crate::outbox::Routers;
use crate::selection::TableSelection;
use crate::BuildError;

/// `[sinks.NAME]` with `type = "stdout"`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// Tables this sink receives (default: all source tables).
    pub tables: Option<Vec<String>>,
}

/// Writes envelope lines to standard output.
pub struct StdoutSink {
    lines: EnvelopeLines,
}

impl StdoutSink {
    pub fn new(config: StdoutConfig, source: &SourceInfo) -> Result<Self, BuildError> {
        let selection = TableSelection::from_setting(config.tables.as_deref())?;
        Ok(StdoutSink {
            lines: EnvelopeLines::new(source, selection),
        })
    }

    /// The sink also writes the events of these outbox routers, one line
    /// each.
    pub fn with_outbox(mut self, routers: Routers) -> Self {
        self.lines = self.lines.with_outbox(routers);
        self
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let lines = self.lines.encode(batch)?;
        if lines.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(lines)
            .and_then(|_| out.flush())
            .map_err(write_error)?;
        self.lines.written();
        Ok(())
    }
}

/// The error of a failed write to standard output. A closed pipe means
/// nothing reads the output any more, which no retry can change; any other
/// failure is classified as the I/O error it is (a full disk behind a
/// redirection is retriable).
fn write_error(e: std::io::Error) -> SinkError {
    let (kind, reason) = match e.kind() {
        std::io::ErrorKind::BrokenPipe => (
            SinkErrorKind::Config,
            "standard output is closed: nothing reads it".to_string(),
        ),
        _ => failure::of_io(&e),
    };
    SinkError::new(
        kind,
        format!("stdout sink: write to standard output: {kind} ({reason})"),
    )
    .with_source(e)
}
