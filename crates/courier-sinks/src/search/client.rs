//! HTTP requests to the search server, with errors classed by whether a
//! retry can help.

use reqwest::{Method, StatusCode};
use serde_json::Value as Json;

use courier_core::SinkErrorKind;

use super::config::Settings;
use super::server::Server;
use crate::failure;

/// A request to the server at `server` (`host:port`) that failed, with the
/// method and path it was for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// No answer: connection refused or lost, host name not resolved, timeout.
    #[error("search server {server} {} ({}) on {method} {path}", failure::of_reqwest(.source).0, failure::of_reqwest(.source).1)]
    Transport {
        server: String,
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("search server {server} {} (HTTP {status} on {method} {path}: {reason})", self.kind())]
    Status {
        server: String,
        method: Method,
        path: String,
        status: u16,
        /// The server's `error.type: error.reason`.
        reason: String,
    },
    /// The server answered with a body that is not JSON.
    #[error(
        "search server {server} answered {method} {path} with a body that is not JSON: {source}"
    )]
    Body {
        server: String,
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl HttpError {
    /// What kind of failure this is: by the cause for no answer, by the
    /// status (429 overloaded, 5xx unavailable, 401/403 configuration,
    /// other 4xx rejected) for an error answer; a body that is not JSON
    /// means the URL does not point at a search server (configuration).
    pub fn kind(&self) -> SinkErrorKind {
        match self {
            HttpError::Transport { source, .. } => failure::of_reqwest(source).0,
            HttpError::Status { status, .. } => failure::of_status(*status),
            HttpError::Body { .. } => SinkErrorKind::Config,
        }
    }

    /// Whether the server refused a mapping because it has no field type
    /// `field_type` (`No handler for type [...]`).
    pub fn refuses_field_type(&self, field_type: &str) -> bool {
        match self {
            HttpError::Status {
                status: 400,
                reason,
                ..
            } => reason.contains(&format!("No handler for type [{field_type}]")),
            _ => false,
        }
    }
}

/// The server's error object as one line: `type: reason`.
pub(crate) fn error_text(error: &Json) -> String {
    match error {
        Json::Object(o) => {
            let t = o.get("type").and_then(Json::as_str).unwrap_or("error");
            let r = o.get("reason").and_then(Json::as_str).unwrap_or("");
            let mut text = format!("{t}: {r}");
            if let Some(cause) = o.get("caused_by") {
                text.push_str(" (caused by ");
                text.push_str(&error_text(cause));
                text.push(')');
            }
            text
        }
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A connection pool to one search server.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    /// `host:port` of `base`, for messages.
    server: String,
    auth: Option<String>,
}

impl Client {
    pub fn new(settings: &Settings) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(std::time::Duration::from_secs(10)))
            .build()?;
        Ok(Client {
            http,
            base: settings.base.clone(),
            server: failure::address(&settings.base).to_string(),
            auth: settings.auth.clone(),
        })
    }

    /// Sends a request; a status other than 2xx is an error unless listed
    /// in `ok`. Returns the status and the parsed body (`null` when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
        ok: &[u16],
    ) -> Result<(StatusCode, Json), HttpError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        if let Some((bytes, content_type)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        // Messages show the path without its query (the filter of `_bulk`).
        let path = path.split('?').next().unwrap_or(path);
        let transport = |source| HttpError::Transport {
            server: self.server.clone(),
            method: method.clone(),
            path: path.to_string(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        let json: Json = if bytes.is_empty() {
            Json::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(j) => j,
                Err(_) if !status.is_success() => {
                    Json::String(String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into())
                }
                Err(source) => {
                    return Err(HttpError::Body {
                        server: self.server.clone(),
                        method,
                        path: path.to_string(),
                        source,
                    })
                }
            }
        };
        if status.is_success() || ok.contains(&status.as_u16()) {
            return Ok((status, json));
        }
        let reason = match json.get("error") {
            Some(e) => error_text(e),
            None => json.to_string(),
        };
        Err(HttpError::Status {
            server: self.server.clone(),
            method,
            path: path.to_string(),
            status: status.as_u16(),
            reason,
        })
    }

    /// `host:port` of the server, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET` returning the body.
    pub async fn get(&self, path: &str, ok: &[u16]) -> Result<(StatusCode, Json), HttpError> {
        self.send(Method::GET, path, None, ok).await
    }

    /// A request with a JSON body.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: &Json,
        ok: &[u16],
    ) -> Result<(StatusCode, Json), HttpError> {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.send(method, path, Some((bytes, "application/json")), ok)
            .await
    }

    /// Starts a scroll over what `index` (an index or an alias) holds, with
    /// the search `body` (its `size` is the page size); `None` when the
    /// index does not exist. Sees what the last refresh made searchable.
    pub async fn scroll(&self, index: &str, body: &Json) -> Result<Option<Scroll<'_>>, HttpError> {
        let (status, first) = self
            .json(
                Method::POST,
                &format!("/{index}/_search?scroll={SCROLL_KEEP}"),
                body,
                &[404],
            )
            .await?;
        if status.as_u16() == 404 {
            return Ok(None);
        }
        Ok(Some(Scroll {
            client: self,
            id: None,
            next: Some(first),
        }))
    }

    /// `POST /_bulk` with an NDJSON body; the response lists every item.
    pub async fn bulk(&self, body: Vec<u8>) -> Result<Json, HttpError> {
        let (_, json) = self
            .send(
                Method::POST,
                // Only what is needed to classify each item: a smaller
                // response for the server to write and for Courier to read.
                "/_bulk?filter_path=errors,items.*.status,items.*.error",
                Some((body, "application/x-ndjson")),
                &[],
            )
            .await?;
        Ok(json)
    }

    /// The server's flavour and version: from `GET /`, else from the node
    /// answering `GET /_nodes/_local` (Elasticsearch 8 serves `GET /` from
    /// its `rest-root` module, which a cluster may lack).
    pub async fn detect(&self) -> Result<Option<Server>, HttpError> {
        let (status, root) = self.get("/", &[404, 405]).await?;
        if status.is_success() {
            if let Some(server) = Server::parse_root(&root) {
                return Ok(Some(server));
            }
        }
        let (status, nodes) = self
            .get(
                "/_nodes/_local?filter_path=nodes.*.version,nodes.*.build_flavor",
                &[404, 405],
            )
            .await?;
        Ok(match status.is_success() {
            true => Server::parse_nodes(&nodes),
            false => None,
        })
    }
}

