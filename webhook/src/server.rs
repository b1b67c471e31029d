//! The HTTP side: start-up verification, routes, the decision flow, and the running server's
//! handle.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::aliases::U192;
use alloy::primitives::{Address, U256};
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_chain::{ChainClient, ChainError};
use attestmesh_service::http::Server;
use attestmesh_service::report::error_chain;
use attestmesh_types::webhook::{
    SponsoredCall, SponsoredGas, WebhookRequest, WebhookResponse, parse_chain_id,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::auth::{self, SecretDigest};
use crate::config::{GasCaps, WebhookConfig, loggable_url};
use crate::envelopes::{self, Envelope};
use crate::error::{Result, WebhookError};
use crate::pending::{Conflict, PendingApprovals, Reservation};
use crate::rate_limit::RateLimiter;
use crate::{LOG_TARGET, SERVICE_NAME};

/// Longest policy id echoed back in a reply or a log line: it comes from the request.
const MAX_ECHOED_POLICY_ID: usize = 128;

/// The paymaster webhook. See [`Webhook::spawn`].
#[derive(Debug)]
pub struct Webhook;

impl Webhook {
    /// Verifies `config` against the chain, then serves until the returned handle is shut down
    /// or dropped.
    ///
    /// Refuses to start (rather than serve denials nobody can explain) when the RPC is
    /// unreachable or serves another chain id, or when a policy's cluster has no code or does
    /// not answer the sponsorship view. Must be called inside a tokio runtime.
    pub async fn spawn(config: WebhookConfig) -> Result<WebhookHandle> {
        let policies = config.validate()?;
        let endpoint = loggable_url(&config.rpc_url);
        let chain_id = config.chain_id;
        let timeout = config.chain_timeout;

        let connect = ChainClient::connect(&config.rpc_url, Some(chain_id));
        let client = within(timeout, "eth_chainId", &endpoint, connect)
            .await?
            .map_err(|source| WebhookError::Connect {
                endpoint: endpoint.clone(),
                chain_id,
                source: Box::new(source),
            })?;
        for (policy_id, cluster) in &policies {
            verify_cluster(&client, timeout, &endpoint, policy_id, *cluster).await?;
        }

        let (listener, local_addr) = attestmesh_service::listen::bind_tcp(
            "paymaster webhook requests (--listen)",
            config.listen,
        )
        .await?;

        let health = Health {
            status: "ok",
            service: SERVICE_NAME,
            version: env!("CARGO_PKG_VERSION"),
            chain_id,
            policies: policies
                .iter()
                .map(|(policy_id, cluster)| HealthPolicy {
                    policy_id: policy_id.clone(),
                    cluster: cluster.to_string(),
                })
                .collect(),
            limits: serde_json::json!({
                "rate_limit_per_minute": config.rate_limit_per_minute,
                "message_rate_limit_per_minute": config.message_rate_limit_per_minute,
                "pending_window_secs": config.pending_window.as_secs(),
                "caps": crate::caps::describe(&config.caps),
            }),
        };
        // `id=0xCluster, ...`: one flat, checksummed form a deploy routine can grep for.
        let policy_list = health
            .policies
            .iter()
            .map(|policy| format!("{}={}", policy.policy_id, policy.cluster))
            .collect::<Vec<_>>()
            .join(", ");
        info!(
            target: LOG_TARGET,
            %local_addr,
            rpc = %endpoint,
            chain_id,
            policies = %policy_list,
            rate_limit_per_minute = config.rate_limit_per_minute,
            message_rate_limit_per_minute = config.message_rate_limit_per_minute,
            caps = ?config.caps,
            max_body_bytes = config.max_body_bytes,
            "paymaster webhook listening"
        );
        let state = Arc::new(AppState {
            client,
            chain_id,
            policies,
            secret: SecretDigest::new(config.secret.digest()),
            limiter: RateLimiter::new(config.rate_limit_per_minute),
            message_limiter: RateLimiter::new(config.message_rate_limit_per_minute),
            pending: PendingApprovals::new(config.pending_window),
            caps: config.caps,
            chain_timeout: timeout,
            max_body_bytes: config.max_body_bytes,
            health,
            next_request_id: AtomicU64::new(1),
        });
        Ok(WebhookHandle::start(state, listener, local_addr))
    }
}

/// A start-up chain call, bounded: an RPC that accepts connections but never answers must end
/// in a clear error, not a service that hangs before it listens.
async fn within<T>(
    timeout: Duration,
    call: &str,
    endpoint: &str,
    future: impl Future<Output = attestmesh_chain::Result<T>>,
) -> Result<attestmesh_chain::Result<T>> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| WebhookError::ChainTimeout {
            call: call.to_owned(),
            endpoint: endpoint.to_owned(),
            timeout,
        })
}

