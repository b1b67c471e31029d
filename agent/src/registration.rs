//! The `registering` phase: an attested, sponsored, restart-safe `dstack_register`.
//!
//! An existing member record for this account skips straight on (restart safety). Otherwise
//! the node builds the DstackProof from its owner key's GetKey reply, pre-flights it with
//! `verifyDstackProof`, asks the sponsorship policy, and submits the sponsored `register`,
//! retrying with backoff while the operator's allowlist entries land; /healthz's
//! `x-attestmesh-waiting-for` header and the log say what it waits for.

use std::time::Duration;

use alloy::primitives::Address;
use attestmesh_bindings::cluster::Cluster::Member;
use attestmesh_chain::proof::{dstack_proof, register_call_data};
use attestmesh_chain::{ChainClient, ChainError, SponsoredSender, UserOpError};
use tracing::{info, warn};

use crate::health::{Health, Phase};
use crate::identity::{Identity, OWNER_PURPOSE};
use crate::targets::AGENT;

/// A registration that cannot succeed by waiting.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(
        "member {id} of cluster {cluster} holds other keys than this node derives: a live member cannot change keys; the operator must revoke it"
    )]
    KeysMismatch { id: u64, cluster: Address },
    #[error(
        "member {id} of cluster {cluster} is revoked: this account can never rejoin; use a new member account"
    )]
    Revoked { id: u64, cluster: Address },
    #[error("this node's dstack proof does not verify on chain: {0}")]
    InvalidProof(String),
    #[error("cannot build the registration proof: {0}")]
    Proof(#[from] attestmesh_chain::proof::ProofError),
}

/// Backoff between registration attempts: doubles up to the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// Registers the node (or finds its existing record) and returns its member record.
pub async fn ensure_registered(
    chain: &ChainClient,
    sender: &SponsoredSender,
    identity: &Identity,
    cluster: Address,
    health: &Health,
    metrics: &crate::metrics::Metrics,
    backoff: &Backoff,
) -> Result<Member, RegistrationError> {
    let keys = identity.node_keys();
    let mut delay = backoff.initial;
    let mut wait = |reason: String| {
        health.set_phase(Phase::Registering, reason);
        let current = delay;
        delay = (delay * 2).min(backoff.max);
        tokio::time::sleep(current)
    };
    loop {
        match chain.member_of(cluster, identity.account).await {
            Ok(Some(member)) => {
                if member.status == 2 {
                    return Err(RegistrationError::Revoked {
                        id: member.id,
                        cluster,
                    });
                }
                if member.keys != keys || member.signer != identity.owner.address() {
                    return Err(RegistrationError::KeysMismatch {
                        id: member.id,
                        cluster,
                    });
                }
                info!(target: AGENT, member = member.id, mesh_ip = %std::net::Ipv4Addr::from(member.meshIp), "registered");
                return Ok(member);
            }
            Ok(None) => {}
            Err(error) => {
                warn!(target: AGENT, %error, "reading the member record failed");
                wait(format!("chain RPC: {error}")).await;
                continue;
            }
        }

        let digest = match chain
            .registration_digest(cluster, identity.account, keys.clone())
            .await
        {
            Ok(digest) => digest,
            Err(error) => {
                wait(format!("chain RPC: {error}")).await;
                continue;
            }
        };
        let proof = dstack_proof(
            identity.account,
            OWNER_PURPOSE,
            &identity.owner_reply,
            digest,
        )?;
        match chain.verify_dstack_proof(cluster, proof.clone()).await {
            Ok((signer, kms_root)) => {
                info!(target: AGENT, %signer, %kms_root, "dstack proof verifies on chain")
            }
            Err(ChainError::Reverted { reason, .. }) => {
                return Err(RegistrationError::InvalidProof(reason));
            }
            Err(error) => {
                wait(format!("chain RPC: {error}")).await;
                continue;
            }
        }
        let call_data = register_call_data(proof, &keys);
        match chain
            .check_sponsorship(cluster, identity.account, call_data.clone())
            .await
        {
            Ok(decision) if !decision.sponsorable => {
                warn!(target: AGENT, reason = %decision.reason, "registration not sponsorable yet; waiting for the operator");
                wait(format!("operator: {}", decision.reason)).await;
                continue;
            }
            Ok(_) => {}
            Err(error) => {
                wait(format!("chain RPC: {error}")).await;
                continue;
            }
        }
        health.set_phase(Phase::Registering, "sponsored dstack_register in flight");
        match sender
            .send_on(crate::outbox::REGISTRATION_LANE, call_data, None)
            .await
        {
            Ok(receipt) => {
                metrics.operation_included("registration");
                info!(target: AGENT, tx = %receipt.receipt.transaction_hash, "dstack_register included");
            }
            Err(error @ UserOpError::SponsorshipRefused { .. }) => {
                warn!(target: AGENT, %error, "sponsorship refused");
                wait(error.to_string()).await;
            }
            Err(error) => {
                warn!(target: AGENT, %error, transient = error.is_transient(), "dstack_register failed");
                wait(error.to_string()).await;
            }
        }
    }
}
