//! The app-facing surfaces: `/healthz`, `/status`, `/metrics` on the health port, and the gRPC
//! API on a unix socket (with gRPC health and server reflection, so generic clients work).
//! [`to_status`] is the one place errors become gRPC statuses; protobuf types stay in here.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;

use attestmesh_proto::agent::v1 as pb;
use attestmesh_proto::agent::v1::agent_server::{Agent, AgentServer};
use attestmesh_service::listen::bind_tcp;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{BroadcastStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};
use tracing::{debug, info, warn};

use crate::cluster::PeerEventKind;
use crate::health::Health;
use crate::inbox::{Cursor, InboundMessage};
use crate::messages::MAX_PAYLOAD;
use crate::metrics::Metrics;
use crate::send::{SEND_TIMEOUT, SendError, send_message};
use crate::shutdown::Shutdown;
use crate::state::Node;
use crate::targets::API;

/// Header carrying what the node waits for (the /healthz body stays exactly the seed's).
pub const WAITING_FOR_HEADER: &str = "x-attestmesh-waiting-for";

/// Errors of setting up the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Health(#[from] attestmesh_service::listen::ListenError),
    #[error("cannot listen on {address}: {source} (is another agent running?)")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to delete it")]
    NotASocket { path: String },
    #[error("cannot prepare the API socket {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(String),
}

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

/// Serves the gRPC API on `socket` until shutdown. A stale socket file is replaced; the new one
/// is readable and writable by owner and group only (the app container shares the group), from
/// the moment it exists ([`bind_socket`]).
pub async fn serve_api(
    socket: &Path,
    node: Node,
    shutdown: Shutdown,
) -> Result<JoinHandle<()>, ApiError> {
    let path = socket.display().to_string();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::Socket {
            path: path.clone(),
            source,
        })?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(socket).map_err(|source| ApiError::Socket {
                path: path.clone(),
                source,
            })?;
        }
        Ok(_) => return Err(ApiError::NotASocket { path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ApiError::Socket { path, source }),
    }
    let listener = bind_socket(socket)?;

    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter.set_serving::<AgentServer<AgentApi>>().await;
    // Reflection describes and lists exactly the services added to the server below.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(served_descriptors()?)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(pb::agent_server::SERVICE_NAME)
        .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
        .with_service_name(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
        .build_v1()
        .map_err(|e| ApiError::Reflection(e.to_string()))?;
    info!(target: API, socket = %path, "gRPC API listening");
    let service = AgentServer::new(AgentApi {
        node,
        shutdown: shutdown.clone(),
    });
    // gRPC C-core, Java and Swift clients send the socket path as :authority, which h2
    // refuses: every connection goes through the rewrite (see `unix_authority`).
    let incoming = UnixListenerStream::new(listener)
        .map(|connection| connection.map(crate::unix_authority::RewriteAuthority::new));
    Ok(tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = result {
            warn!(target: API, %error, "gRPC API stopped");
        }
    }))
}

/// The API socket's mode: owner and group (the app container shares the group), nobody else.
pub const SOCKET_MODE: u32 = 0o660;

/// Binds the API socket at `socket` so that it never exists there with a wider mode than
/// [`SOCKET_MODE`], not even for an instant: it is bound inside a fresh directory of mode 0700
/// beside it (where nobody else can reach it), given its mode there, then renamed into place
/// (rename is atomic, and a bound socket keeps listening under its new name). Binding with a
/// restrictive umask would do too, but the umask is the whole process's: setting it around the
/// bind would race every other thread that creates a file meanwhile.
pub fn bind_socket(socket: &Path) -> Result<UnixListener, ApiError> {
    let path = socket.display().to_string();
    let failed = |source: std::io::Error| ApiError::Socket {
        path: path.clone(),
        source,
    };
    let name = socket.file_name().ok_or_else(|| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the socket path has no file name",
        ))
    })?;
    let dir = socket
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = dir.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // Left by an earlier run that had this pid and crashed between the bind and the rename.
    match std::fs::symlink_metadata(&staging) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&staging).map_err(&failed)?,
        Ok(_) => std::fs::remove_file(&staging).map_err(&failed)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(&failed)?;
    let staged = staging.join("s");
    let bound = UnixListener::bind(&staged)
        .map_err(|source| ApiError::Listen {
            address: path.clone(),
            source,
        })
        .and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(SOCKET_MODE))
                .and_then(|()| std::fs::rename(&staged, socket))
                .map_err(&failed)?;
            Ok(listener)
        });
    // Empty once the socket moved; on failure it still holds the staged socket.
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

