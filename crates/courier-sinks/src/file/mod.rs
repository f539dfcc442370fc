//! The `file` sink: every change as one envelope line appended to a file
//! (and every event of its outbox routers as one line, see [`crate::outbox`]).
//!
//! "Applied" means written and `fsync`ed. After a crash the file may hold
//! changes that Courier replays again (at-least-once); a reader folds lines
//! by key keeping the greatest `source.lsn`, later lines winning ties.
//!
//! Every line in the file is whole. A write that fails part-way (a full
//! disk) is cut back to where the batch began before the error is reported,
//! so the retried batch starts on a fresh line; a last line torn by a crash
//! is cut off when the sink opens the file. Neither was reported applied,
//! so the replay writes those changes again, whole.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use courier_core::{Batch, Sink, SinkError};
use serde::Deserialize;

use crate::envelope::{EnvelopeLines, SourceInfo};
use crate::failure;
use crate::outbox::Routers;
use crate::selection::TableSelection;
use crate::BuildError;

/// `[sinks.NAME]` with `type = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to append to; created if missing.
    pub path: PathBuf,
    /// Tables this sink receives (default: all source tables).
    pub tables: Option<Vec<String>>,
}

/// Appends envelope lines to a file.
pub struct FileSink {
    file: File,
    path: PathBuf,
    lines: EnvelopeLines,
    /// The file's length before a failed write that could not be cut back
    /// at once: cut back before the next write.
    cut_back_to: Option<u64>,
}

impl FileSink {
    /// Opens (creating it and its directory if needed) the file to append
    /// to, first cutting off a torn last line a crash may have left.
    pub fn new(config: FileConfig, source: &SourceInfo) -> Result<Self, BuildError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| BuildError::Io(dir.to_path_buf(), e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            // To find a torn last line.
            .read(true)
            .open(&config.path)
            .map_err(|e| BuildError::Io(config.path.clone(), e))?;
        cut_torn_tail(&file).map_err(|e| BuildError::Io(config.path.clone(), e))?;
        let selection = TableSelection::from_setting(config.tables.as_deref())?;
        Ok(FileSink {
            file,
            path: config.path,
            lines: EnvelopeLines::new(source, selection),
            cut_back_to: None,
        })
    }
}

impl FileSink {
    /// The sink also appends the events of these outbox routers, one line
    /// each.
    pub fn with_outbox(mut self, routers: Routers) -> Self {
        self.lines = self.lines.with_outbox(routers);
        self
    }
}

/// Cuts the file back to just after its last newline, dropping a line a
/// crash tore in the middle of a write.
fn cut_torn_tail(mut file: &File) -> std::io::Result<()> {
    const STEP: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0; STEP as usize];
    while end > 0 {
        let start = end.saturating_sub(STEP);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(
            bytes = len - end,
            "the file sink's file ends with a torn line (a crash during a write); cutting it off"
        );
        file.set_len(end)?;
        file.sync_data()?;
    }
    Ok(())
}

/// Appends `lines` and makes them durable. On failure the file is cut back
/// to its length before, so that no fragment of the batch stays in front of
/// the retry; `cut_back_to` keeps that length while the cut itself fails.
fn append(file: &mut File, lines: &[u8], cut_back_to: &mut Option<u64>) -> std::io::Result<()> {
    if let Some(len) = *cut_back_to {
        file.set_len(len)?;
        *cut_back_to = None;
    }
    let before = file.metadata()?.len();
    let written = file.write_all(lines).and_then(|_| file.sync_data());
    if written.is_err() && file.set_len(before).is_err() {
        *cut_back_to = Some(before);
    }
    written
}

/// The error of a failed append: of the I/O error's kind (a full disk is
/// retriable), naming the file.
fn append_error(path: &Path, e: std::io::Error) -> SinkError {
    let (kind, reason) = failure::of_io(&e);
    SinkError::new(
        kind,
        format!("file sink: append to {}: {kind} ({reason})", path.display()),
    )
    .with_source(e)
}

#[async_trait]
impl Sink for FileSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let lines = self.lines.encode(batch)?;
        if lines.is_empty() {
            return Ok(());
        }
        let (file, cut_back_to) = (&mut self.file, &mut self.cut_back_to);
        tokio::task::block_in_place(|| append(file, lines, cut_back_to))
            .map_err(|e| append_error(&self.path, e))?;
        self.lines.written();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
