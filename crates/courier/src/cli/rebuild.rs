//! `courier rebuild`: reprint a store from PostgreSQL while it keeps serving.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::progress_line::ProgressLine;
use crate::cli::verify::Format;
use crate::config::Config;
use crate::verify::{rebuild, Progress};

/// Exit 0 once the sink is rebuilt, 2 when it could not be.
pub async fn rebuild(
    path: &Path,
    sink: &str,
    tables: &[String],
    grace: std::time::Duration,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let progress = Progress::default();
    progress.stage("rebuild");
    let run = async {
        let config = Config::load(path)?;
        let _line = ProgressLine::show(&progress);
        rebuild::rebuild(&config, sink, tables, grace, &progress).await
    };
    let report = match run.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    match format {
        Format::Json => println!("{}", serde_json::to_value(&report).unwrap_or_default()),
        Format::Text => {
            println!(
                "sink {} rebuilt from the snapshot at {}",
                report.sink, report.snapshot
            );
            for t in &report.tables {
                println!(
                    "  {}: {} rows written{}, {} rows PostgreSQL no longer has removed{} in {:.1}s",
                    t.table,
                    t.written,
                    t.index
                        .as_ref()
                        .map(|i| format!(" into {i}, now behind the alias"))
                        .unwrap_or_default(),
                    t.removed,
                    if t.unremovable > 0 {
                        format!(
                            " ({} left: their key could not be read back)",
                            t.unremovable
                        )
                    } else {
                        String::new()
                    },
                    t.seconds
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
