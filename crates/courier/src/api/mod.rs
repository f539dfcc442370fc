//! The admin API: `/healthz`, `/v1/status`, `/v1/wait`, `/metrics`, and the
//! jobs (`POST /v1/sinks/{name}/verify` and `/rebuild`, `GET /v1/jobs`,
//! `GET /v1/jobs/{id}`). Loopback by default; when a token is configured,
//! every route but `/healthz` needs `Authorization: Bearer <token>`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::jobs::{Jobs, JobsReport};
use crate::status::{Status, StatusReport};

mod jobs;
mod wait;

#[derive(Clone)]
pub(crate) struct AppState {
    /// The run's status; the run replaces it once it has prepared its source.
    status: watch::Receiver<Status>,
    metrics: Option<PrometheusHandle>,
    token: Option<String>,
    /// The verifications and rebuilds this instance runs.
    jobs: Jobs,
}

#[cfg(test)]
impl AppState {
    pub(crate) fn for_tests(status: watch::Receiver<Status>) -> Self {
        let config = crate::config::Config::parse(
            "[source]\nurl = \"postgres://u@127.0.0.1/db\"\ntables = [\"public.t\"]\n[sinks.log]\ntype = \"stdout\"\n",
            std::path::Path::new("courier.toml"),
        )
        .expect("a minimal configuration");
        AppState {
            status,
            metrics: None,
            token: None,
            jobs: Jobs::new(std::sync::Arc::new(config)),
        }
    }
}

/// A running API server; dropping it stops the server.
pub struct ApiHandle(tokio::task::JoinHandle<()>);

impl Drop for ApiHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Binds `addr` and serves the API in the background, showing the status
/// `status` holds at each request and starting jobs in `jobs`.
pub async fn serve(
    addr: SocketAddr,
    token: Option<String>,
    status: watch::Receiver<Status>,
    jobs: Jobs,
) -> anyhow::Result<ApiHandle> {
    let state = AppState {
        status,
        metrics: crate::telemetry::prometheus(),
        token,
        jobs,
    };
    let app = Router::new()
        .route("/v1/status", get(status_doc))
        .route("/v1/wait", get(wait::wait))
        .route("/v1/sinks/{name}/verify", post(jobs::verify))
        .route("/v1/sinks/{name}/rebuild", post(jobs::rebuild))
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::job))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/healthz", get(healthz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("bind the admin API to {addr} (api.listen): is the port taken?")
    })?;
    tracing::info!(%addr, "admin API listening");
    Ok(ApiHandle(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    })))
}

async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
        if !ok {
            return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
        }
    }
    next.run(req).await
}

/// Whether the two are equal, in time that depends only on their lengths,
/// not on where they first differ (a wrong token reveals nothing of the
/// right one by how fast it is refused).
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    diff == 0
}

async fn healthz(State(s): State<AppState>) -> Response {
    let status = s.status.borrow().clone();
    if status.is_streaming() {
        (StatusCode::OK, "ok\n").into_response()
    } else if status.is_standby() {
        (StatusCode::SERVICE_UNAVAILABLE, "standby\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not streaming\n").into_response()
    }
}

/// `/v1/status`: the pipeline's report and the jobs.
#[derive(serde::Serialize)]
struct StatusDoc {
    #[serde(flatten)]
    status: StatusReport,
    jobs: JobsReport,
}

async fn status_doc(State(s): State<AppState>) -> Json<StatusDoc> {
    let status = s.status.borrow().clone();
    Json(StatusDoc {
        status: status.report(),
        jobs: s.jobs.report(),
    })
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    let status = s.status.borrow().clone();
    status.report().publish_gauges();
    match &s.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3crett", b"s3cret"));
        assert!(!constant_time_eq(b"", b"s3cret"));
        assert!(!constant_time_eq(b"\0", b""));
        assert!(constant_time_eq(b"", b""));
    }
}
