//! The `file` sink: every change as one envelope line appended to a file.
//!
//! "Applied" means written and `fsync`ed. After a crash the file may hold
//! changes that Courier replays again (at-least-once); a reader folds lines
//! by key keeping the greatest `source.lsn`, later lines winning ties.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use courier_core::{Batch, Sink, SinkError};
use serde::Deserialize;

use crate::envelope::{EnvelopeLines, SourceInfo};
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
}

impl FileSink {
    pub fn new(config: FileConfig, source: &SourceInfo) -> Result<Self, BuildError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| BuildError::Io(dir.to_path_buf(), e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.path)
            .map_err(|e| BuildError::Io(config.path.clone(), e))?;
        let selection = TableSelection::from_setting(config.tables.as_deref())?;
        Ok(FileSink {
            file,
            path: config.path,
            lines: EnvelopeLines::new(source, selection),
        })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn apply(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let lines = self.lines.encode(batch);
        if lines.is_empty() {
            return Ok(());
        }
        let file = &mut self.file;
        tokio::task::block_in_place(|| file.write_all(lines).and_then(|_| file.sync_data()))
            .map_err(|e| {
                SinkError::retriable(format!("append to {}", self.path.display())).with_source(e)
            })
    }
}

#[cfg(test)]
mod tests;
