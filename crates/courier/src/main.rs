//! The `courier` command: `run`, `check`, `tail` and `wait`.

mod api;
mod cli;
mod config;
mod jobs;
mod leadership;
mod outbox;
mod pipeline;
mod retry;
mod status;
mod telemetry;
mod verify;
mod window;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Rows are allocated by the threads that decode them and freed by the sink
/// tasks that apply them; mimalloc handles that cross-thread traffic with
/// far less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Makes mimalloc return freed pages to the OS at once instead of after
/// its `purge_delay` (1 s in mimalloc 3.3): under a drain, a second of
/// freed batches is most of the process's memory. A Kafka drain of 100k
/// transactions peaked at 220-245 MB RSS, and at 110-135 MB with immediate
/// purging, for the same CPU time.
fn purge_freed_pages_at_once() {
    use std::ffi::{c_int, c_long};
    extern "C" {
        fn mi_option_get(option: c_int) -> c_long;
        fn mi_option_set(option: c_int, value: c_long);
    }
    // `mi_option_purge_delay` in mimalloc 3.x, the version libmimalloc-sys
    // 0.1.49 builds (its bindings name the option for 2.x only). Set only
    // when the option holds that version's default (1000 ms), so a build
    // of mimalloc whose option 15 means something else is left alone.
    const PURGE_DELAY: c_int = 15;
    // SAFETY: both are plain functions of the linked mimalloc, safe to
    // call at any time; an option is an integer read on later purges.
    unsafe {
        if mi_option_get(PURGE_DELAY) == 1000 {
            mi_option_set(PURGE_DELAY, 0);
        }
    }
}

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
    /// Compare each store with PostgreSQL while streaming continues: exit 0
    /// when equal, 1 on drift, 2 when the comparison failed.
    Verify {
        #[arg(long, short, env = "COURIER_CONFIG")]
        config: PathBuf,
        /// Only this sink (default: every sink that keeps rows).
        #[arg(long)]
        sink: Option<String>,
        /// Only this table (`schema.table` or `table`); repeatable.
        #[arg(long)]
        table: Vec<String>,
        /// Rewrite drifted rows from PostgreSQL, then verify again.
        #[arg(long)]
        repair: bool,
        /// How long to wait for the sinks to catch up with the snapshot.
        #[arg(long, default_value = "60s", value_parser = config::duration::parse_duration)]
        timeout: std::time::Duration,
        /// `text` (default) or `json` (one object per verification).
        #[arg(long, value_enum, default_value = "text")]
        format: cli::verify::Format,
    },
    /// Reprint a store from an exact snapshot of PostgreSQL while it keeps
    /// serving and the stream keeps writing (a Redis cache in place, a
    /// search index into a new index behind its alias).
    Rebuild {
        #[arg(long, short, env = "COURIER_CONFIG")]
        config: PathBuf,
        /// The sink to rebuild.
        #[arg(long)]
        sink: String,
        /// Only this table (`schema.table` or `table`); repeatable.
        #[arg(long)]
        table: Vec<String>,
        /// How long a search index stays after its alias moved, for
        /// readers still using it.
        #[arg(long, default_value = "30s", value_parser = config::duration::parse_duration)]
        grace: std::time::Duration,
        /// `text` (default) or `json`.
        #[arg(long, value_enum, default_value = "text")]
        format: cli::verify::Format,
    },
    /// Wait until the sinks of a running Courier show everything through
    /// an LSN (read-your-writes for scripts); exit 1 on timeout.
    Wait {
        #[arg(long, short, env = "COURIER_CONFIG")]
        config: PathBuf,
        /// The WAL position, as PostgreSQL prints it (`0/16B3748`).
        #[arg(long)]
        lsn: String,
        /// Only this sink; repeatable (default: every sink).
        #[arg(long)]
        sink: Vec<String>,
        /// How long to wait (`500ms`, `2s`; default 10s, at most 5m).
        #[arg(long)]
        timeout: Option<String>,
    },
}

fn main() -> ExitCode {
    purge_freed_pages_at_once();
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
            Command::Verify {
                config,
                sink,
                table,
                repair,
                timeout,
                format,
            } => {
                let opts = verify::Options {
                    sink,
                    tables: table,
                    repair,
                    timeout,
                    progress: verify::Progress::default(),
                };
                cli::verify::verify(&config, opts, format).await
            }
            Command::Rebuild {
                config,
                sink,
                table,
                grace,
                format,
            } => cli::rebuild::rebuild(&config, &sink, &table, grace, format).await,
            Command::Wait {
                config,
                lsn,
                sink,
                timeout,
            } => cli::wait::wait(&config, &lsn, &sink, timeout.as_deref()).await,
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
