//! The HTTP/1.1 client: one short-lived connection per request, JSON in, JSON out.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use crate::LOG_TARGET;
use crate::endpoint::Endpoint;
use crate::error::{DstackError, Result};
use crate::types::{AppInfo, GetKeyResponse, QuoteResponse};
use crate::wire;

/// How long one request may take, connect to last body byte, unless changed with
/// [`DstackClient::with_timeout`]. Real quote generation takes well under a second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most report data a TDX quote carries.
pub const MAX_REPORT_DATA_LEN: usize = 64;

/// The guest-agent endpoints this client speaks. A closed set on purpose: the removed legacy
/// `/DeriveKey` (gone since dstack 0.5, field note 1) cannot be requested by construction.
#[derive(Debug, Clone, Copy)]
enum AgentEndpoint {
    GetKey,
    GetQuote,
    Info,
}

impl AgentEndpoint {
    fn path(self) -> &'static str {
        match self {
            Self::GetKey => "/GetKey",
            Self::GetQuote => "/GetQuote",
            Self::Info => "/Info",
        }
    }
}

/// Numbers requests so a request and its response can be paired in the logs.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// Client of the dstack guest agent. Cheap to clone; holds no connection between requests.
#[derive(Debug, Clone)]
pub struct DstackClient {
    endpoint: Endpoint,
    timeout: Duration,
}

impl DstackClient {
    /// A client for a known endpoint.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client for the discovered agent (see [`Endpoint::discover`]).
    pub fn discover(socket_override: Option<&Path>) -> Result<Self> {
        let endpoint = Endpoint::discover(socket_override)?;
        debug!(target: LOG_TARGET, agent = %endpoint, "dstack guest agent endpoint selected");
        Ok(Self::new(endpoint))
    }

    /// Change the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where this client sends requests.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `POST /GetKey`: the key derived for `path`, and its signature chain (which signs
    /// `purpose`). Only `path` changes the key.
    pub async fn get_key(&self, path: &str, purpose: &str) -> Result<GetKeyResponse> {
        let request = wire::GetKeyRequest {
            path: path.to_owned(),
            purpose: purpose.to_owned(),
        };
        debug!(target: LOG_TARGET, path, purpose, "GetKey");
        let raw: wire::GetKeyResponse = self.post(AgentEndpoint::GetKey, &request).await?;
        GetKeyResponse::try_from(raw)
    }

    /// `POST /GetQuote`: a quote carrying `report_data` (at most 64 bytes; the agent pads it).
    pub async fn get_quote(&self, report_data: &[u8]) -> Result<QuoteResponse> {
        if report_data.len() > MAX_REPORT_DATA_LEN {
            return Err(DstackError::InvalidRequest {
                endpoint: AgentEndpoint::GetQuote.path(),
                reason: format!(
                    "report_data is {} bytes, at most {MAX_REPORT_DATA_LEN} fit in a quote; hash it first",
                    report_data.len()
                ),
            });
        }
        let request = wire::GetQuoteRequest {
            report_data: wire::encode_hex(report_data),
        };
        debug!(target: LOG_TARGET, report_data = %request.report_data, "GetQuote");
        let raw: wire::GetQuoteResponse = self.post(AgentEndpoint::GetQuote, &request).await?;
        QuoteResponse::try_from(raw)
    }

    /// `POST /Info`: the app id, instance id, compose hash, device id and app name of this CVM.
    pub async fn info(&self) -> Result<AppInfo> {
        let raw: wire::InfoResponse = self
            .post(AgentEndpoint::Info, &serde_json::json!({}))
            .await?;
        AppInfo::try_from(raw)
    }

    /// Send one JSON request and decode the JSON answer, mapping `{"error": ...}` replies.
    /// Bodies are never logged: `/GetKey` answers carry key material.
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: AgentEndpoint,
        request: &Req,
    ) -> Result<Resp> {
        let body = serde_json::to_vec(request).map_err(|err| DstackError::InvalidRequest {
            endpoint: endpoint.path(),
            reason: format!("cannot encode the request as JSON: {err}"),
        })?;
        let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        debug!(
            target: LOG_TARGET,
            request_id,
            endpoint = endpoint.path(),
            agent = %self.endpoint,
            "dstack request"
        );

        let (status, bytes) = tokio::time::timeout(self.timeout, self.exchange(endpoint, body))
            .await
            .map_err(|_| DstackError::Timeout {
                agent: self.endpoint.to_string(),
                endpoint: endpoint.path(),
                after: self.timeout,
            })
            .flatten()
            .inspect_err(|err| {
                debug!(target: LOG_TARGET, request_id, endpoint = endpoint.path(), %err, "dstack request failed");
            })?;
        debug!(
            target: LOG_TARGET,
            request_id,
            endpoint = endpoint.path(),
            status = status.as_u16(),
            bytes = bytes.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "dstack response"
        );

        if !status.is_success() {
            // dstack's error body is {"error": "..."}; anything else is passed on verbatim so
            // the message still says what the agent said.
            let message = match serde_json::from_slice::<wire::ErrorResponse>(&bytes) {
                Ok(reply) => reply.error,
                Err(_) => body_excerpt(&bytes),
            };
            debug!(target: LOG_TARGET, request_id, endpoint = endpoint.path(), status = status.as_u16(), %message, "dstack error reply");
            return Err(DstackError::Agent {
                endpoint: endpoint.path(),
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|err| DstackError::InvalidResponse {
            endpoint: endpoint.path(),
            // serde's message names the missing/mistyped field; the body may hold a key, so it
            // is not quoted here.
            reason: format!("body is not the expected JSON: {err}"),
        })
    }

    /// Connect, send the request, read the whole response.
    async fn exchange(
        &self,
        endpoint: AgentEndpoint,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        let connect_error = |source| DstackError::Connect {
            agent: self.endpoint.to_string(),
            source,
        };
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(connect_error)?;
                // The Host header is required by HTTP/1.1; over a unix socket any name will do.
                self.send(TokioIo::new(stream), "localhost", endpoint, body)
                    .await
            }
            Endpoint::Tcp(authority) => {
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(connect_error)?;
                self.send(TokioIo::new(stream), authority, endpoint, body)
                    .await
            }
        }
    }

    async fn send<Io>(
        &self,
        io: Io,
        host: &str,
        endpoint: AgentEndpoint,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)>
    where
        Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let http_error = |source| DstackError::Http {
            agent: self.endpoint.to_string(),
            endpoint: endpoint.path(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(http_error)?;
        // The connection future drives the socket. It ends when `sender` is dropped at the end
        // of this call (or the peer closes), so the task never outlives the request for long.
        let agent = self.endpoint.to_string();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(target: LOG_TARGET, %agent, %err, "dstack connection closed with an error");
            }
        });

        let request = Request::post(endpoint.path())
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| DstackError::InvalidRequest {
                endpoint: endpoint.path(),
                reason: format!("cannot build the HTTP request: {err}"),
            })?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// At most 512 characters of a non-JSON error body, for the error message.
fn body_excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_owned();
    }
    match trimmed.char_indices().nth(512) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}
