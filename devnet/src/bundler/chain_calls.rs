//! Reading chain RPC failures: a revert (with its data, decoded by the project's one decoder) is
//! the operation's fault and goes back to the client as an AA error; anything else is the
//! chain's fault and is reported as such, naming the call and the endpoint. Never a default.

use alloy::primitives::Bytes;
use alloy::transports::TransportError;
use attestmesh_types::jsonrpc::ErrorObject;

use super::jsonrpc_server::internal_error;

/// The revert data of a failed `eth_call` / `eth_estimateGas`: `Some` when the node said the
/// call reverted (empty when it gave no data), `None` for any other failure.
pub(crate) fn revert_data(err: &TransportError) -> Option<Bytes> {
    let response = err.as_error_resp()?;
    if let Some(data) = response.as_revert_data() {
        return Some(data);
    }
    response
        .message
        .to_lowercase()
        .contains("revert")
        .then(Bytes::new)
}

/// -32603 for a chain RPC that failed (not a revert).
pub(crate) fn chain_failure(call: &str, endpoint: &str, err: &TransportError) -> ErrorObject {
    internal_error(format!(
        "chain RPC {call} at {endpoint} failed: {err} (the operation was not judged; retry when the chain RPC is healthy)"
    ))
}
