//! Generated gRPC types and services. Protobuf types stay at the API edge: the agent converts
//! them to domain types in one place.

#![allow(
    missing_docs,
    clippy::all,
    unreachable_pub,
    missing_debug_implementations
)]

pub mod agent {
    pub mod v1 {
        tonic::include_proto!("attestmesh.agent.v1");
    }

    use std::path::{Path, PathBuf};

    /// A gRPC client on the agent's unix socket: the one way every AttestMesh program (the
    /// agent's `status`, the testbed demo, the tests) reaches an agent's API.
    pub async fn connect_unix(
        socket: &Path,
    ) -> Result<v1::agent_client::AgentClient<tonic::transport::Channel>, tonic::transport::Error>
    {
        Ok(v1::agent_client::AgentClient::new(
            unix_channel(socket).await?,
        ))
    }

    /// The gRPC channel under [`connect_unix`] (for hand-built requests).
    pub async fn unix_channel(
        socket: &Path,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let path: PathBuf = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector always dials the socket.
        tonic::transport::Endpoint::from_static("http://agent.local")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    }
}

pub mod indexer {
    pub mod v1 {
        tonic::include_proto!("attestmesh.indexer.v1");

        /// Domain tag at the start of every signed payload: a signature over an indexer event
        /// can never be replayed as any other AttestMesh signature.
        pub const SIGNING_DOMAIN: &[u8] = b"attestmesh.indexer.v1.SignedEvent\0";

        /// The canonical bytes the indexer signs for one event, and the one definition both
        /// the indexer (signing) and nodes (verifying) use: the domain tag, the chain id, a
        /// kind byte (1 = log, 2 = reorg) and every field of the body in declaration order;
        /// integers as 8 bytes big-endian, byte strings and the topic list prefixed with their
        /// length as 4 bytes big-endian. Unambiguous for any field lengths, so a verifier need
        /// not trust lengths before checking the signature.
        pub fn signing_payload(chain_id: u64, body: &signed_event::Body) -> Vec<u8> {
            fn bytes(out: &mut Vec<u8>, value: &[u8]) {
                // A protobuf field is far below 4 GiB; saturate rather than wrap if not.
                let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(value);
            }
            let mut out = Vec::with_capacity(256);
            out.extend_from_slice(SIGNING_DOMAIN);
            out.extend_from_slice(&chain_id.to_be_bytes());
            match body {
                signed_event::Body::Log(log) => {
                    out.push(1);
                    out.extend_from_slice(&log.block_number.to_be_bytes());
                    bytes(&mut out, &log.block_hash);
                    bytes(&mut out, &log.transaction_hash);
                    out.extend_from_slice(&log.transaction_index.to_be_bytes());
                    out.extend_from_slice(&log.log_index.to_be_bytes());
                    bytes(&mut out, &log.address);
                    let topics = u32::try_from(log.topics.len()).unwrap_or(u32::MAX);
                    out.extend_from_slice(&topics.to_be_bytes());
                    for topic in &log.topics {
                        bytes(&mut out, topic);
                    }
                    bytes(&mut out, &log.data);
                }
                signed_event::Body::Reorg(reorg) => {
                    out.push(2);
                    out.extend_from_slice(&reorg.from_block.to_be_bytes());
                }
            }
            out
        }
    }
}

/// The encoded file descriptor set of every AttestMesh proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/attestmesh_descriptor.bin"));
