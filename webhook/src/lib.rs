//! The AttestMesh paymaster webhook.
//!
//! An Alchemy-style gas manager with "custom rules" calls this service before it signs paymaster
//! data for a UserOperation: `POST {userOperation, policyId, chainId, webhookData}` →
//! `{"approved": true|false}`. The webhook holds no policy of its own: it maps the gas manager's
//! policy id to one cluster diamond and asks that diamond's sponsorship view,
//! `checkSponsorship(sender, callData)`, through the project's one chain client. The policy is
//! therefore tested in Foundry and the same on every webhook that points at the cluster.
//!
//! Before the policy it applies the operator's own rules, each named in its denial: a per-sender
//! operation rate (`rate limit:`), caps on the operation's gas fields and maximum cost when the
//! gas manager sends them (`cap:`, [`GasCaps`]), the envelopes of an operation already approved
//! and still pending in another of the sender's operations (`pending:`), and a per-sender rate of
//! app-message envelopes (`rate limit:`). The policy's own denials read `policy: <its reason>`.
//!
//! Every answer fails closed: a chain that cannot be asked, a request that cannot be read, a
//! sender over its rate limit are all `"approved": false` (with a reason), and every non-200
//! reply also carries `"approved": false`, so a client that reads only that field still denies.
//!
//! * [`WebhookConfig`] is the whole configuration; [`cli`] builds it from flags and environment.
//! * [`Webhook::spawn`] verifies the configuration against the chain (each cluster must be a
//!   contract that answers the sponsorship view) and serves until the [`WebhookHandle`] is shut
//!   down or dropped, so the devnet and tests run the real service in-process.
//! * `GET /healthz` answers the service's identity (chain id, policy → cluster), which the deploy
//!   routine asserts (field note 4: a webhook route once pointed at another project's worker).
//!
//! Logs use the target [`LOG_TARGET`]; the shared secret is never logged.

mod auth;
mod caps;
pub mod cli;
mod config;
mod envelopes;
mod error;
mod pending;
mod rate_limit;
mod server;

pub use config::{
    DEFAULT_CAP_CALL_GAS_LIMIT, DEFAULT_CAP_MAX_COST_WEI, DEFAULT_CAP_MAX_FEE_PER_GAS,
    DEFAULT_CAP_PRE_VERIFICATION_GAS, DEFAULT_CAP_VERIFICATION_GAS_LIMIT, DEFAULT_CHAIN_TIMEOUT,
    DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MESSAGE_RATE_LIMIT_PER_MINUTE,
    DEFAULT_PENDING_WINDOW, DEFAULT_RATE_LIMIT_PER_MINUTE, GasCaps, MIN_SECRET_LEN, PolicyRoute,
    WebhookConfig, WebhookSecret,
};
pub use error::{Result, WebhookError};
pub use server::{Webhook, WebhookHandle};

/// `tracing` target of every log line of this service.
pub const LOG_TARGET: &str = "attestmesh::webhook";

/// The service name `/healthz` reports, so a deploy routine can tell this service from whatever
/// else a route might point at.
pub const SERVICE_NAME: &str = "attestmesh-webhook";
