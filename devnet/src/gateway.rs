//! A dstack gateway emulator: the TLS front that makes CVM apps reachable from outside.
//!
//! dstack CVMs accept no inbound UDP and no direct TCP; apps are reached through the gateway at
//! `<app_id>-<port>[suffix].<domain>`, routed by TLS SNI ([`GatewayName`]):
//!
//! * suffix `s` ([`RouteMode::Passthrough`]): the gateway only reads the ClientHello's SNI and
//!   splices the raw TCP stream, ClientHello included, to the backend, which terminates TLS.
//! * no suffix ([`RouteMode::Terminate`]): the gateway terminates TLS with its `*.<domain>`
//!   certificate, negotiates **no** ALPN protocol, and forwards plaintext. A gRPC client that
//!   insists on negotiated h2 fails here (field note 10); it must assume h2.
//! * suffix `g` ([`RouteMode::TerminateH2`]): terminates TLS, negotiates ALPN `h2` only.
//!
//! The port comes from the name; the backend host from a registry of app id → IP
//! ([`RouteTable`]). Unknown app ids, malformed names and missing SNI are closed and logged at
//! warn. The certificate comes from a devnet CA generated at start ([`GatewayHandle::ca_pem`],
//! and a PEM file for other processes).
//!
//! Fault hooks for tests: [`GatewayHandle::drop_all_connections`] resets every open
//! connection, and [`GatewayHandle::set_delay`] adds latency per direction (a delay line in the
//! relay, since there is no `tc netem` here).
//!
//! Tests start one in-process with [`GatewayEmulator::spawn`]; the `gateway` subcommand runs
//! one standalone.

mod args;
mod error;
mod name;
mod relay;
mod routes;
mod server;
mod tls;

pub use args::{GatewayArgs, run};
pub use error::{GatewayError, NameError, Result};
pub use name::{DEFAULT_DOMAIN, GatewayName, RouteMode, validate_domain};
pub use relay::PathDelay;
pub use routes::{RouteTable, load_routes_file, parse_route};
pub use server::{GatewayConfig, GatewayEmulator, GatewayHandle};
pub use tls::{ALPN_H2, crypto_provider};

/// `tracing` target of the gateway's log lines.
pub const LOG_TARGET: &str = "attestmesh::devnet::gateway";
