//! Which search server the sink talks to, read at start from `GET /` (or
//! `GET /_nodes/_local` when the node has no root endpoint).

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
    /// Reads the answer of `GET /`; `None` when it is not a search server's,
    /// or does not tell which one: Elasticsearch names its `build_flavor`,
    /// OpenSearch its `distribution`, except when OpenSearch 1 or 2 answers
    /// as Elasticsearch 7.10.2 for older clients
    /// (`compatibility.override_main_response_version`), with neither.
    pub fn parse_root(root: &serde_json::Value) -> Option<Server> {
        let version = root.get("version")?;
        let number = version.get("number")?.as_str()?;
        let mut parts = number.split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
        let flavour = match version.get("distribution").and_then(|d| d.as_str()) {
            Some("opensearch") => Flavour::OpenSearch,
            Some("elasticsearch") => Flavour::Elasticsearch,
            _ if version.get("build_flavor").is_some() => Flavour::Elasticsearch,
            _ => return None,
        };
        Some(Server {
            flavour,
            major,
            minor,
        })
    }

    /// Reads the answer of `GET /_nodes/_local`: the first node's version,
    /// Elasticsearch when it names a `build_flavor` (OpenSearch dropped the
    /// field); `None` when it is not a search server's.
    pub fn parse_nodes(nodes: &serde_json::Value) -> Option<Server> {
        let (_, node) = nodes.get("nodes")?.as_object()?.iter().next()?;
        let number = node.get("version")?.as_str()?;
        let distribution = match node.get("build_flavor") {
            Some(_) => "elasticsearch",
            None => "opensearch",
        };
        Server::parse_root(
            &serde_json::json!({"version": {"number": number, "distribution": distribution}}),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_opensearch_node_answering_as_elasticsearch_7_10_is_not_taken_for_it() {
        let compat = json!({"version": {"number": "7.10.2", "build_type": "zip"},
            "tagline": "The OpenSearch Project: https://opensearch.org/"});
        assert_eq!(Server::parse_root(&compat), None);
        let es = json!({"version": {"number": "7.10.2", "build_flavor": "oss"}});
        let es = Server::parse_root(&es).unwrap();
        assert_eq!((es.flavour, es.major), (Flavour::Elasticsearch, 7));
    }

    #[test]
    fn reads_the_node_info_when_the_root_endpoint_is_missing() {
        let es = json!({"nodes": {"a": {"version": "8.19.0", "build_flavor": "default"}}});
        let os = json!({"nodes": {"b": {"version": "2.19.6"}}});
        let es = Server::parse_nodes(&es).unwrap();
        let os = Server::parse_nodes(&os).unwrap();
        assert_eq!(
            (es.flavour, es.major, es.minor),
            (Flavour::Elasticsearch, 8, 19)
        );
        assert_eq!(
            (os.flavour, os.major, os.minor),
            (Flavour::OpenSearch, 2, 19)
        );
        assert_eq!(Server::parse_nodes(&json!({"nodes": {}})), None);
    }
}
