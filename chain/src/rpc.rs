//! A small JSON-RPC 2.0 client for the ERC-4337 services (bundler, gas manager). Each call is
//! logged at debug with its id, method and outcome under the service's log target.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use attestmesh_types::jsonrpc::{ErrorObject, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;
use url::Url;

use crate::targets::RPC;

/// How long one call may take before it counts as a transport failure.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON-RPC call that failed, naming the service, method and endpoint.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No answer: connection refused, reset or timed out.
    #[error(
        "{service} {method} at {url}: no answer ({source}); is the {service} running and reachable?"
    )]
    Transport {
        service: &'static str,
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP error status instead of a JSON-RPC reply.
    #[error("{service} {method} at {url}: HTTP {status}: {body}")]
    Http {
        service: &'static str,
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    /// A JSON-RPC error reply.
    #[error("{service} {method} at {url} answered error {}: {}{}", error.code, error.message, data_suffix(&error.data))]
    Rpc {
        service: &'static str,
        method: String,
        url: String,
        error: ErrorObject,
    },
    /// A reply that is not the JSON-RPC shape or not the expected result type.
    #[error("{service} {method} at {url}: malformed reply: {detail}")]
    Malformed {
        service: &'static str,
        method: String,
        url: String,
        detail: String,
    },
}

fn data_suffix(data: &Option<serde_json::Value>) -> String {
    match data {
        Some(data) => format!(" (data: {data})"),
        None => String::new(),
    }
}

impl RpcError {
    /// Worth retrying: the service did not answer, or answered 429/5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            RpcError::Transport { .. } => true,
            RpcError::Http { status, .. } => *status == 429 || *status >= 500,
            RpcError::Rpc { .. } | RpcError::Malformed { .. } => false,
        }
    }

    /// The JSON-RPC error object, when the service answered with one.
    pub fn rpc_error(&self) -> Option<&ErrorObject> {
        match self {
            RpcError::Rpc { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Client of one JSON-RPC service.
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    url: Url,
    service: &'static str,
    next_id: Arc<AtomicU64>,
}

impl RpcClient {
    /// `service` names the peer in errors and logs ("bundler", "gas manager").
    pub fn new(service: &'static str, url: Url) -> Result<Self, crate::ChainError> {
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_RPC_TIMEOUT)
            .build()
            .map_err(|e| {
                crate::ChainError::Config(format!(
                    "cannot build the HTTP client for the {service}: {e}"
                ))
            })?;
        Ok(Self {
            http,
            url,
            service,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The service's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Calls `method` with `params` and decodes the result as `R` (use `Option<T>` where the
    /// service may answer `null`).
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: P,
    ) -> Result<R, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let malformed = |detail: String| RpcError::Malformed {
            service: self.service,
            method: method.to_string(),
            url: self.url.to_string(),
            detail,
        };
        let params = match serde_json::to_value(params)
            .map_err(|e| malformed(format!("cannot encode params: {e}")))?
        {
            // JSON-RPC 2.0 params are an array or an object, never null; @pimlico/alto rejects
            // `"params": null`, which is what `()` encodes to.
            serde_json::Value::Null => serde_json::Value::Array(Vec::new()),
            params => params,
        };
        let request = Request::new(id, method, params);
        let started = Instant::now();
        debug!(target: RPC, service = self.service, id, method, url = %self.url, "request");

        let reply = self.http.post(self.url.clone()).json(&request).send().await.map_err(|source| {
            debug!(target: RPC, service = self.service, id, method, error = %source, "no answer");
            RpcError::Transport { service: self.service, method: method.to_string(), url: self.url.to_string(), source }
        })?;
        let status = reply.status();
        let body = reply.text().await.map_err(|source| RpcError::Transport {
            service: self.service,
            method: method.to_string(),
            url: self.url.to_string(),
            source,
        })?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let response: Response = match serde_json::from_str(&body) {
            Ok(response) => response,
            Err(e) if !status.is_success() => {
                debug!(target: RPC, service = self.service, id, method, status = status.as_u16(), elapsed_ms, "HTTP error");
                return Err(RpcError::Http {
                    service: self.service,
                    method: method.to_string(),
                    url: self.url.to_string(),
                    status: status.as_u16(),
                    body: truncate(&body, 300) + &format!(" ({e})"),
                });
            }
            Err(e) => {
                return Err(malformed(format!(
                    "not a JSON-RPC response ({e}): {}",
                    truncate(&body, 300)
                )));
            }
        };
        if let Some(error) = response.error {
            debug!(target: RPC, service = self.service, id, method, code = error.code, message = %error.message, elapsed_ms, "error reply");
            return Err(RpcError::Rpc {
                service: self.service,
                method: method.to_string(),
                url: self.url.to_string(),
                error,
            });
        }
        debug!(target: RPC, service = self.service, id, method, elapsed_ms, "result");
        let result = response.result.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(result.clone()).map_err(|e| {
            malformed(format!(
                "unexpected result ({e}): {}",
                truncate(&result.to_string(), 300)
            ))
        })
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
