//! Sending an app message: sealed to the recipient's key, carried on chain by a sponsored
//! UserOperation on the message lane.

use std::time::Duration;

use alloy::primitives::B256;
use alloy::sol_types::SolCall;
use attestmesh_bindings::cluster::Cluster;
use attestmesh_bindings::member_account::MemberAccount;

use crate::messages::{self, Context, Kind};
use crate::outbox::MESSAGE_LANE;
use crate::state::Node;

/// Seals and sends an app message; returns the envelope id and the operation's receipt.
pub async fn send_message(
    node: &Node,
    recipient_id: u64,
    payload: &[u8],
) -> Result<(B256, attestmesh_types::UserOperationReceipt), SendError> {
    let self_id = node
        .cluster
        .self_id()
        .await
        .ok_or(SendError::NotRegistered)?;
    let recipient = node
        .cluster
        .member(recipient_id)
        .await
        .ok_or(SendError::UnknownRecipient(recipient_id))?;
    if !recipient.active {
        return Err(SendError::RecipientRevoked(recipient_id));
    }
    let envelope_id = B256::from(messages::new_envelope_id());
    let context = Context {
        chain_id: node.chain.chain_id(),
        cluster: node.cluster_address.into_array(),
        sender_id: self_id,
        recipient_id,
        envelope_id: envelope_id.0,
    };
    let ciphertext = messages::seal(
        &node.identity.ed25519,
        &recipient.x25519,
        &context,
        Kind::App,
        payload,
    )?;
    let inner = Cluster::sendCall {
        recipientMemberId: recipient_id,
        envelopeId: envelope_id,
        ciphertext: ciphertext.into(),
    }
    .abi_encode();
    let call = MemberAccount::executeCall { data: inner.into() }.abi_encode();
    let receipt = node
        .sender
        .send_on(MESSAGE_LANE, call.into(), None)
        .await
        .inspect_err(|_| {
            node.metrics.user_operations_failed.inc();
        })?;
    node.metrics.operation_included("message");
    node.metrics.messages_sent.inc();
    Ok((envelope_id, receipt))
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("this node is not registered yet")]
    NotRegistered,
    #[error("no member has id {0}")]
    UnknownRecipient(u64),
    #[error("member {0} is revoked")]
    RecipientRevoked(u64),
    #[error(transparent)]
    Message(#[from] messages::MessageError),
    #[error(transparent)]
    UserOp(#[from] attestmesh_chain::UserOpError),
}

/// How long the API waits for a send before giving up (the op may still land).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(120);