/// The descriptors of the agent service alone (and what its file imports): the proto crate's
/// set also holds the indexer's API, which this socket does not serve.
fn served_descriptors() -> Result<prost_types::FileDescriptorSet, ApiError> {
    use prost::Message as _;
    let all = prost_types::FileDescriptorSet::decode(attestmesh_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| ApiError::Reflection(format!("the proto descriptor set: {e}")))?;
    let defines_agent = |file: &prost_types::FileDescriptorProto| {
        file.service.iter().any(|service| {
            format!("{}.{}", file.package(), service.name()) == pb::agent_server::SERVICE_NAME
        })
    };
    let mut wanted: Vec<String> = all
        .file
        .iter()
        .filter(|file| defines_agent(file))
        .map(|file| file.name().to_string())
        .collect();
    if wanted.is_empty() {
        return Err(ApiError::Reflection(format!(
            "no descriptor defines {}",
            pb::agent_server::SERVICE_NAME
        )));
    }
    let mut i = 0;
    while let Some(name) = wanted.get(i).cloned() {
        if let Some(file) = all.file.iter().find(|file| file.name() == name) {
            for dependency in &file.dependency {
                if !wanted.contains(dependency) {
                    wanted.push(dependency.clone());
                }
            }
        }
        i += 1;
    }
    Ok(prost_types::FileDescriptorSet {
        file: all
            .file
            .into_iter()
            .filter(|file| wanted.iter().any(|name| name == file.name()))
            .collect(),
    })
}

/// The one place an error becomes a gRPC status (its message redacted like a log line).
fn to_status(error: &SendError) -> Status {
    let message = public(&error.to_string());
    match error {
        SendError::NotRegistered => Status::unavailable(message),
        SendError::UnknownRecipient(_) => Status::not_found(message),
        SendError::RecipientRevoked(_) => Status::failed_precondition(message),
        SendError::Message(crate::messages::MessageError::TooLarge { .. }) => {
            Status::invalid_argument(message)
        }
        SendError::Message(_) => Status::internal(message),
        SendError::UserOp(attestmesh_chain::UserOpError::SponsorshipRefused { .. }) => {
            Status::permission_denied(message)
        }
        SendError::UserOp(e) if e.is_transient() => Status::unavailable(message),
        SendError::UserOp(_) => Status::aborted(message),
    }
}

