//! Jobs on the running instance: `POST /v1/sinks/{name}/verify` (JSON body
//! or query: `tables`, `repair`, `timeout`), `POST /v1/sinks/{name}/rebuild`
//! (`tables`, `grace`) start one in the background and answer 202 with the
//! job and its `Location`; `GET /v1/jobs/{id}` and `GET /v1/jobs` show
//! them (state, progress, and once finished the report). 404 names the
//! sinks there are, 409 the job that already runs on the sink.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::AppState;
use crate::config::duration::parse_duration;
use crate::jobs::{Kind, Request, StartError, Trigger, REBUILD_GRACE, VERIFY_TIMEOUT};

/// What a verify request may say.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerifyOptions {
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    repair: bool,
    timeout: Option<String>,
}

/// What a rebuild request may say.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RebuildOptions {
    #[serde(default)]
    tables: Vec<String>,
    grace: Option<String>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(super) async fn verify(
    State(s): State<AppState>,
    Path(sink): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let opts: VerifyOptions = match options(Kind::Verify, &query, &body) {
        Ok(o) => o,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let timeout = match duration("timeout", opts.timeout.as_deref(), VERIFY_TIMEOUT) {
        Ok(t) => t,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let request = Request::Verify {
        tables: opts.tables,
        repair: opts.repair,
        timeout,
    };
    start(&s, &sink, request)
}

pub(super) async fn rebuild(
    State(s): State<AppState>,
    Path(sink): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    let opts: RebuildOptions = match options(Kind::Rebuild, &query, &body) {
        Ok(o) => o,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let grace = match duration("grace", opts.grace.as_deref(), REBUILD_GRACE) {
        Ok(t) => t,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let request = Request::Rebuild {
        tables: opts.tables,
        grace,
    };
    start(&s, &sink, request)
}

fn start(s: &AppState, sink: &str, request: Request) -> Response {
    match s.jobs.start(sink, request, Trigger::Api) {
        Ok(id) => {
            let location = format!("/v1/jobs/{id}");
            let doc = s.jobs.get(id);
            (
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(json!(doc)),
            )
                .into_response()
        }
        Err(e @ StartError::UnknownSink { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ StartError::Busy { id, .. }) => (
            StatusCode::CONFLICT,
            [(header::LOCATION, format!("/v1/jobs/{id}"))],
            Json(json!({ "error": e.to_string(), "job": id })),
        )
            .into_response(),
        Err(e @ StartError::Unsupported(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

pub(super) async fn job(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let found = id.parse::<u64>().ok().and_then(|n| s.jobs.get(n));
    match found {
        Some(doc) => Json(doc).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "there is no job {id:?} on this Courier: job ids are numbers, and only the last {} finished jobs are kept (GET /v1/jobs lists them)",
                crate::jobs::KEPT
            ),
        ),
    }
}

pub(super) async fn list(State(s): State<AppState>) -> Json<Value> {
    Json(json!({ "jobs": s.jobs.list() }))
}

/// The request's options: the query's, with the JSON body's over them.
fn options<T: serde::de::DeserializeOwned>(
    kind: Kind,
    query: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<T, String> {
    let allowed = match kind {
        Kind::Verify => "tables (a list), repair (true or false) and timeout (e.g. \"2m\")",
        Kind::Rebuild => "tables (a list) and grace (e.g. \"30s\")",
    };
    let mut fields = Map::new();
    for (key, value) in query {
        let value = match key.as_str() {
            "tables" => Value::from(
                (value.split(','))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>(),
            ),
            "repair" => match value.as_str() {
                "" | "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => {
                    return Err(format!(
                        "repair={value:?}: write repair=true or repair=false"
                    ))
                }
            },
            _ => Value::String(value.clone()),
        };
        fields.insert(key.clone(), value);
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(given)) => fields.extend(given),
            Ok(_) | Err(_) => {
                return Err(format!(
                    "the request body is not a JSON object: send {{}} or nothing, or a {kind} job's options, {allowed}"
                ))
            }
        }
    }
    serde_json::from_value(Value::Object(fields))
        .map_err(|e| format!("{e}: a {kind} job takes {allowed}"))
}

fn duration(key: &str, given: Option<&str>, default: Duration) -> Result<Duration, String> {
    match given {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|e| format!("{key}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_come_from_the_query_and_the_body_over_it() {
        let q = query(&[("tables", "a, public.b,"), ("repair", "true")]);
        let o: VerifyOptions = options(Kind::Verify, &q, b"").unwrap();
        assert_eq!(
            (o.tables, o.repair),
            (vec!["a".into(), "public.b".into()], true)
        );
        let o: VerifyOptions =
            options(Kind::Verify, &q, br#"{"repair": false, "timeout": "2m"}"#).unwrap();
        assert_eq!((o.repair, o.timeout.as_deref()), (false, Some("2m")));
        let o: RebuildOptions = options(Kind::Rebuild, &query(&[]), b" \n").unwrap();
        assert!(o.tables.is_empty() && o.grace.is_none());
    }

    #[test]
    fn options_a_job_does_not_take_are_named() {
        let e = options::<RebuildOptions>(Kind::Rebuild, &query(&[("repair", "1")]), b"")
            .err()
            .unwrap();
        assert!(e.contains("repair") && e.contains("grace"), "{e}");
        let e = options::<VerifyOptions>(Kind::Verify, &query(&[("repair", "yes")]), b"")
            .err()
            .unwrap();
        assert!(e.contains("repair=true"), "{e}");
        let e = options::<VerifyOptions>(Kind::Verify, &query(&[]), b"[1]")
            .err()
            .unwrap();
        assert!(e.contains("JSON object"), "{e}");
        assert!(duration("grace", Some("soon"), REBUILD_GRACE)
            .unwrap_err()
            .contains("grace"));
    }
}
