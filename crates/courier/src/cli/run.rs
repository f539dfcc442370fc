use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;

/// `courier run`: streams until SIGINT/SIGTERM, then drains, acknowledges
/// and exits 0 (non-zero when the stop did not finish in
/// `pipeline.shutdown_timeout`).
pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    crate::telemetry::prometheus();
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining sinks (a second signal stops at once)");
        let _ = tx.send(true);
        // Someone who asks twice does not want to wait for the drain:
        // nothing is lost, the next start replays from the slot.
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: stopping without draining; the next start replays from the slot");
        std::process::exit(130);
    });
    let api_config = (config.api.listen, config.api.token.clone());
    let prepared = crate::pipeline::prepare(config)
        .await
        .context("courier run")?;
    let api = match api_config {
        (Some(addr), token) => {
            Some(crate::api::serve(addr, token, prepared.status().clone()).await?)
        }
        (None, _) => None,
    };
    let result = crate::pipeline::run(prepared, rx).await;
    drop(api);
    result.context("courier run")?;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