/// How long the server keeps a scroll's context between pages.
const SCROLL_KEEP: &str = "2m";

/// A scroll in progress ([`Client::scroll`]).
pub(crate) struct Scroll<'a> {
    client: &'a Client,
    id: Option<String>,
    /// The response not yet handed out.
    next: Option<Json>,
}

impl Scroll<'_> {
    /// The next page of hits; empty once every document was seen.
    pub async fn page(&mut self) -> Result<Vec<Json>, HttpError> {
        let resp = match self.next.take() {
            Some(r) => r,
            None => {
                let Some(id) = &self.id else {
                    return Ok(Vec::new());
                };
                let body = serde_json::json!({"scroll": SCROLL_KEEP, "scroll_id": id});
                self.client
                    .json(Method::POST, "/_search/scroll", &body, &[])
                    .await?
                    .1
            }
        };
        if let Some(id) = resp.get("_scroll_id").and_then(Json::as_str) {
            self.id = Some(id.to_string());
        }
        Ok(resp
            .pointer("/hits/hits")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Frees the server's scroll context early; it would expire anyway.
    pub async fn close(self) {
        if let Some(id) = self.id {
            let body = serde_json::json!({"scroll_id": [id]});
            let _ = self
                .client
                .json(Method::DELETE, "/_search/scroll", &body, &[404])
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_an_unknown_field_type_from_other_refusals() {
        // Elasticsearch 7.10 without the module that provides `flattened`.
        let body = serde_json::json!({
            "type": "mapper_parsing_exception",
            "reason": "Failed to parse mapping [_doc]: No handler for type [flattened] declared on field [d]",
        });
        let refused = |status| HttpError::Status {
            server: "127.0.0.1:9200".into(),
            method: Method::PUT,
            path: "/t_v1".into(),
            status,
            reason: error_text(&body),
        };
        assert!(refused(400).refuses_field_type("flattened"));
        assert_eq!(refused(400).kind(), SinkErrorKind::Rejected);
        assert_eq!(refused(429).kind(), SinkErrorKind::Overloaded);
        assert_eq!(refused(503).kind(), SinkErrorKind::Unavailable);
        assert_eq!(refused(401).kind(), SinkErrorKind::Config);
        let text = refused(429).to_string();
        assert!(
            text.starts_with("search server 127.0.0.1:9200 overloaded (HTTP 429 on PUT /t_v1:"),
            "{text}"
        );
        assert!(!refused(400).refuses_field_type("flat_object"));
        assert!(!refused(500).refuses_field_type("flattened"));
    }
}
