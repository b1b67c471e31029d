//! The health port: `/healthz`, `/status` and `/metrics`, public (redacted like a log line)
//! but closed to the mesh ([`OffMesh`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use attestmesh_service::listen::bind_tcp;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{ApiError, public};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::targets::API;

/// Header carrying what the node waits for (the /healthz body stays exactly the seed's).
pub const WAITING_FOR_HEADER: &str = "x-attestmesh-waiting-for";

#[derive(Clone)]
struct HealthState {
    health: Health,
    metrics: Metrics,
}

/// Serves `/healthz`, `/status` and `/metrics` until shutdown, never to the mesh.
///
/// Everything on this port is public: operators watch `/healthz` through the dstack gateway,
/// so what it says is redacted like a log line (no URL beyond scheme, host and port). It is not
/// for the mesh, though: mesh peers are other CVMs, not operators, and they reach this node's
/// whole network namespace through attestmesh0. The listener keeps the configured address (the
/// gateway and the container's own healthcheck reach the node's other interfaces, whose
/// addresses the compose does not know) and closes, before reading a byte, every connection
/// from or to an address of the mesh network ([`OffMesh`]).
pub async fn serve_health(
    listen: SocketAddr,
    health: Health,
    metrics: Metrics,
    shutdown: Shutdown,
) -> Result<(JoinHandle<()>, SocketAddr), ApiError> {
    // Port 0 lets the system pick: the bound address is the one to report and log.
    let (listener, listen) = bind_tcp("the health endpoint (--health.listen)", listen).await?;
    let listener = OffMesh {
        listener,
        routes: Routes::system(),
    };
    info!(target: API, %listen, "health endpoint listening (closed to the mesh)");
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(HealthState { health, metrics });
    let server = attestmesh_service::http::serve("the health endpoint", listener, app, shutdown);
    Ok((server, listen))
}

async fn healthz(State(state): State<HealthState>) -> Response {
    let snapshot = state.health.snapshot();
    let code = if snapshot.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (code, axum::Json(snapshot.body())).into_response();
    if !snapshot.waiting_for.is_empty()
        && let Ok(value) =
            HeaderValue::from_str(&public(&snapshot.waiting_for).replace(['\r', '\n'], " "))
    {
        response.headers_mut().insert(WAITING_FOR_HEADER, value);
    }
    response
}

async fn status(State(state): State<HealthState>) -> Response {
    let s = state.health.snapshot();
    axum::Json(serde_json::json!({
        "phase": s.phase.as_str(),
        "csk_acquired": s.csk_acquired,
        "first_converged": s.first_converged,
        "live_peers": s.live_peers,
        "waiting_for": public(&s.waiting_for),
        "healthy": s.is_healthy(),
    }))
    .into_response()
}

async fn metrics_text(State(state): State<HealthState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response(),
    }
}

/// The health port's listener: the configured socket, minus the mesh. A connection whose remote
/// or local address is in a network routed over a TUN device is closed as soon as it is
/// accepted. In the node's container (and in a devnet namespace) the only TUN is attestmesh0,
/// the WireGuard mesh: every packet a peer sends arrives through it, from the peer's mesh IP
/// (the dataplane drops any other source), so a peer reaches this port only from an address of
/// the mesh network — whichever of this node's addresses it aims at. The dstack gateway, the
/// container's healthcheck (`localhost`) and the devnet's probes come from other networks and
/// are served. (Binding to the non-mesh addresses instead would not do: Linux accepts a packet
/// for any local address on any interface, so a peer could still aim at the others through the
/// tunnel; and the compose does not know the container's addresses.)
struct OffMesh {
    listener: TcpListener,
    routes: Routes,
}

impl axum::serve::Listener for OffMesh {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, remote) = axum::serve::Listener::accept(&mut self.listener).await;
            let local = stream.local_addr().ok();
            let networks = self.routes.tun_networks();
            if let Some(network) = [Some(remote), local]
                .into_iter()
                .flatten()
                .find_map(|address| networks.iter().find(|n| n.contains(address.ip())))
            {
                debug!(target: API, %remote, local = ?local, interface = %network.interface, "health connection from the mesh closed");
                drop(stream);
                continue;
            }
            return (stream, remote);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Where the IPv4 routing table and the interfaces are read (fixed on a node; a test points
/// them at files of its own).
struct Routes {
    /// The kernel's IPv4 routes of this thread's network namespace (`/proc/<..>/net/route`).
    table: Vec<PathBuf>,
    /// `/sys/class/net`: an interface `X` is a TUN (or TAP) device when `X/tun_flags` exists.
    interfaces: PathBuf,
    /// Whether an unreadable table was reported (once).
    warned: std::sync::atomic::AtomicBool,
}

/// One IPv4 network routed over an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoutedNetwork {
    interface: String,
    network: std::net::Ipv4Addr,
    prefix_mask: u32,
}

impl RoutedNetwork {
    fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V4(ip) => ip,
            // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; the mesh is IPv4 only.
            std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(ip) => ip,
                None => return false,
            },
        };
        u32::from(ip) & self.prefix_mask == u32::from(self.network) & self.prefix_mask
    }
}

