//! Which search server the sink talks to, read from `GET /` at start.

use std::fmt;

/// The server's product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Elasticsearch,
    OpenSearch,
}

/// The server's flavour and version, which decide request shapes and the
/// field types available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    pub flavour: Flavour,
    pub major: u32,
    pub minor: u32,
}

impl Server {
    /// Reads the answer of `GET /`; `None` when it is not a search server's.
    pub fn parse_root(root: &serde_json::Value) -> Option<Server> {
        let version = root.get("version")?;
        let number = version.get("number")?.as_str()?;
        let mut parts = number.split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        let flavour = match version.get("distribution").and_then(|d| d.as_str()) {
            Some("opensearch") => Flavour::OpenSearch,
            _ => Flavour::Elasticsearch,
        };
        Some(Server {
            flavour,
            major,
            minor,
        })
    }

    /// Whether Courier knows this server's request shapes: Elasticsearch
    /// 7 to 9, OpenSearch 1 to 3.
    pub fn supported(&self) -> bool {
        match self.flavour {
            Flavour::Elasticsearch => (7..=9).contains(&self.major),
            Flavour::OpenSearch => (1..=3).contains(&self.major),
        }
    }

    /// The field type that indexes a JSON object's leaves as keywords without
    /// a field per key, if the server has one.
    pub fn flat_json_type(&self) -> Option<&'static str> {
        match self.flavour {
            Flavour::OpenSearch if (self.major, self.minor) >= (2, 7) => Some("flat_object"),
            Flavour::Elasticsearch if (self.major, self.minor) >= (7, 3) => Some("flattened"),
            _ => None,
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.flavour {
            Flavour::Elasticsearch => "Elasticsearch",
            Flavour::OpenSearch => "OpenSearch",
        };
        write!(f, "{name} {}.{}", self.major, self.minor)
    }
}
