//! `courier verify`: compare every store with PostgreSQL, and repair it.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::progress_line::ProgressLine;
use crate::config::Config;
use crate::verify::{self, Options, Report};

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Exit 0 when every store equals PostgreSQL, 1 on drift, 2 when the
/// comparison could not be made. With `repair`, what drifted is rewritten
/// and the stores are verified again; the exit code is that of the second
/// verification.
pub async fn verify(path: &Path, opts: Options, format: Format) -> anyhow::Result<ExitCode> {
    let code = match run(path, opts, format).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    };
    Ok(code)
}

async fn run(path: &Path, opts: Options, format: Format) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let line = ProgressLine::show(&opts.progress);
    let first = verify::verify(&config, &opts).await?;
    drop(line);
    print(
        &first,
        format,
        if opts.repair && first.drift() > 0 {
            "before repair"
        } else {
            ""
        },
    );
    let last = if opts.repair && first.drift() > 0 {
        let again = Options {
            repair: false,
            ..opts
        };
        let line = ProgressLine::show(&again.progress);
        let second = verify::verify(&config, &again).await?;
        drop(line);
        print(&second, format, "after repair");
        second
    } else {
        first
    };
    Ok(if last.drift() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print(report: &Report, format: Format, when: &str) {
    if format == Format::Json {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        if !when.is_empty() {
            value["when"] = serde_json::Value::String(when.into());
        }
        println!("{value}");
        return;
    }
    let heading = if when.is_empty() {
        String::new()
    } else {
        format!(" ({when})")
    };
    println!(
        "verified against the snapshot at {}{heading}",
        report.snapshot
    );
    for t in &report.tables {
        let c = &t.counts;
        let verdict = if c.drift() == 0 { "equal" } else { "DRIFT" };
        println!(
            "{verdict:>5}  sink {} table {}: {} rows checked, {} missing, {} extra, {} different, {} newer than the snapshot (not compared){}",
            t.sink,
            t.table,
            c.checked,
            c.missing,
            c.extra,
            c.different,
            c.newer,
            if t.repaired > 0 { format!(", {} repaired", t.repaired) } else { String::new() }
        );
        for (drift, key) in &t.examples {
            println!("         {drift:?} e.g. {key}");
        }
    }
    for (sink, why) in &report.skipped {
        println!(" skip  sink {sink}: {why}");
    }
    if std::io::stdout().is_terminal() && report.drift() > 0 && when.is_empty() {
        println!("run again with --repair to rewrite the drifted rows from PostgreSQL");
    }
}
