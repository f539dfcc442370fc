//! Parsers shared by the sinks' settings: URLs with credentials and
//! durations.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

// Only the sinks with URLs use it.
#[cfg_attr(
    not(any(feature = "clickhouse", feature = "search", feature = "redis")),
    allow(dead_code)
)]
/// The URL with its password replaced by `***`, safe to show in messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

// Only the sinks with URLs use it.
#[cfg_attr(
    not(any(feature = "clickhouse", feature = "search", feature = "redis")),
    allow(dead_code)
)]
/// Decodes `%XX` escapes (as in a URL's user and password).
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Deserialises an optional duration: `"500ms"`, `"30s"`, `"2m"`, `"1h"`,
/// `"1d"`, or a number of seconds. For `#[serde(deserialize_with = ...)]`.
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(
                "a duration such as \"500ms\", \"30s\", \"2m\", \"1h\", or a number of seconds",
            )
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_secs(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(|v| Some(Duration::from_secs(v)))
                .map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_duration(v).map(Some).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

/// Parses `"500ms"`, `"30s"`, `"2m"`, `"1h"`, `"1d"` or a bare number of seconds.
pub(crate) fn parse_duration(v: &str) -> Result<Duration, String> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid duration {v:?}: expected e.g. \"30s\", \"5m\", \"1h\"");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = |k: u64| Duration::from_secs(n.saturating_mul(k));
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(secs(1)),
        "m" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86_400)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_and_decodes_credentials() {
        assert_eq!(
            redact_url("http://bob:s%40cret@h:1/x"),
            "http://bob:***@h:1/x"
        );
        assert_eq!(redact_url("http://h:1"), "http://h:1");
        assert_eq!(percent_decode("s%40cret%2"), b"s@cret%2");
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("2 weeks").is_err());
    }
}
