//! How a failure to reach a store is classified and described: the network
//! and local I/O errors every sink meets, as a [`SinkErrorKind`] and a few
//! words ("connection refused", "host name not resolved", ...).

use std::io;

use courier_core::SinkErrorKind;

/// The kind of a local or network I/O error, and its reason in words.
pub(crate) fn of_io(e: &io::Error) -> (SinkErrorKind, String) {
    use io::ErrorKind as K;
    let reason = |words: &str| words.to_string();
    match e.kind() {
        K::ConnectionRefused => (SinkErrorKind::Unreachable, reason("connection refused")),
        K::ConnectionReset => (SinkErrorKind::Unreachable, reason("connection reset")),
        K::ConnectionAborted => (SinkErrorKind::Unreachable, reason("connection aborted")),
        K::NotConnected | K::BrokenPipe | K::UnexpectedEof => {
            (SinkErrorKind::Unreachable, reason("connection lost"))
        }
        K::AddrNotAvailable => (SinkErrorKind::Unreachable, reason("address not available")),
        K::TimedOut | K::WouldBlock => (SinkErrorKind::TimedOut, reason("no answer in time")),
        K::PermissionDenied => (SinkErrorKind::Config, e.to_string()),
        _ => (SinkErrorKind::Io, e.to_string()),
    }
}

/// The kind of a failed network exchange whose cause is somewhere in
/// `e`'s source chain, and its reason in words: the first I/O error of the
/// chain decides, a failed name look-up is unreachable, anything else is
/// `otherwise` with the innermost error's text.
pub(crate) fn of_network(
    e: &(dyn std::error::Error + 'static),
    otherwise: SinkErrorKind,
) -> (SinkErrorKind, String) {
    let mut innermost = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            let (kind, reason) = of_io(io);
            if kind != SinkErrorKind::Io {
                return (kind, reason);
            }
        }
        let text = err.to_string();
        if text == "dns error" || text.starts_with("failed to lookup address") {
            let detail = err.source().map(|s| s.to_string()).unwrap_or_default();
            return (
                SinkErrorKind::Unreachable,
                format!("host name not resolved: {}", detail.trim()),
            );
        }
        innermost = text;
        cur = err.source();
    }
    (otherwise, innermost)
}

/// The kind of a failed HTTP request that got no answer.
#[cfg(any(feature = "clickhouse", feature = "search"))]
pub(crate) fn of_reqwest(e: &reqwest::Error) -> (SinkErrorKind, String) {
    if e.is_timeout() {
        return (SinkErrorKind::TimedOut, "no answer in time".into());
    }
    of_network(e, SinkErrorKind::Unreachable)
}

/// The kind of an HTTP status a store answered with, when the store's own
/// error says no more: 429 overloaded, 504 timed out, other 5xx
/// unavailable, 401/403 configuration, other 4xx rejected.
#[cfg(any(feature = "clickhouse", feature = "search"))]
pub(crate) fn of_status(status: u16) -> SinkErrorKind {
    match status {
        429 => SinkErrorKind::Overloaded,
        504 => SinkErrorKind::TimedOut,
        500..=599 => SinkErrorKind::Unavailable,
        401 | 403 => SinkErrorKind::Config,
        _ => SinkErrorKind::Rejected,
    }
}

/// `host:port` of a URL, for messages (never its user or password).
pub(crate) fn address(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_network_errors_by_cause() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(of_io(&refused).0, SinkErrorKind::Unreachable);
        assert_eq!(of_io(&refused).1, "connection refused");
        let full = io::Error::from_raw_os_error(28);
        assert_eq!(of_io(&full).0, SinkErrorKind::Io);
        assert_eq!(
            of_io(&io::Error::from(io::ErrorKind::TimedOut)).0,
            SinkErrorKind::TimedOut
        );
        assert_eq!(
            address("redis://:secret@127.0.0.1:6379/0"),
            "127.0.0.1:6379"
        );
        assert_eq!(address("http://h:9200"), "h:9200");
        assert_eq!(address("https://u:p@h/x?y"), "h");
    }
}