/// Code alone would also accept the factory or a member account configured by mistake, so the
/// sponsorship view itself is asked, with calldata it must answer (not revert) for.
async fn verify_cluster(
    client: &ChainClient,
    timeout: Duration,
    endpoint: &str,
    policy_id: &str,
    cluster: Address,
) -> Result<()> {
    let code = client.require_code("cluster diamond", cluster);
    within(timeout, "eth_getCode", endpoint, code)
        .await?
        .map_err(|source| WebhookError::ClusterMissing {
            policy_id: policy_id.to_owned(),
            cluster,
            source: Box::new(source),
        })?;
    let probe = client.check_sponsorship(cluster, Address::ZERO, Default::default());
    let answer = within(timeout, "Cluster.checkSponsorship", endpoint, probe)
        .await?
        .map_err(|source| WebhookError::NotACluster {
            policy_id: policy_id.to_owned(),
            cluster,
            source: Box::new(source),
        })?;
    debug!(
        target: LOG_TARGET,
        policy_id,
        %cluster,
        probe_reason = %answer.reason,
        "cluster answers the sponsorship view"
    );
    Ok(())
}

/// Shared state of the handlers.
struct AppState {
    client: ChainClient,
    chain_id: u64,
    policies: BTreeMap<String, Address>,
    secret: SecretDigest,
    limiter: RateLimiter,
    /// App-message envelopes per sender.
    message_limiter: RateLimiter,
    /// Envelopes approved and still pending, per sender.
    pending: PendingApprovals,
    caps: GasCaps,
    chain_timeout: Duration,
    max_body_bytes: usize,
    health: Health,
    next_request_id: AtomicU64,
}

/// `GET /healthz`: the identity a deploy routine asserts (right service, right chain, right
/// clusters), served only once start-up verification has passed.
#[derive(Debug, Clone, Serialize)]
struct Health {
    status: &'static str,
    service: &'static str,
    version: &'static str,
    chain_id: u64,
    policies: Vec<HealthPolicy>,
    /// The operator's rate limits and gas caps, so a deploy routine can show what it asserts.
    limits: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
struct HealthPolicy {
    policy_id: String,
    /// EIP-55 checksummed, as explorers and the deploy scripts print addresses.
    cluster: String,
}

/// Every non-200 reply. `approved: false` is included so a client that reads only that field
/// (as Alchemy does) denies.
#[derive(Debug, Serialize)]
struct ErrorReply<'a> {
    approved: bool,
    error: &'a str,
    reason: String,
}

fn error_reply(status: StatusCode, error: &str, reason: impl Into<String>) -> Response {
    let reply = ErrorReply {
        approved: false,
        error,
        reason: reason.into(),
    };
    (status, Json(reply)).into_response()
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/", post(webhook))
        .route("/webhook", post(webhook))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    Json(state.health.clone()).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error_reply(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "{method} {}: no such endpoint; POST the webhook request to / or /webhook, GET /healthz",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}: POST the webhook request to / or /webhook, GET /healthz",
            uri.path()
        ),
    )
}

/// The body is taken as a `Result` so that a missing or wrong secret is the answer whatever the
/// body (axum buffers it, up to the limit, before this runs), and every failure to read it
/// becomes this service's JSON reply rather than axum's plain-text one.
async fn webhook(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = state.next_request_id.fetch_add(1, Ordering::Relaxed);
    let span = info_span!(target: LOG_TARGET, "webhook_request", request_id);
    answer(&state, peer, &headers, body).instrument(span).await
}

