//! The app-facing surfaces: the gRPC API on a unix socket (with gRPC health and server
//! reflection, so generic clients work), and `/healthz`, `/status`, `/metrics` on the health
//! port ([`serve_health`], closed to the mesh). `to_status` is the one place errors become gRPC
//! statuses; protobuf types stay in here.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;

use attestmesh_proto::agent::v1 as pb;
use attestmesh_proto::agent::v1::agent_server::{Agent, AgentServer};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{BroadcastStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};
use tracing::{info, warn};

use crate::cluster::PeerEventKind;
use crate::inbox::{Cursor, InboundMessage};
use crate::messages::MAX_PAYLOAD;
use crate::send::{SEND_TIMEOUT, SendError, send_message};
use crate::shutdown::Shutdown;
use crate::state::Node;
use crate::targets::API;

mod health_endpoint;

pub use health_endpoint::{WAITING_FOR_HEADER, serve_health};

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
