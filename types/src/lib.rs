//! Domain and wire types shared by every AttestMesh binary: ERC-4337 v0.7 UserOperations in
//! their JSON-RPC form, JSON-RPC 2.0 envelopes, the gas manager and paymaster webhook
//! contracts, and the hex encodings they use.

pub mod aa_errors;
pub mod gas_manager;
pub mod hex;
pub mod jsonrpc;
pub mod userop;
pub mod webhook;

pub use userop::{UserOperation, UserOperationGasEstimate, UserOperationReceipt};
