//! A small JSON-RPC 2.0 client for the ERC-4337 services (bundler, gas manager). Each call is
//! logged at debug with its id, method and outcome under the service's log target. Also the HTTP
//! transport the chain client's provider runs on ([`RedactedHttp`]).
//!
//! Their URLs carry API keys: errors and logs name an endpoint by scheme, host and port only
//! ([`crate::redact`]), never by its URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut, TransportResult};
use attestmesh_types::jsonrpc::{ErrorObject, Request, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;
use url::Url;

use crate::redact;
use crate::targets::RPC;

/// How long one call may take before it counts as a transport failure.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON-RPC call that failed, naming the service, method and endpoint. `url` is the endpoint
/// with its credentials removed ([`crate::redact::url`]); nothing in it quotes the full URL.
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

/// Client of one JSON-RPC service. (Its `Debug` shows the endpoint, never the URL.)
#[derive(Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    url: Url,
    /// `url` without credentials, for errors and logs.
    endpoint: String,
    service: &'static str,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("service", &self.service)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// `service` names the peer in errors and logs ("bundler", "gas manager").
    pub fn new(service: &'static str, url: Url) -> Result<Self, crate::ChainError> {
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_RPC_TIMEOUT)
            .build()
            .map_err(|e| {
                crate::ChainError::Config(format!(
                    "cannot build the HTTP client for the {service}: {}",
                    redact::reqwest_error(e)
                ))
            })?;
        Ok(Self {
            http,
            endpoint: redact::url(&url),
            url,
            service,
            next_id: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The service's URL, credentials included: never log or show it (use [`Self::endpoint`]).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The service's endpoint without credentials (safe to log and show).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
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
            url: self.endpoint.clone(),
            detail: redact::secrets_of(&detail, &self.url),
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
        debug!(target: RPC, service = self.service, id, method, endpoint = %self.endpoint, "request");

        let reply = self.http.post(self.url.clone()).json(&request).send().await.map_err(|source| {
            let source = redact::reqwest_error(source);
            debug!(target: RPC, service = self.service, id, method, error = %source, "no answer");
            RpcError::Transport { service: self.service, method: method.to_string(), url: self.endpoint.clone(), source }
        })?;
        let status = reply.status();
        let body = reply.text().await.map_err(|source| RpcError::Transport {
            service: self.service,
            method: method.to_string(),
            url: self.endpoint.clone(),
            source: redact::reqwest_error(source),
        })?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let response: Response = match serde_json::from_str(&body) {
            Ok(response) => response,
            Err(e) if !status.is_success() => {
                debug!(target: RPC, service = self.service, id, method, status = status.as_u16(), elapsed_ms, "HTTP error");
                return Err(RpcError::Http {
                    service: self.service,
                    method: method.to_string(),
                    url: self.endpoint.clone(),
                    status: status.as_u16(),
                    body: redact::secrets_of(&truncate(&body, 300), &self.url) + &format!(" ({e})"),
                });
            }
            Err(e) => {
                return Err(malformed(format!(
                    "not a JSON-RPC response ({e}): {}",
                    truncate(&body, 300)
                )));
            }
        };
        if let Some(mut error) = response.error {
            // A provider may quote the URL it was called at (key included) in its message.
            error.message = redact::secrets_of(&error.message, &self.url);
            debug!(target: RPC, service = self.service, id, method, code = error.code, message = %error.message, elapsed_ms, "error reply");
            return Err(RpcError::Rpc {
                service: self.service,
                method: method.to_string(),
                url: self.endpoint.clone(),
                error,
            });
        }
        // A reply with neither `result` nor `error` answers nothing: reading it as `null` made a
        // broken bundler look like "no receipt yet" until the wait timed out.
        let Some(result) = response.result else {
            debug!(target: RPC, service = self.service, id, method, elapsed_ms, "reply without result or error");
            return Err(malformed(format!(
                "the reply has neither a result nor an error: {}",
                truncate(&body, 300)
            )));
        };
        debug!(target: RPC, service = self.service, id, method, elapsed_ms, "result");
        serde_json::from_value(result.clone()).map_err(|e| {
            malformed(format!(
                "unexpected result ({e}): {}",
                truncate(&result.to_string(), 300)
            ))
        })
    }
}

/// The HTTP transport of the chain client's provider: alloy's reqwest transport, less the URL.
/// alloy's own puts the full URL (key included) in a debug span around every request and keeps
/// it in reqwest's errors, whose `Display` says "error sending request for url (…/v2/KEY)"; an
/// error of this one names nothing but what failed, and the caller adds the redacted endpoint.
#[derive(Clone)]
pub(crate) struct RedactedHttp {
    client: reqwest::Client,
    url: Url,
}

impl std::fmt::Debug for RedactedHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactedHttp")
            .field("endpoint", &redact::url(&self.url))
            .finish_non_exhaustive()
    }
}