async fn answer(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(failure) = auth::check(headers, &state.secret) {
        // Never the presented value: a near-miss secret in a log is a leaked secret.
        warn!(
            target: LOG_TARGET,
            %peer,
            forwarded_for = ?headers.get("x-forwarded-for"),
            reason = failure.message(),
            "unauthenticated webhook request rejected"
        );
        return error_reply(StatusCode::UNAUTHORIZED, failure.code(), failure.message());
    }

    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let reason = format!(
                "request body exceeds this webhook's limit of {} bytes",
                state.max_body_bytes
            );
            info!(target: LOG_TARGET, %peer, %reason, "webhook request rejected");
            return error_reply(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", reason);
        }
        Err(rejection) => {
            let reason = format!("cannot read the request body: {}", rejection.body_text());
            info!(target: LOG_TARGET, %peer, %reason, "webhook request rejected");
            return error_reply(rejection.status(), "unreadable_body", reason);
        }
    };

    let request: WebhookRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => return json_error(peer, "request", &err),
    };
    let gas = match SponsoredGas::from_user_operation(&request.user_operation) {
        Ok(gas) => gas,
        Err(reason) => {
            info!(target: LOG_TARGET, %peer, %reason, "webhook request rejected");
            return error_reply(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", reason);
        }
    };
    let call: SponsoredCall = match serde_json::from_value(request.user_operation) {
        Ok(call) => call,
        Err(err) => return json_error(peer, "userOperation", &err),
    };
    let chain_id = match parse_chain_id(&request.chain_id) {
        Ok(chain_id) => chain_id,
        Err(message) => {
            let reason = format!("chainId: {message}");
            info!(target: LOG_TARGET, %peer, %reason, "webhook request rejected");
            return error_reply(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", reason);
        }
    };

    let Some((policy_id, cluster)) = state.policies.get_key_value(&request.policy_id) else {
        let reason = format!(
            "policy id {:?} is not configured on this webhook (configured: {})",
            truncated(&request.policy_id),
            state
                .policies
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        // warn, not info: a gas-manager policy pointing here that the operator did not map is
        // a deployment mistake, not a node misbehaving.
        warn!(
            target: LOG_TARGET,
            sender = %call.sender,
            policy_id = ?truncated(&request.policy_id),
            %reason,
            "sponsorship denied"
        );
        return error_reply(StatusCode::NOT_FOUND, "unknown_policy", reason);
    };

    let selector = selector(&call.call_data);
    let verdict = decide(state, *cluster, chain_id, &call, &gas).await;
    match verdict {
        Verdict::Approved => {
            debug!(
                target: LOG_TARGET,
                sender = %call.sender,
                policy_id = %policy_id,
                %selector,
                "sponsorship approved"
            );
            Json(WebhookResponse {
                approved: true,
                reason: None,
            })
            .into_response()
        }
        Verdict::Denied(reason) => {
            info!(
                target: LOG_TARGET,
                sender = %call.sender,
                policy_id = %policy_id,
                %selector,
                %reason,
                "sponsorship denied"
            );
            Json(WebhookResponse {
                approved: false,
                reason: Some(reason),
            })
            .into_response()
        }
    }
}

/// A body that is not JSON is the client's syntax error (400); JSON of the wrong shape is
/// unprocessable (422), as axum's own `Json` extractor distinguishes them.
fn json_error(peer: SocketAddr, what: &str, err: &serde_json::Error) -> Response {
    let (status, code) = match err.classify() {
        serde_json::error::Category::Data => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        _ => (StatusCode::BAD_REQUEST, "malformed_json"),
    };
    let reason = format!("{what}: {err}");
    info!(target: LOG_TARGET, %peer, %reason, "webhook request rejected");
    error_reply(status, code, reason)
}

/// The sponsorship answer for a well-formed request.
enum Verdict {
    Approved,
    Denied(String),
}

/// The checks in order, cheapest first: chain id, the per-sender operation rate, the operator's
/// gas caps (no chain call), the envelopes already pending in another operation and the
/// per-sender message rate (both recorded before the policy is asked, so two concurrent
/// requests cannot both pass), then the cluster's policy view. Every denial names the rule that
/// refused (`wrong chain`, `rate limit`, `cap`, `pending`, `policy`) and nothing is signed.
async fn decide(
    state: &AppState,
    cluster: Address,
    chain_id: u64,
    call: &SponsoredCall,
    gas: &SponsoredGas,
) -> Verdict {
    if chain_id != state.chain_id {
        return Verdict::Denied(format!(
            "wrong chain: the request is for chain id {chain_id}, but this webhook sponsors on \
             chain id {}",
            state.chain_id
        ));
    }
    // After the cheap checks and before the chain: the limit protects the RPC, and a request
    // that never reaches the chain costs nothing worth limiting.
    if let Err(limited) = state.limiter.check(call.sender, Instant::now()) {
        return Verdict::Denied(format!(
            "rate limit: sender {} exceeded {} operations per minute; retry in {} s",
            call.sender,
            limited.per_minute,
            limited.retry_after.as_secs() + 1
        ));
    }
    if let Some(reason) = crate::caps::check(gas, &state.caps) {
        return Verdict::Denied(reason);
    }

    let carried = envelopes::envelopes(&call.call_data);
    let reservation = if carried.is_empty() {
        None
    } else {
        match reserve_envelopes(state, call, &carried).await {
            Ok(reservation) => Some(reservation),
            Err(reason) => return Verdict::Denied(reason),
        }
    };

    let verdict = ask_policy(state, cluster, call).await;
    if let (Verdict::Denied(_), Some(reservation)) = (&verdict, &reservation) {
        state.pending.release(reservation);
        state
            .message_limiter
            .refund(call.sender, count(reservation.added.len()));
    }
    verdict
}

/// Records the operation's envelopes as pending and takes them from the sender's message
/// bucket, or says why not. An envelope pending in another operation of the sender is a
/// conflict unless the chain shows that operation's nonce used (asked only then).
async fn reserve_envelopes(
    state: &AppState,
    call: &SponsoredCall,
    carried: &[Envelope],
) -> std::result::Result<Reservation, String> {
    let mut settled_on_chain = false;
    let reservation = loop {
        match state
            .pending
            .reserve(call.sender, call.nonce, carried, Instant::now())
        {
            Ok(reservation) => break reservation,
            Err(conflicts) if !settled_on_chain => {
                settle_on_chain(state, call.sender, &conflicts).await?;
                settled_on_chain = true;
            }
            Err(conflicts) => return Err(pending_reason(state, &conflicts)),
        }
    };
    let wanted = count(reservation.added.len());
    if let Err(limited) = state
        .message_limiter
        .take(call.sender, wanted, Instant::now())
    {
        state.pending.release(&reservation);
        return Err(format!(
            "rate limit: sender {} may have {} message envelopes per minute approved; this \
             operation carries {wanted} more; retry in {} s",
            call.sender,
            limited.per_minute,
            limited.retry_after.as_secs() + 1
        ));
    }
    Ok(reservation)
}

/// Drops the conflicting entries whose operation the chain shows done: `EntryPoint.getNonce` of
/// its key is past its nonce (included, reverted or replaced). A chain that cannot be asked
/// fails closed.
async fn settle_on_chain(
    state: &AppState,
    sender: Address,
    conflicts: &[Conflict],
) -> std::result::Result<(), String> {
    for conflict in conflicts {
        let Some(nonce) = conflict.nonce else {
            continue;
        };
        let key = U192::saturating_from(nonce >> 64);
        let read = state.client.entry_point_nonce(ENTRY_POINT_V07, sender, key);
        match tokio::time::timeout(state.chain_timeout, read).await {
            Ok(Ok(current)) if current > nonce => state.pending.settle(sender, nonce),
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                error!(
                    target: LOG_TARGET,
                    %sender,
                    error = %error_chain(&err),
                    "pending envelope could not be checked on chain; denying"
                );
                return Err(format!(
                    "pending: envelope {} is in another approved operation (nonce {nonce:#x}) \
                     and the chain could not be asked whether it landed; denied to fail closed",
                    conflict.envelope
                ));
            }
            Err(_) => {
                return Err(format!(
                    "pending: envelope {} is in another approved operation (nonce {nonce:#x}) \
                     and the chain RPC did not answer within {:?} whether it landed; denied to \
                     fail closed",
                    conflict.envelope, state.chain_timeout
                ));
            }
        }
    }
    Ok(())
}

fn pending_reason(state: &AppState, conflicts: &[Conflict]) -> String {
    let Some(first) = conflicts.first() else {
        return "pending: an envelope of this operation is in another pending operation".into();
    };
    let other = match first.nonce {
        Some(nonce) => format!(
            "operation nonce {nonce:#x} (key {}, sequence {})",
            nonce >> 64,
            nonce & U256::from(u64::MAX)
        ),
        None => "an operation without a nonce".into(),
    };
    format!(
        "pending: envelope {} is already in this sender's {other}, approved {} s ago and not \
         yet on chain; a second operation carrying it would revert at the sponsor's cost (wait \
         for the first to land, or {} s)",
        first.envelope,
        first.age.as_secs(),
        state.pending.window().as_secs()
    )
}

fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The cluster's sponsorship policy view, bounded by the chain timeout; denials are prefixed
/// `policy:`.
async fn ask_policy(state: &AppState, cluster: Address, call: &SponsoredCall) -> Verdict {
    debug!(
        target: LOG_TARGET,
        %cluster,
        sender = %call.sender,
        call_data_len = call.call_data.len(),
        "asking the cluster's sponsorship policy"
    );
    let started = Instant::now();
    let check = state
        .client
        .check_sponsorship(cluster, call.sender, call.call_data.clone());
    // A hung RPC must end in a denial the gas manager receives, not in its own timeout.
    let Ok(answer) = tokio::time::timeout(state.chain_timeout, check).await else {
        error!(
            target: LOG_TARGET,
            %cluster,
            sender = %call.sender,
            timeout = ?state.chain_timeout,
            "sponsorship policy could not be checked: the chain RPC did not answer in time; denying"
        );
        return Verdict::Denied(format!(
            "policy: sponsorship policy could not be checked (the chain RPC did not answer \
             within {:?}); denied to fail closed",
            state.chain_timeout
        ));
    };
    debug!(
        target: LOG_TARGET,
        %cluster,
        elapsed_ms = started.elapsed().as_millis(),
        ok = answer.is_ok(),
        "sponsorship policy answered"
    );
    match answer {
        Ok(decision) if decision.sponsorable => Verdict::Approved,
        Ok(decision) if decision.reason.is_empty() => Verdict::Denied(
            "policy: the cluster's sponsorship policy denied without a reason".into(),
        ),
        Ok(decision) => Verdict::Denied(format!("policy: {}", decision.reason)),
        // The view reverts only on calldata that does not ABI-decode: an answer about the
        // operation, not a chain failure.
        Err(ChainError::Reverted { reason, .. }) => Verdict::Denied(format!(
            "policy: the cluster's sponsorship policy rejected the calldata: it does not decode \
             as the call it names (checkSponsorship reverted: {reason})"
        )),
        Err(err) => {
            // Fail closed. The chain error (with the endpoint) goes to the operator's log only;
            // the reply, which reaches the gas manager and the node, just says what happened.
            error!(
                target: LOG_TARGET,
                %cluster,
                sender = %call.sender,
                error = %error_chain(&err),
                "sponsorship policy could not be checked; denying"
            );
            Verdict::Denied(
                "policy: sponsorship policy could not be checked (chain RPC unavailable); denied \
                 to fail closed"
                    .into(),
            )
        }
    }
}

/// `0x` and the first four bytes of the calldata, for logs ("denied for selector 0x…").
fn selector(call_data: &[u8]) -> String {
    match call_data.get(..4) {
        Some(bytes) => format!("0x{}", alloy::hex::encode(bytes)),
        None => "none".into(),
    }
}

fn truncated(text: &str) -> &str {
    match text.char_indices().nth(MAX_ECHOED_POLICY_ID) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// A running webhook. Dropping it stops the server; [`WebhookHandle::shutdown`] does so
/// gracefully (in-flight requests finish) and reports how the server ended.
#[derive(Debug)]
pub struct WebhookHandle {
    server: Server,
}

impl WebhookHandle {
    fn start(
        state: Arc<AppState>,
        listener: tokio::net::TcpListener,
        local_addr: SocketAddr,
    ) -> Self {
        Self {
            server: Server::serve_on("paymaster webhook", listener, local_addr, router(state)),
        }
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `http://<local address>/`, the URL to configure on the gas manager.
    pub fn url(&self) -> String {
        format!("http://{}/", self.server.local_addr())
    }

    /// Stops accepting, lets in-flight requests finish, and reports how the server ended.
    pub async fn shutdown(self) -> Result<()> {
        let local_addr = self.server.local_addr();
        let ended = self.server.shutdown().await;
        info!(target: LOG_TARGET, %local_addr, "paymaster webhook stopped");
        Ok(ended?)
    }

    /// Serves until `signal` completes, then shuts down gracefully. Returns early with an error
    /// if the server stops by itself.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<()> {
        let local_addr = self.server.local_addr();
        let ended = self.server.run_until(signal).await;
        info!(target: LOG_TARGET, %local_addr, "paymaster webhook stopped");
        Ok(ended?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_is_the_first_four_bytes() {
        assert_eq!(selector(&[0xde, 0xad, 0xbe, 0xef, 0x01]), "0xdeadbeef");
        assert_eq!(selector(&[0x01]), "none");
    }

    #[test]
    fn echoed_policy_ids_are_bounded() {
        let long = "x".repeat(1000);
        assert_eq!(truncated(&long).len(), MAX_ECHOED_POLICY_ID);
        assert_eq!(truncated("short"), "short");
        // Never splits a multi-byte character.
        let wide = "é".repeat(200);
        assert_eq!(truncated(&wide).chars().count(), MAX_ECHOED_POLICY_ID);
    }
}
