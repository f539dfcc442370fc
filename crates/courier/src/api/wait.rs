//! `GET /v1/wait?lsn=X/Y[&sinks=a,b][&timeout=2s]`: read-your-writes. The
//! answer comes as soon as every named sink (default: all) made everything
//! through the LSN visible to its readers (200), or when the timeout passes
//! first (504); both carry each sink's positions. The request waits on the
//! sinks' visible positions (`crate::window`): woken by the acknowledgement
//! that reaches it, never polling.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use courier_core::{Lsn, Position};
use futures_util::future::join_all;
use serde::Serialize;

use super::AppState;
use crate::config::duration::parse_duration;
use crate::status::Status;

/// How long a wait lasts when the request names no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The answer, 200 or 504.
#[derive(Debug, Serialize)]
struct Answer {
    lsn: String,
    /// Whether every named sink shows everything through `lsn`.
    visible: bool,
    waited_ms: f64,
    /// From the acknowledgement that made the LSN visible to the answer
    /// (`null` when it was visible when asked, or on timeout).
    wakeup_ms: Option<f64>,
    sinks: BTreeMap<String, SinkPositions>,
}

#[derive(Debug, Serialize)]
struct SinkPositions {
    applied_lsn: String,
    visible_lsn: String,
    visible: bool,
}

/// What a request asks for, checked.
struct Request {
    lsn: Lsn,
    sinks: Vec<String>,
    timeout: Duration,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

pub(super) async fn wait(
    State(s): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    // The run replaces its status once its source is prepared: a waiter
    // that asked before that waits on the new one from then on, or it
    // would watch positions nobody advances any more.
    let mut replaced = s.status.clone();
    let mut status = replaced.borrow_and_update().clone();
    let request = match parse(&status, &query) {
        Ok(r) => r,
        Err(message) => return bad_request(message),
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + request.timeout;
    let at = Position::from(request.lsn);
    let (visible, wakeup_ms, windows) = loop {
        let windows: Vec<_> = (request.sinks.iter())
            .filter_map(|n| status.windows.get(n).map(|w| (n.clone(), w.clone())))
            .collect();
        let all = join_all(windows.iter().map(|(_, w)| w.visible_at(at)));
        let shown = tokio::select! {
            shown = tokio::time::timeout_at(deadline, all) => shown.ok(),
            Ok(()) = replaced.changed() => {
                status = replaced.borrow_and_update().clone();
                continue;
            }
        };
        let Some(shown) = shown else {
            break (false, None, windows);
        };
        // From the acknowledgement that completed the wait to here.
        let wakeup = shown.into_iter().flatten().max().map(|t| t.elapsed());
        if let Some(w) = wakeup {
            metrics::histogram!(crate::window::WAKEUP_SECONDS).record(w.as_secs_f64());
        }
        let ms = wakeup.map(|w| (w.as_secs_f64() * 1e5).round() / 100.0);
        break (true, ms, windows);
    };
    let sinks = (windows.iter())
        .map(|(name, w)| {
            let (applied, shown) = (w.applied_position(), w.visible_position());
            let positions = SinkPositions {
                applied_lsn: applied.as_lsn().to_string(),
                visible_lsn: shown.as_lsn().to_string(),
                visible: shown >= at,
            };
            (name.clone(), positions)
        })
        .collect();
    let answer = Answer {
        lsn: request.lsn.to_string(),
        visible,
        waited_ms: (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
        wakeup_ms,
        sinks,
    };
    let code = if visible {
        StatusCode::OK
    } else {
        StatusCode::GATEWAY_TIMEOUT
    };
    (code, Json(answer)).into_response()
}

/// Checks the query; an error says what is wrong and how to ask instead.
fn parse(status: &Status, query: &BTreeMap<String, String>) -> Result<Request, String> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !["lsn", "sinks", "timeout"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown parameter `{unknown}`: /v1/wait takes lsn, sinks and timeout \
             (/v1/wait?lsn=0/16B3748&sinks=search,cache&timeout=2s)"
        ));
    }
    if !status.positions_are_lsns() {
        return Err(
            "this Courier reads a Kafka source, whose positions are not WAL positions: \
             wait on the Courier that captures from PostgreSQL, or read the topic's offsets"
                .into(),
        );
    }
    let lsn = query.get("lsn").map(|l| l.trim()).ok_or_else(|| {
        "missing lsn: give the WAL position to wait for, as PostgreSQL prints it \
         (/v1/wait?lsn=0/16B3748; take it with SELECT pg_current_wal_insert_lsn() after COMMIT)"
            .to_string()
    })?;
    let lsn: Lsn = lsn.parse().map_err(|_| {
        format!(
            "lsn `{lsn}` is not a WAL position: write it as PostgreSQL prints one, two hex \
             numbers with a slash (0/16B3748; SELECT pg_current_wal_insert_lsn())"
        )
    })?;
    let configured: Vec<&str> = status.windows.names().collect();
    let sinks: Vec<String> = match query.get("sinks").map(|v| v.trim()) {
        None | Some("") => configured.iter().map(|n| n.to_string()).collect(),
        Some(list) => list.split(',').map(|n| n.trim().to_string()).collect(),
    };
    if let Some(unknown) = sinks.iter().find(|n| !configured.contains(&n.as_str())) {
        return Err(format!(
            "unknown sink `{unknown}`: the configured sinks are {} (sinks=a,b names them, \
             as in the [sinks.NAME] sections)",
            configured.join(", ")
        ));
    }
    let timeout = match query.get("timeout") {
        None => DEFAULT_TIMEOUT,
        Some(t) => parse_duration(t).map_err(|e| format!("timeout: {e}"))?,
    };
    if timeout > MAX_TIMEOUT {
        return Err(format!(
            "timeout `{}` is longer than the {} s a wait may last: ask for less and wait again",
            query["timeout"],
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(Request {
        lsn,
        sinks,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    fn status() -> Status {
        let sinks = [("cache".to_string(), "redis".to_string())];
        Status::new("slot", "publication", &sinks, Lsn::ZERO)
    }

    fn query(q: &[(&str, &str)]) -> Query<BTreeMap<String, String>> {
        Query(
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A request that came before the run prepared its source is answered
    /// from the status that replaced the first one.
    #[tokio::test]
    async fn a_wait_asked_before_the_source_was_prepared_follows_the_new_status() {
        let (tx, rx) = watch::channel(status());
        let state = AppState::for_tests(rx);
        let asked = tokio::spawn(wait(
            State(state),
            query(&[("lsn", "0/100"), ("timeout", "5s")]),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let prepared = status();
        tx.send(prepared.clone()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cache = prepared.windows.get("cache").unwrap();
        cache.applied(Some(Position::from(Lsn(0x100))), &[], false);
        let answer = tokio::time::timeout(Duration::from_secs(2), asked)
            .await
            .expect("the wait follows the new status")
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }
}
