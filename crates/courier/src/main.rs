//! The `courier` command: `run`, `check` and `tail`.

mod api;
mod cli;
mod config;
mod leadership;
mod outbox;
mod pipeline;
mod retry;
mod status;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Rows are allocated by the threads that decode them and freed by the sink
/// tasks that apply them; mimalloc handles that cross-thread traffic with
/// far less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keep search, analytics and cache stores in sync with PostgreSQL.
#[derive(Parser)]
#[command(name = "courier", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Snapshot what needs it, then stream changes into every sink.
    Run {
        /// The configuration file.
        #[arg(long, short, env = "COURIER_CONFIG")]
        config: PathBuf,
    },
    /// Check that PostgreSQL and every sink are ready; one line per check.
    Check {
        #[arg(long, short, env = "COURIER_CONFIG")]
        config: PathBuf,
    },
    /// Print changes as JSON lines without acknowledging anything.
    Tail {
        #[arg(long, short, env = "COURIER_CONFIG")]
        config: PathBuf,
        /// Only this table (`schema.table` or `table`); repeatable.
        #[arg(long)]
        table: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The command runs as a task on the runtime's workers rather than on
    // this thread: a worker that sees the replication socket become readable
    // then reads it itself, instead of waking this thread to do it.
    let command = runtime.spawn(async move {
        match cli.command {
            Command::Run { config } => cli::run::run(&config).await,
            Command::Check { config } => cli::check::check(&config).await,
            Command::Tail { config, table } => cli::tail::tail(&config, &table).await,
        }
    });
    let result = runtime
        .block_on(command)
        .unwrap_or_else(|e| Err(anyhow::anyhow!("courier ended abnormally: {e}")));
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