impl RedactedHttp {
    /// `client` posts every request to `url`.
    pub(crate) fn new(client: reqwest::Client, url: Url) -> Self {
        Self { client, url }
    }

    /// An alloy RPC client on this transport.
    pub(crate) fn rpc_client(self) -> alloy::rpc::client::RpcClient {
        let is_local = alloy::transports::utils::guess_local_url(self.url.as_str());
        alloy::rpc::client::RpcClient::new(self, is_local)
    }

    async fn send(self, request: RequestPacket) -> TransportResult<ResponsePacket> {
        let reply = self
            .client
            .post(self.url.clone())
            .json(&request)
            .headers(request.headers())
            .send()
            .await
            .map_err(|e| TransportErrorKind::custom(redact::reqwest_error(e)))?;
        let status = reply.status();
        let retry_after = reply
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse().ok())
            .map(Duration::from_secs);
        let body = match reply.bytes().await {
            Ok(body) => body,
            Err(e) if !status.is_success() => {
                return Err(TransportErrorKind::http_error_with_retry_after(
                    status.as_u16(),
                    format!(
                        "<failed to read response body: {}>",
                        redact::reqwest_error(e)
                    ),
                    retry_after,
                ));
            }
            Err(e) => return Err(TransportErrorKind::custom(redact::reqwest_error(e))),
        };
        if !status.is_success() {
            // A JSON-RPC error in an error status is still the RPC's answer.
            if let Ok(response) = serde_json::from_slice::<ResponsePacket>(&body)
                && response.is_error()
            {
                return Ok(response);
            }
            let text = redact::secrets_of(&String::from_utf8_lossy(&body), &self.url);
            return Err(TransportErrorKind::http_error_with_retry_after(
                status.as_u16(),
                text,
                retry_after,
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            TransportError::deser_err(
                e,
                redact::secrets_of(&String::from_utf8_lossy(&body), &self.url),
            )
        })
    }
}

impl tower::Service<RequestPacket> for RedactedHttp {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // reqwest is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        Box::pin(self.clone().send(request))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 16, item 4): a bundler or gas manager that cannot be reached, or that
    /// answers an error, produced an `RpcError` whose text quoted the full URL, API key included.
    #[tokio::test]
    async fn rpc_errors_name_the_endpoint_never_the_url() {
        // Bound but not listening: connections are refused, and no other test can take the port.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let url: Url = format!("http://user:PASSWORD@127.0.0.1:{port}/v2/API_KEY?key=QUERYKEY")
            .parse()
            .unwrap();
        let client = RpcClient::new("bundler", url).unwrap();
        let error = client
            .call::<_, serde_json::Value>("eth_chainId", ())
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Transport { .. }), "{error}");
        let mut texts = vec![
            error.to_string(),
            format!("{error:?}"),
            format!("{client:?}"),
        ];
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            texts.push(inner.to_string());
            source = inner.source();
        }
        for text in &texts {
            for secret in ["PASSWORD", "API_KEY", "QUERYKEY", "/v2"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
        assert!(
            texts[0].contains(&format!("bundler eth_chainId at http://127.0.0.1:{port}:")),
            "{}",
            texts[0]
        );
    }

    /// Serves `body` as the HTTP 200 answer to every request on a port of its own.
    async fn answering(body: &'static str) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        url.parse().unwrap()
    }

    /// Regression (issue 17): a reply with neither `result` nor `error` was read as `null`, so a
    /// broken bundler's answer to `eth_getUserOperationReceipt` looked like "no receipt yet".
    #[tokio::test]
    async fn a_reply_without_result_or_error_is_malformed_while_null_is_an_answer() {
        let silent =
            RpcClient::new("bundler", answering(r#"{"jsonrpc":"2.0","id":1}"#).await).unwrap();
        let error = silent
            .call::<_, Option<serde_json::Value>>("eth_getUserOperationReceipt", ["0x01"])
            .await
            .unwrap_err();
        assert!(matches!(error, RpcError::Malformed { .. }), "{error}");
        assert!(
            error.to_string().contains("neither a result nor an error"),
            "{error}"
        );

        let null = RpcClient::new(
            "bundler",
            answering(r#"{"jsonrpc":"2.0","id":1,"result":null}"#).await,
        )
        .unwrap();
        let answer = null
            .call::<_, Option<serde_json::Value>>("eth_getUserOperationReceipt", ["0x01"])
            .await
            .unwrap();
        assert_eq!(answer, None);
    }
}
