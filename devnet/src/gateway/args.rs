//! Command-line arguments of `attestmesh-devnet gateway`, and the command itself.
//! Flags are prefixed `gateway.` so that `up` can later flatten them beside other emulators'.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use attestmesh_dstack::EthAddress;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use super::LOG_TARGET;
use super::error::{GatewayError, Result};
use super::name::DEFAULT_DOMAIN;
use super::relay::PathDelay;
use super::routes::{RouteTable, load_routes_file, parse_route};
use super::server::{GatewayConfig, GatewayEmulator};

/// Run a dstack gateway emulator: a TLS front that routes `<app_id>-<port>[s|g].<domain>`
/// by SNI to registered backends.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(
        long = "gateway.listen",
        env = "ATTESTMESH_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8443"
    )]
    pub listen: SocketAddr,

    /// Gateway domain: apps are reached at <app_id>-<port>[s|g].<domain>.
    #[arg(
        long = "gateway.domain",
        env = "ATTESTMESH_GATEWAY_DOMAIN",
        default_value = DEFAULT_DOMAIN
    )]
    pub domain: String,

    /// A route <app_id>=<ip> (app id 20-byte hex); repeat the flag for more. In the
    /// environment variable, separate routes with commas.
    #[arg(
        long = "gateway.route",
        env = "ATTESTMESH_GATEWAY_ROUTES",
        value_delimiter = ',',
        value_parser = parse_route_arg
    )]
    pub routes: Vec<(EthAddress, IpAddr)>,

    /// JSON routes file {"<app_id>": "<ip>", ...}, read at start and again on SIGHUP; its
    /// entries win over --gateway.route for the same app id.
    #[arg(long = "gateway.routes-file", env = "ATTESTMESH_GATEWAY_ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,

    /// Where to write the devnet CA certificate (PEM) that clients must trust for the
    /// terminating routes (a new CA at every start).
    #[arg(
        long = "gateway.ca-cert",
        env = "ATTESTMESH_GATEWAY_CA_CERT",
        default_value = ".devnet/gateway-ca.pem"
    )]
    pub ca_cert: PathBuf,

    /// Added delay in milliseconds on each direction of every connection (fault injection:
    /// an echo round trip gets twice this much slower).
    #[arg(
        long = "gateway.delay-ms",
        env = "ATTESTMESH_GATEWAY_DELAY_MS",
        default_value_t = 0
    )]
    pub delay_ms: u64,
}

impl GatewayArgs {
    /// The routes these arguments describe: flags, then the routes file on top.
    pub fn routes(&self) -> Result<Vec<(EthAddress, IpAddr)>> {
        let mut routes = self.routes.clone();
        if let Some(path) = &self.routes_file {
            routes.extend(load_routes_file(path)?);
        }
        Ok(routes)
    }

    /// The gateway configuration these arguments describe (reads the routes file).
    pub fn config(&self) -> Result<GatewayConfig> {
        Ok(GatewayConfig {
            listen: self.listen,
            domain: self.domain.clone(),
            routes: self.routes()?,
            ca_cert_path: Some(self.ca_cert.clone()),
            delay: PathDelay::symmetric(Duration::from_millis(self.delay_ms)),
        })
    }
}

/// Serve until `shutdown` completes; SIGHUP re-reads the routes file.
pub async fn run(args: GatewayArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    // Installed before serving, so an early SIGHUP reloads instead of killing the process.
    let mut hangup = signal(SignalKind::hangup()).map_err(|source| GatewayError::Signal {
        signal: "SIGHUP",
        source,
    })?;
    let handle = GatewayEmulator::spawn(args.config()?)?;
    info!(
        target: LOG_TARGET,
        listen = %handle.local_addr(),
        domain = handle.domain(),
        ca_cert = %args.ca_cert.display(),
        routes = handle.routes().snapshot().len(),
        delay_ms = args.delay_ms,
        "gateway listening; clients of terminating routes must trust the CA certificate"
    );
    let routes = handle.routes();
    let serve_until = async {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = hangup.recv() => reload(&args, &routes),
            }
        }
    };
    handle.run_until(serve_until).await?;
    info!(target: LOG_TARGET, "gateway stopped");
    Ok(())
}

/// Replace the routes with the flags plus the file; a bad file keeps the current routes.
fn reload(args: &GatewayArgs, routes: &RouteTable) {
    match args.routes() {
        Ok(fresh) => {
            routes.replace(fresh);
            info!(target: LOG_TARGET, routes = routes.snapshot().len(), "SIGHUP: routes reloaded");
        }
        Err(err) => {
            warn!(target: LOG_TARGET, %err, "SIGHUP: routes not reloaded; keeping the current routes");
        }
    }
}

fn parse_route_arg(value: &str) -> Result<(EthAddress, IpAddr), String> {
    parse_route(value).map_err(|err| err.to_string())
}
