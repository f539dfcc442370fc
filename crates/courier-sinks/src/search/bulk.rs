//! Sending items through `_bulk` until each is applied or rejected: the
//! item-level results are read, and only the items the server could not
//! take yet (429, `es_rejected_execution_exception`: overloaded; 5xx:
//! unavailable) are sent again, with exponential backoff and jitter. A
//! request that gets no answer at all (the server is unreachable or timed
//! out) fails at once, as what it is: Courier retries the batch.

use std::time::{Duration, Instant};

use courier_core::{SinkError, SinkErrorKind};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::Value as Json;

use super::client::{error_text, Client};
use super::encode::Item;

/// An item the server rejected for its content (mapping conflict, too large,
/// ...): retrying cannot help.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// Index into the items given to [`send_items`].
    pub index: usize,
    pub status: u16,
    /// The server's `type: reason`, which may quote a value of the row.
    pub reason: String,
    pub error_type: String,
}

/// Limits of one `send_items` call.
pub(crate) struct Limits {
    pub batch_size: usize,
    pub batch_bytes: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// How long overloaded items are retried before giving up with a
    /// retriable error (Courier then retries the batch).
    pub retry_for: Duration,
    /// The sink's name, for its metrics.
    pub sink: String,
}

/// Sends every item; returns the rejected ones. An error means some item
/// is neither applied nor rejected: a request got no answer (unreachable,
/// timed out), failed for a reason retrying cannot fix, or items stayed
/// overloaded or unavailable for `retry_for`; the error's kind says which.
///
/// Up to `concurrency` requests are in flight at once. That is safe for
/// order because the items name distinct documents (the caller keeps one
/// change per document) and every write carries its version.
pub(crate) async fn send_items(
    client: &Client,
    items: &[Item<'_>],
    limits: &Limits,
) -> Result<Vec<Rejected>, SinkError> {
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut rejected = Vec::new();
    let mut attempt = 0u32;
    let mut jitter = Jitter::new();
    while !pending.is_empty() {
        let mut again = Vec::new();
        // Why the items of `again` were not taken, the latest reason.
        let mut last = (SinkErrorKind::Overloaded, String::new());
        let mut requests = requests(items, &pending, limits).into_iter();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < limits.concurrency.max(1) {
                let Some((chunk, body)) = requests.next() else {
                    break;
                };
                in_flight.push(async move { (chunk, client.bulk(body).await) });
            }
            let Some((chunk, resp)) = in_flight.next().await else {
                break;
            };
            let resp = match resp {
                Ok(r) => r,
                // The server answered but cannot take the request yet.
                Err(e)
                    if matches!(
                        e.kind(),
                        SinkErrorKind::Overloaded | SinkErrorKind::Unavailable
                    ) =>
                {
                    last = (e.kind(), e.to_string());
                    again.extend_from_slice(&chunk);
                    continue;
                }
                Err(e) => {
                    let first = &items[chunk[0]];
                    return Err(
                        SinkError::new(e.kind(), format!("search: bulk request: {e}"))
                            .with_table(&first.change.relation().id)
                            .with_lsn(first.change.version()),
                    );
                }
            };
            let results = resp.get("items").and_then(Json::as_array);
            let results = match results {
                Some(r) if r.len() == chunk.len() => r,
                _ => {
                    return Err(SinkError::new(SinkErrorKind::Unavailable, format!(
                        "search: search server {} unavailable (its bulk response lists {} items for {} sent)",
                        client.server(),
                        results.map_or(0, Vec::len),
                        chunk.len()
                    )))
                }
            };
            for (&i, result) in chunk.iter().zip(results) {
                match classify(result) {
                    Verdict::Applied => {}
                    Verdict::NotYet(kind, reason) => {
                        last = (kind, reason);
                        again.push(i);
                    }
                    Verdict::Rejected {
                        status,
                        reason,
                        error_type,
                    } => rejected.push(Rejected {
                        index: i,
                        status,
                        reason,
                        error_type,
                    }),
                }
            }
        }
        if again.is_empty() {
            break;
        }
        metrics::counter!("courier_sink_retried_items_total", "sink" => limits.sink.clone())
            .increment(again.len() as u64);
        let (kind, reason) = &last;
        if started.elapsed() >= limits.retry_for {
            let first = &items[again[0]];
            return Err(SinkError::new(*kind, format!(
                "search: search server {} {kind}: {} documents still not accepted after retrying for {:?} ({reason})",
                client.server(),
                again.len(),
                limits.retry_for
            ))
            .with_table(&first.change.relation().id)
            .with_lsn(first.change.version()));
        }
        tracing::debug!(
            items = again.len(),
            attempt,
            "search server {} {kind}; retrying the items it did not take",
            client.server()
        );
        if attempt == 3 {
            tracing::warn!(sink = %limits.sink, items = again.len(), %reason,
                "search server {} {kind}: it keeps refusing documents; still retrying", client.server());
        }
        tokio::time::sleep(jitter.backoff(attempt)).await;
        // Back off further only while nothing gets through: a round that
        // applied items starts the next one from a short wait again.
        let progressed = again.len() < pending.len();
        attempt = if progressed { 0 } else { attempt + 1 };
        // Stream order, so that the requests of the next round are cut the
        // same way whatever order the responses came back in.
        again.sort_unstable();
        pending = again;
    }
    Ok(rejected)
}

