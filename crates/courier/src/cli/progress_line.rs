//! A progress line on standard error for `courier verify` and `courier
//! rebuild` when it is a terminal: redrawn in place a few times a second,
//! erased when the work ends. Nothing is drawn when standard error is a
//! file or a pipe, so logs and scripts see no control characters.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::verify::Progress;

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);

/// The line, drawn while it lives.
pub struct ProgressLine(Option<tokio::task::JoinHandle<()>>);

impl ProgressLine {
    /// Draws `progress` on standard error until dropped, if it is a terminal.
    pub fn show(progress: &Progress) -> ProgressLine {
        if !std::io::stderr().is_terminal() {
            return ProgressLine(None);
        }
        let progress = progress.clone();
        ProgressLine(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(REDRAW);
            loop {
                tick.tick().await;
                let report = progress.report();
                if report.stage.is_empty() {
                    continue;
                }
                // Carriage return and erase-line: the line replaces itself.
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{}", report.line());
                let _ = err.flush();
            }
        })))
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
