//! `courier wait`: the wait API for scripts. Asks the running Courier
//! (the config's `api.listen`, with its token) to wait until the sinks show
//! everything through an LSN; prints the answer; exit 0 when visible, 1 on
//! timeout or error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use courier_core::Lsn;

use crate::config::duration::parse_duration;
use crate::config::Config;

/// Waits for `lsn` on `sinks` (all when empty), for at most `timeout`.
pub async fn wait(
    path: &Path,
    lsn: &str,
    sinks: &[String],
    timeout: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let lsn: Lsn = lsn.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "--lsn {lsn:?} is not a WAL position: write it as PostgreSQL prints one (0/16B3748; \
             SELECT pg_current_wal_insert_lsn())"
        )
    })?;
    let timeout = match timeout {
        Some(t) => parse_duration(t).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?,
        None => Duration::from_secs(10),
    };
    let Some(listen) = config.api.listen else {
        bail!("{}: the admin API is off ([api] listen is not set); courier wait asks the running Courier through it", path.display());
    };
    let addr = reachable(listen);
    let mut url = url::Url::parse(&format!("http://{addr}/v1/wait")).context("admin API URL")?;
    url.query_pairs_mut()
        .append_pair("lsn", &lsn.to_string())
        .append_pair("timeout", &format!("{}ms", timeout.as_millis()));
    if !sinks.is_empty() {
        url.query_pairs_mut().append_pair("sinks", &sinks.join(","));
    }
    let client = reqwest::Client::builder()
        .timeout(timeout + Duration::from_secs(5))
        .build()
        .context("HTTP client")?;
    let mut req = client.get(url);
    if let Some(token) = &config.api.token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.with_context(|| {
        format!("ask the running Courier at {addr} (api.listen): is `courier run` running with this config?")
    })?;
    let status = resp.status();
    let body = resp.text().await.context("read the wait API's answer")?;
    match status.as_u16() {
        200 => {
            println!("{}", body.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        504 => {
            println!("{}", body.trim_end());
            eprintln!(
                "timed out after {timeout:?}: not every sink shows {lsn} yet (positions above)"
            );
            Ok(ExitCode::FAILURE)
        }
        _ => {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(String::from))
                .unwrap_or(body);
            bail!("the wait API answered {status}: {}", message.trim_end())
        }
    }
}

/// Where to reach a listener: an unspecified address (0.0.0.0, ::) through loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}