/// Text for a surface others read (`/healthz`, `/status`, gRPC statuses): every URL in it cut
/// down to scheme, host and port. The errors it comes from already name endpoints that way
/// ([`attestmesh_chain::redact`]); this is the last line, for a URL nobody listed.
fn public(text: &str) -> String {
    attestmesh_chain::redact::urls_in(text)
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

struct AgentApi {
    node: Node,
    shutdown: Shutdown,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `stream`, ended at shutdown. A subscription never ends by itself, and the server's graceful
/// shutdown waits for every open stream: without this an app holding a subscription would
/// keep the agent from stopping.
fn until_shutdown<T: Send + 'static>(
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    shutdown: &Shutdown,
) -> BoxStream<T> {
    let stop = tokio_stream::wrappers::WatchStream::new(shutdown.receiver())
        .filter_map(|cancelled| cancelled.then_some(None));
    Box::pin(
        stream
            .map(Some)
            .merge(stop)
            .take_while(Option::is_some)
            .filter_map(|item| item),
    )
}

fn to_pb_message(m: &InboundMessage) -> pb::InboundMessage {
    pb::InboundMessage {
        sender_member_id: m.sender_id,
        payload: m.payload.clone(),
        envelope_id: m.envelope_id.to_vec(),
        block_number: m.block_number,
        transaction_hash: m.tx_hash.to_string(),
        cursor: m.cursor().encode(),
    }
}

#[tonic::async_trait]
impl Agent for AgentApi {
    async fn get_mesh_status(
        &self,
        _: Request<pb::GetMeshStatusRequest>,
    ) -> Result<tonic::Response<pb::MeshStatus>, Status> {
        let s = self.node.health.snapshot();
        Ok(tonic::Response::new(pb::MeshStatus {
            phase: s.phase.as_str().into(),
            csk_acquired: s.csk_acquired,
            first_converged: s.first_converged,
            live_peers: s.live_peers,
            waiting_for: public(&s.waiting_for),
        }))
    }

    async fn get_self(
        &self,
        _: Request<pb::GetSelfRequest>,
    ) -> Result<tonic::Response<pb::SelfInfo>, Status> {
        let identity = &self.node.identity;
        let self_id = self.node.cluster.self_id().await;
        let member = match self_id {
            Some(id) => self.node.cluster.member(id).await,
            None => None,
        };
        Ok(tonic::Response::new(pb::SelfInfo {
            member_id: self_id.unwrap_or_default(),
            account: identity.account.to_string(),
            mesh_ip: member.map(|m| m.mesh_ip.to_string()).unwrap_or_default(),
            ed25519_public_key: identity.ed25519_public().to_vec(),
            x25519_public_key: identity.x25519_public().to_vec(),
            wireguard_public_key: identity.wireguard_public().to_vec(),
            cluster: self.node.cluster_address.to_string(),
            chain_id: self.node.chain.chain_id(),
        }))
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<tonic::Response<pb::ListPeersResponse>, Status> {
        let include_revoked = request.into_inner().include_revoked;
        let self_id = self.node.cluster.self_id().await;
        let liveness = self.node.peer_liveness.read().await.clone();
        let peers = self
            .node
            .cluster
            .members()
            .await
            .into_iter()
            .filter(|m| include_revoked || m.active)
            .map(|m| pb::Peer {
                member_id: m.id,
                account: m.account.to_string(),
                mesh_ip: m.mesh_ip.to_string(),
                status: if m.active { "active" } else { "revoked" }.into(),
                // Liveness comes from verified heartbeats (the mesh); none are seen without it.
                live: liveness.get(&m.id).is_some_and(|l| l.live),
                last_heartbeat_age_ms: liveness
                    .get(&m.id)
                    .and_then(|l| l.last_heartbeat)
                    .map(|at| at.elapsed().as_millis() as u64),
                is_self: Some(m.id) == self_id,
            })
            .collect();
        Ok(tonic::Response::new(pb::ListPeersResponse { peers }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<tonic::Response<pb::SendMessageResponse>, Status> {
        let request = request.into_inner();
        if request.recipient_member_id == 0 {
            return Err(Status::invalid_argument(
                "recipient_member_id must be a member id (ids start at 1)",
            ));
        }
        if request.payload.is_empty() {
            return Err(Status::invalid_argument("payload is empty"));
        }
        if request.payload.len() > MAX_PAYLOAD {
            return Err(Status::invalid_argument(format!(
                "payload of {} bytes is over the {MAX_PAYLOAD}-byte limit",
                request.payload.len()
            )));
        }
        let sent = tokio::time::timeout(
            SEND_TIMEOUT,
            send_message(&self.node, request.recipient_member_id, &request.payload),
        )
        .await
        .map_err(|_| {
            Status::deadline_exceeded(
                "the sponsored operation was not included in time; it may still land",
            )
        })?;
        let (envelope_id, receipt) = sent.map_err(|e| {
            warn!(target: API, error = %e, "SendMessage failed");
            to_status(&e)
        })?;
        Ok(tonic::Response::new(pb::SendMessageResponse {
            envelope_id: envelope_id.to_vec(),
            user_operation_hash: receipt.user_op_hash.to_string(),
            transaction_hash: receipt.receipt.transaction_hash.to_string(),
            block_number: receipt.receipt.block_number.to::<u64>(),
        }))
    }

    type SubscribeMessagesStream = BoxStream<pb::InboundMessage>;

    async fn subscribe_messages(
        &self,
        request: Request<pb::SubscribeMessagesRequest>,
    ) -> Result<tonic::Response<Self::SubscribeMessagesStream>, Status> {
        let cursor_text = request.into_inner().cursor;
        let cursor = if cursor_text.is_empty() {
            None
        } else {
            Some(Cursor::parse(&cursor_text).map_err(Status::invalid_argument)?)
        };
        let (backlog, live) = self.node.inbox.since(cursor).await;
        let last = backlog.last().map(InboundMessage::cursor).or(cursor);
        let backlog = tokio_stream::iter(backlog.into_iter().map(|m| Ok(to_pb_message(&m))));
        let live = BroadcastStream::new(live).filter_map(move |item| match item {
            // Skip anything the backlog already carried.
            Ok(m) if last.is_none_or(|c| m.cursor() > c) => Some(Ok(to_pb_message(&m))),
            Ok(_) => None,
            Err(_) => Some(Err(Status::data_loss(
                "the subscriber fell behind; resubscribe with the last cursor",
            ))),
        });
        Ok(tonic::Response::new(until_shutdown(
            backlog.chain(live),
            &self.shutdown,
        )))
    }

    type SubscribePeerEventsStream = BoxStream<pb::PeerEvent>;

    async fn subscribe_peer_events(
        &self,
        _: Request<pb::SubscribePeerEventsRequest>,
    ) -> Result<tonic::Response<Self::SubscribePeerEventsStream>, Status> {
        let stream = BroadcastStream::new(self.node.cluster.subscribe()).map(|item| match item {
            Ok(event) => Ok(pb::PeerEvent {
                kind: match event.kind {
                    PeerEventKind::Joined => pb::peer_event::Kind::Joined,
                    PeerEventKind::Revoked => pb::peer_event::Kind::Revoked,
                    PeerEventKind::Live => pb::peer_event::Kind::Live,
                    PeerEventKind::Down => pb::peer_event::Kind::Down,
                } as i32,
                member_id: event.member_id,
                mesh_ip: event.mesh_ip.to_string(),
                at_unix_ms: event.at_unix_ms,
            }),
            Err(_) => Err(Status::data_loss("the subscriber fell behind; resubscribe")),
        });
        Ok(tonic::Response::new(until_shutdown(stream, &self.shutdown)))
    }

    async fn get_cluster_shared_key(
        &self,
        _: Request<pb::GetClusterSharedKeyRequest>,
    ) -> Result<tonic::Response<pb::ClusterSharedKey>, Status> {
        let snapshot = self.node.health.snapshot();
        if !snapshot.is_healthy() {
            return Err(Status::failed_precondition(format!(
                "the health gates have not passed (phase {}, waiting for: {})",
                snapshot.phase.as_str(),
                public(&snapshot.waiting_for)
            )));
        }
        cluster_shared_key(&self.node.csk)
            .await
            .map(tonic::Response::new)
            .ok_or_else(|| Status::failed_precondition("the CSK is not held"))
    }

    type SubscribeClusterSharedKeyStream = BoxStream<pb::ClusterSharedKey>;

    async fn subscribe_cluster_shared_key(
        &self,
        _: Request<pb::SubscribeClusterSharedKeyRequest>,
    ) -> Result<tonic::Response<Self::SubscribeClusterSharedKeyStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (keys, health) = (self.node.csk.clone(), self.node.health.clone());
        tokio::spawn(async move {
            let mut held = keys.subscribe();
            let mut gates = health.subscribe();
            let mut sent: Option<u64> = None;
            loop {
                // Sent once the gates pass, then at every new epoch this node comes to hold.
                let epoch = *held.borrow_and_update();
                if gates.borrow_and_update().is_healthy()
                    && epoch.is_some()
                    && epoch != sent
                    && let Some(key) = cluster_shared_key(&keys).await
                {
                    sent = Some(key.epoch);
                    info!(target: API, epoch = key.epoch, "CSK epoch pushed to a subscriber");
                    if tx.send(Ok(key)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = held.changed() => if changed.is_err() { return },
                    changed = gates.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(tonic::Response::new(until_shutdown(stream, &self.shutdown)))
    }
}

/// What the node holds, as the API returns it (None while no epoch is held).
async fn cluster_shared_key(keys: &crate::csk::CskKeys) -> Option<pb::ClusterSharedKey> {
    let held = keys.snapshot(crate::cluster::now_ms() / 1000).await;
    let (epoch, key) = held.current?;
    Some(pb::ClusterSharedKey {
        commitment: crate::csk::commitment_of(&key).to_vec(),
        key: key.to_vec(),
        epoch,
        previous: held
            .previous
            .map(|(epoch, key, until)| pb::PreviousClusterSharedKey {
                epoch,
                commitment: crate::csk::commitment_of(&key).to_vec(),
                key: key.to_vec(),
                valid_until_unix: until,
            }),
    })
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn public_text_carries_no_url_beyond_its_origin() {
        let text =
            "bundler eth_sendUserOperation at http://127.0.0.1:4337/v2/KEY?apikey=Q: no answer";
        assert_eq!(
            public(text),
            "bundler eth_sendUserOperation at http://127.0.0.1:4337: no answer"
        );
    }

    /// Item 7 of issue 16: the socket was bound with the process umask's mode and chmodded
    /// after, so it existed for a moment with a wider mode. A watcher that stats the path as
    /// fast as it can, while the socket is bound again and again, never sees a mode wider than
    /// 0660 (before the fix it saw 0755 under the usual umask 022).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_api_socket_never_exists_with_a_wider_mode_than_0660() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (socket, done) = (socket.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(meta) = std::fs::symlink_metadata(&socket) {
                        seen.insert(meta.permissions().mode() & 0o7777);
                    }
                }
                seen
            })
        };
        for _ in 0..500 {
            let listener = bind_socket(&socket).unwrap();
            let meta = std::fs::symlink_metadata(&socket).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.permissions().mode() & 0o7777, SOCKET_MODE);
            drop(listener);
            std::fs::remove_file(&socket).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert!(!seen.is_empty(), "the watcher never saw the socket");
        assert!(
            seen.iter().all(|mode| mode & !SOCKET_MODE == 0),
            "the socket existed with modes {:?}",
            seen.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>()
        );
        // Nothing is left beside it.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