/// The pending items as `_bulk` requests of at most `batch_size` items and
/// about `batch_bytes` bytes: each request's items and its NDJSON body.
/// Requests come in whole rounds of `concurrency` requests of about equal
/// size, so that no round ends with one small request sent alone.
fn requests(items: &[Item<'_>], pending: &[usize], limits: &Limits) -> Vec<(Vec<usize>, Vec<u8>)> {
    let per_request = even_share(pending.len(), limits.batch_size, limits.concurrency);
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut body = Vec::new();
    for &i in pending {
        let start = body.len();
        items[i].write(&mut body);
        if !chunk.is_empty() && (chunk.len() >= per_request || body.len() > limits.batch_bytes) {
            let next = body.split_off(start);
            out.push((
                std::mem::take(&mut chunk),
                std::mem::replace(&mut body, next),
            ));
        }
        chunk.push(i);
    }
    if !chunk.is_empty() {
        out.push((chunk, body));
    }
    out
}

/// Items per request when `n` items go out in requests of at most `max`
/// items, as a whole number of rounds of `concurrency` requests.
fn even_share(n: usize, max: usize, concurrency: usize) -> usize {
    let max = max.max(1);
    let concurrency = concurrency.max(1);
    let requests = n.div_ceil(max).div_ceil(concurrency) * concurrency;
    n.div_ceil(requests.max(1)).max(1)
}

enum Verdict {
    Applied,
    /// Not taken yet, for overload or unavailability: send it again.
    NotYet(SinkErrorKind, String),
    Rejected {
        status: u16,
        reason: String,
        error_type: String,
    },
}

/// One item of a bulk response: `{"index": {"status": 201, ...}}`.
fn classify(result: &Json) -> Verdict {
    let Some(body) = result.as_object().and_then(|o| o.values().next()) else {
        return Verdict::NotYet(
            SinkErrorKind::Unavailable,
            "an unreadable item in the bulk response".into(),
        );
    };
    let status = body.get("status").and_then(Json::as_u64).unwrap_or(0) as u16;
    let error = body.get("error");
    let error_type = error
        .and_then(|e| e.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    match status {
        // 409: the stored version is newer; 404: a delete of a missing
        // document, which still leaves its versioned tombstone.
        200..=299 | 409 | 404 if error_type != "index_not_found_exception" => Verdict::Applied,
        429 => Verdict::NotYet(
            SinkErrorKind::Overloaded,
            error.map(error_text).unwrap_or_default(),
        ),
        // Elasticsearch's name for a full queue, and OpenSearch's.
        _ if matches!(
            error_type.as_str(),
            "es_rejected_execution_exception" | "rejected_execution_exception"
        ) =>
        {
            Verdict::NotYet(
                SinkErrorKind::Overloaded,
                error.map(error_text).unwrap_or_default(),
            )
        }
        // A shard not ready, a node leaving: unavailable, not overloaded.
        500..=599 => Verdict::NotYet(
            SinkErrorKind::Unavailable,
            error
                .map(error_text)
                .unwrap_or_else(|| format!("HTTP {status}")),
        ),
        _ => Verdict::Rejected {
            status,
            reason: error
                .map(error_text)
                .unwrap_or_else(|| format!("HTTP {status}")),
            error_type,
        },
    }
}

/// Exponential backoff with full jitter, from a small generator seeded by
/// the clock (no need for cryptographic randomness here).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Jitter(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Between half and all of `min(50 ms × 2^attempt, 5 s)`.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let cap = (50u64 << attempt.min(7)).min(5_000);
        Duration::from_millis(cap / 2 + self.next() % (cap / 2 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_item_results() {
        assert!(matches!(
            classify(&json!({"index": {"status": 201}})),
            Verdict::Applied
        ));
        assert!(matches!(
            classify(
                &json!({"index": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}})
            ),
            Verdict::Applied
        ));
        assert!(matches!(
            classify(&json!({"delete": {"status": 404, "result": "not_found"}})),
            Verdict::Applied
        ));
        assert!(matches!(
            classify(
                &json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}})
            ),
            Verdict::NotYet(SinkErrorKind::Overloaded, _)
        ));
        assert!(matches!(
            classify(
                &json!({"index": {"status": 400, "error": {"type": "rejected_execution_exception"}}})
            ),
            Verdict::NotYet(SinkErrorKind::Overloaded, _)
        ));
        assert!(matches!(
            classify(&json!({"index": {"status": 503}})),
            Verdict::NotYet(SinkErrorKind::Unavailable, _)
        ));
        match classify(
            &json!({"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad"}}}),
        ) {
            Verdict::Rejected {
                status, error_type, ..
            } => {
                assert_eq!(
                    (status, error_type.as_str()),
                    (400, "mapper_parsing_exception")
                )
            }
            _ => panic!("a mapping error is a rejection"),
        }
        assert!(matches!(
            classify(
                &json!({"index": {"status": 404, "error": {"type": "index_not_found_exception"}}})
            ),
            Verdict::Rejected { .. }
        ));
    }

    #[test]
    fn requests_come_in_even_rounds() {
        // 8,192 items, 1,000 per request, 2 at a time: 10 requests of 820
        // (the last 812), not 8 of 1,000 and a lone 192.
        assert_eq!(even_share(8192, 1000, 2), 820);
        assert_eq!(even_share(2000, 1000, 2), 1000);
        assert_eq!(even_share(10, 1000, 2), 5);
        assert_eq!(even_share(1, 1000, 4), 1);
        assert_eq!(even_share(0, 1000, 2), 1);
        assert_eq!(even_share(5000, 1000, 1), 1000);
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let mut j = Jitter::new();
        for attempt in 0..20 {
            let d = j.backoff(attempt);
            assert!(d <= Duration::from_secs(5), "{d:?}");
            assert!(d >= Duration::from_millis(25), "{d:?}");
        }
    }
}
