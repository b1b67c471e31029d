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
}

/// The encoded file descriptor set of every AttestMesh proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/attestmesh_descriptor.bin"));