impl Routes {
    fn system() -> Self {
        Self {
            // The calling thread's namespace first (a devnet runs agents in namespaces).
            table: vec![
                PathBuf::from("/proc/thread-self/net/route"),
                PathBuf::from("/proc/net/route"),
            ],
            interfaces: PathBuf::from("/sys/class/net"),
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The networks routed over TUN devices now (read at every connection: attestmesh0 comes
    /// up after the listener, and goes with the mesh). An unreadable table yields none: the
    /// port then serves as configured, and says so.
    fn tun_networks(&self) -> Vec<RoutedNetwork> {
        let Some(table) = self
            .table
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
        else {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                warn!(target: API, table = ?self.table, "cannot read the routing table: the health port cannot tell mesh connections apart and serves every connection (bind --health.listen to a non-mesh address)");
            }
            return Vec::new();
        };
        parse_routes(&table)
            .into_iter()
            .filter(|route| {
                !route.interface.contains('/')
                    && self
                        .interfaces
                        .join(&route.interface)
                        .join("tun_flags")
                        .exists()
            })
            .collect()
    }
}

/// The routes of `/proc/net/route` (addresses and masks are hex of the in-memory bytes).
fn parse_routes(table: &str) -> Vec<RoutedNetwork> {
    let hex = |field: &str| u32::from_str_radix(field, 16).ok().map(u32::to_ne_bytes);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (interface, destination, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            let network = std::net::Ipv4Addr::from(hex(destination)?);
            let prefix_mask = u32::from(std::net::Ipv4Addr::from(hex(mask)?));
            Some(RoutedNetwork {
                interface: (*interface).to_string(),
                network,
                prefix_mask,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A routing table as the kernel writes it (little-endian hex): the mesh on attestmesh0
    /// (10.88.0.0/16), the container's bridge on eth0 (172.17.0.0/16), a default route.
    const TABLE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
        attestmesh0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    /// `table` as the routing table and `tuns` as the TUN devices, in files of a temp dir.
    fn routes(dir: &Path, table: &str, tuns: &[&str]) -> Routes {
        std::fs::write(dir.join("route"), table).unwrap();
        for tun in tuns {
            std::fs::create_dir_all(dir.join("net").join(tun)).unwrap();
            std::fs::write(dir.join("net").join(tun).join("tun_flags"), "0x1001\n").unwrap();
        }
        std::fs::create_dir_all(dir.join("net").join("eth0")).unwrap();
        Routes {
            table: vec![dir.join("missing"), dir.join("route")],
            interfaces: dir.join("net"),
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    #[test]
    fn the_mesh_is_the_network_routed_over_a_tun_device() {
        if cfg!(target_endian = "big") {
            return; // TABLE is written as a little-endian kernel writes it.
        }
        let dir = tempfile::tempdir().unwrap();
        let networks = routes(dir.path(), TABLE, &["attestmesh0"]).tun_networks();
        assert_eq!(
            networks,
            [RoutedNetwork {
                interface: "attestmesh0".into(),
                network: "10.88.0.0".parse().unwrap(),
                prefix_mask: 0xffff_0000,
            }]
        );
        let mesh = &networks[0];
        for inside in ["10.88.0.1", "10.88.255.7", "::ffff:10.88.0.2"] {
            assert!(mesh.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["172.17.0.2", "127.0.0.1", "10.89.0.1", "::1"] {
            assert!(!mesh.contains(outside.parse().unwrap()), "{outside}");
        }
    }

    /// Item 4 of issue 16: the health port answered mesh peers. A connection from or to the
    /// mesh network (here: loopback declared a TUN's network) is closed unanswered; any other
    /// is served.
    #[tokio::test]
    async fn the_health_port_closes_connections_of_the_mesh_and_serves_the_rest() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        async fn get(address: SocketAddr) -> String {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            // The server may already have closed it: a failed write is an empty answer.
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                stream.read_to_end(&mut answer),
            )
            .await
            .expect("the connection ends");
            String::from_utf8_lossy(&answer).into_owned()
        }

        for (loopback_is_mesh, served) in [(true, false), (false, true)] {
            let dir = tempfile::tempdir().unwrap();
            let table = if loopback_is_mesh {
                format!("{TABLE}fake0\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n")
            } else {
                TABLE.to_string()
            };
            let listener = OffMesh {
                listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
                routes: routes(dir.path(), &table, &["attestmesh0", "fake0"]),
            };
            let address = axum::serve::Listener::local_addr(&listener).unwrap();
            let app = axum::Router::new().route("/healthz", get_route());
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let answer = get(address).await;
            assert_eq!(
                answer.starts_with("HTTP/1.1 200"),
                served,
                "loopback in the mesh: {loopback_is_mesh}; answer: {answer:?}"
            );
            if !served {
                assert!(answer.is_empty(), "{answer:?}");
            }
            server.abort();
        }
    }

    fn get_route() -> axum::routing::MethodRouter {
        get(|| async { "ok" })
    }
}
