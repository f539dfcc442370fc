//! A transparent HTTP proxy in front of a search node that counts what the
//! node answered to `_bulk` requests: Courier talks to the node through it,
//! so a test sees how many of Courier's own documents the node refused for
//! overload, whatever Courier logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use serde_json::Value;

/// What the node answered to the `_bulk` requests that went through the tap.
#[derive(Default, Debug)]
pub struct BulkCounts {
    /// `_bulk` requests forwarded.
    pub requests: AtomicU64,
    /// Whole requests refused with HTTP 429 or 5xx.
    pub refused_requests: AtomicU64,
    /// Items refused for overload (item status 429 or 5xx).
    pub refused_items: AtomicU64,
    /// Items applied (item status 2xx, or 409/404: an older version or a
    /// missing document).
    pub applied_items: AtomicU64,
    /// Requests that answered some items and refused others.
    pub partial_requests: AtomicU64,
}

impl BulkCounts {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Tap {
    upstream: String,
    http: reqwest::Client,
    counts: Arc<BulkCounts>,
}

/// Starts the tap on an ephemeral loopback port in front of `upstream`;
/// returns its base URL and the live counts.
pub async fn start(upstream: &str) -> (String, Arc<BulkCounts>) {
    let counts = Arc::new(BulkCounts::default());
    let tap = Tap {
        upstream: upstream.trim_end_matches('/').to_string(),
        http: reqwest::Client::new(),
        counts: counts.clone(),
    };
    let app = Router::new().fallback(forward).with_state(tap);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the bulk tap");
    let addr = listener.local_addr().expect("the bulk tap's address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), counts)
}

async fn forward(State(tap): State<Tap>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut out = tap
        .http
        .request(parts.method.clone(), format!("{}{path}", tap.upstream));
    for name in ["content-type", "authorization"] {
        if let Some(v) = parts.headers.get(name) {
            out = out.header(name, v.clone());
        }
    }
    let resp = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return Response::builder()
                .status(502)
                .body(Body::from(format!("bulk tap: {e}")))
                .unwrap_or_default()
        }
    };
    let status = resp.status();
    let content_type = resp.headers().get("content-type").cloned();
    let bytes = resp.bytes().await.unwrap_or_default();
    if parts.uri.path().ends_with("/_bulk") {
        count(&tap.counts, status.as_u16(), &bytes);
    }
    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    builder.body(Body::from(bytes)).unwrap_or_default()
}

fn count(c: &BulkCounts, status: u16, body: &[u8]) {
    c.requests.fetch_add(1, Ordering::Relaxed);
    if status == 429 || status >= 500 {
        c.refused_requests.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let (mut refused, mut applied) = (0, 0);
    for item in json["items"].as_array().into_iter().flatten() {
        let s = item
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|b| b["status"].as_u64())
            .unwrap_or(0);
        match s {
            429 | 500..=599 => refused += 1,
            200..=299 | 404 | 409 => applied += 1,
            _ => {}
        }
    }
    c.refused_items.fetch_add(refused, Ordering::Relaxed);
    c.applied_items.fetch_add(applied, Ordering::Relaxed);
    if refused > 0 && applied > 0 {
        c.partial_requests.fetch_add(1, Ordering::Relaxed);
    }
}
