//! The `stdout` sink: every change as one envelope line on standard output.
//!
//! Logs go to standard error, so standard output carries only changes.
//! "Applied" means written and flushed to the stdout file descriptor.

use std::io::Write;

use async_trait::async_trait;
use courier_core::{Batch, Sink, SinkError};
use serde::Deserialize;

use crate::envelope::{now_ms, EnvelopeEncoder, SourceInfo};
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
    encoder: EnvelopeEncoder,
    selection: TableSelection,
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new(config: StdoutConfig, source: &SourceInfo) -> Result<Self, BuildError> {
        Ok(StdoutSink {
            encoder: EnvelopeEncoder::new(source),
            selection: TableSelection::from_setting(config.tables.as_deref())?,
            buf: Vec::with_capacity(1 << 20),
        })
    }
}

#[async_trait]
impl Sink for StdoutSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.buf.clear();
        let now = now_ms();
        for c in batch
            .changes
            .iter()
            .filter(|c| self.selection.includes(&c.relation.id))
        {
            self.encoder.encode_line(c, now, &mut self.buf);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)
            .and_then(|_| out.flush())
            .map_err(|e| SinkError::fatal("write to standard output").with_source(e))
    }
}
