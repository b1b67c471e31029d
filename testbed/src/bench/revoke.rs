//! Revocation in a running cluster (at Base's cadence): the owner revokes the last member, or
//! member 1 (the originator of the current CSK epoch), and the harness times, from sending the
//! transaction, its inclusion, every remaining member holding the new epoch's key and the
//! revoked member leaving every remaining attestmesh0, beside the agents' own metrics for the
//! same. Also the revocation table, against the key (3 blocks + 1 s) and drop (1 block + one
//! reconcile pass) targets counted from inclusion.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use eyre::WrapErr;
use tokio::time::Instant;

use super::figures::{secs, verdict};
use super::setup::start_all_and_wait_whole;
use super::{Bench, Cadence, WAIT_LIMIT};

/// The agent's reconcile loop period (peering.rs), part of the drop target.
const RECONCILE_PASS_SECS: f64 = 0.5;

/// The figures of one revocation, each from sending the revoke transaction.
#[derive(Debug)]
pub(super) struct RevokeRun {
    size: usize,
    /// Which member was revoked: the last one, or member 1 (the originator of the epoch).
    revoked: u64,
    /// Until the chain showed the new epoch (polled every 50 ms).
    included: Duration,
    /// Until every remaining member held the new epoch's key.
    key: Duration,
    /// Until the revoked member was off every remaining member's attestmesh0.
    dropped: Duration,
    /// The largest of the agents' own figures (`csk_epoch_acquire_seconds`,
    /// `revoked_peer_removal_seconds`: from the chain time of the revocation's block).
    agent_key_secs: f64,
    agent_drop_secs: f64,
}

impl Bench<'_> {
    /// A whole cluster of `size` nodes at Base's cadence; then the owner revokes the last
    /// member (or member 1, the epoch's originator). Polled every 100 ms from sending the
    /// transaction: the chain's epoch, each remaining node's held epoch and attestmesh0 peers.
    pub(super) async fn revoke_run(
        &mut self,
        dir: &Path,
        size: usize,
        revoke_first: bool,
    ) -> eyre::Result<RevokeRun> {
        use alloy::sol_types::SolCall;
        if size < 3 {
            eyre::bail!("a revocation needs at least 3 nodes (one revoked, two that rotate)");
        }
        let cadence = Cadence::BASE;
        let mut metered = self.prepare(dir, size, cadence).await?;
        let cluster = &mut metered.cluster;
        start_all_and_wait_whole(cluster, size).await?;
        tokio::time::sleep(cadence.settle()).await;
        let mut ids = Vec::new();
        for node in &cluster.nodes {
            ids.push(node.get_self().await?.member_id);
        }
        let revoked = if revoke_first { 1 } else { size as u64 };
        let remaining: Vec<usize> = (0..size).filter(|i| ids[*i] != revoked).collect();
        let operator = cluster.stack.chain.operator_client().clone();
        let address = cluster.stack.cluster;
        let before = operator.current_csk_epoch(address).await?.epoch;
        let data = attestmesh_bindings::cluster::Cluster::revokeMemberCall { memberId: revoked }
            .abi_encode();
        let sent = Instant::now();
        let send = {
            let operator = operator.clone();
            tokio::spawn(async move {
                operator
                    .send_transaction("Cluster.revokeMember", address, data.into())
                    .await
            })
        };
        let (mut included, mut key, mut dropped) = (None, vec![None; size], vec![None; size]);
        loop {
            if included.is_none() && operator.current_csk_epoch(address).await?.epoch > before {
                included = Some(sent.elapsed());
            }
            for &i in &remaining {
                let node = &cluster.nodes[i];
                if key[i].is_none()
                    && node
                        .metric("attestmesh_agent_csk_epoch")
                        .await?
                        .is_some_and(|epoch| epoch > before as f64)
                {
                    key[i] = Some(sent.elapsed());
                }
                if dropped[i].is_none()
                    && node
                        .metric("attestmesh_agent_mesh_peers")
                        .await?
                        .is_some_and(|peers| peers == (size - 2) as f64)
                {
                    dropped[i] = Some(sent.elapsed());
                }
            }
            let done = |at: &[Option<Duration>]| remaining.iter().all(|&i| at[i].is_some());
            if included.is_some() && done(&key) && done(&dropped) {
                break;
            }
            if sent.elapsed() > WAIT_LIMIT {
                eyre::bail!(
                    "after revoking member {revoked} of {size}: not every remaining node held \
                     the new epoch and dropped it within {WAIT_LIMIT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        send.await
            .wrap_err("the revoke transaction task failed")?
            .wrap_err("the revoke transaction failed")?;
        let latest = |at: &[Option<Duration>]| {
            remaining
                .iter()
                .filter_map(|&i| at[i])
                .max()
                .ok_or_else(|| eyre::eyre!("no remaining node to measure"))
        };
        let (mut agent_key_secs, mut agent_drop_secs) = (0.0f64, 0.0f64);
        for &i in &remaining {
            let node = &cluster.nodes[i];
            let metric = |name: &'static str| async move {
                node.metric(name)
                    .await?
                    .ok_or_else(|| eyre::eyre!("{}: /metrics has no {name}", node.name))
            };
            agent_key_secs =
                agent_key_secs.max(metric("attestmesh_agent_csk_epoch_acquire_seconds").await?);
            agent_drop_secs =
                agent_drop_secs.max(metric("attestmesh_agent_revoked_peer_removal_seconds").await?);
        }
        let run = RevokeRun {
            size,
            revoked,
            included: included.ok_or_else(|| eyre::eyre!("the revocation was never seen"))?,
            key: latest(&key)?,
            dropped: latest(&dropped)?,
            agent_key_secs,
            agent_drop_secs,
        };
        println!(
            "[bench]   included after {:.2} s; every remaining member holds the new epoch after \
             {:.2} s and dropped member {revoked} after {:.2} s",
            secs(run.included),
            secs(run.key),
            secs(run.dropped)
        );
        Ok(run)
    }
}

/// The revocation table: the new epoch's key and the drop, from sending and from inclusion.
pub(super) fn revoke_section(runs: &[RevokeRun]) -> eyre::Result<String> {
    if runs.is_empty() {
        return Ok(String::new());
    }
    let block = Cadence::BASE.0.unwrap_or(2) as f64;
    let key_target = 3.0 * block + 1.0;
    let drop_target = block + RECONCILE_PASS_SECS;
    let mut out = String::from(
        "## Revocation: CSK rotation and the drop from the mesh

",
    );
    writeln!(
        out,
        "A whole cluster at {}, left three blocks to settle; then the owner revokes the last \
         member, or member 1 (the originator of the current epoch, so the next member derives \
         and commits the new one). Seconds from sending the revoke transaction (the harness's \
         clock, polling every 100 ms): until the chain shows the new epoch (included), until \
         every remaining member holds its key, and until the revoked member is off every \
         remaining member's attestmesh0. The targets count from inclusion: the key \
         ≤ 3 blocks + 1 s ({key_target:.0} s), the drop ≤ 1 block + one reconcile pass \
         ({drop_target:.1} s). The last two columns are the agents' own metrics \
         (`attestmesh_agent_csk_epoch_acquire_seconds`, \
         `attestmesh_agent_revoked_peer_removal_seconds`, the largest over the remaining nodes), \
         counted from the revocation block's timestamp (1 s resolution).\n",
        Cadence::BASE.label()
    )?;
    out.push_str(
        "| nodes | revoked | included | every member holds the new key | after inclusion | target \
         | off every attestmesh0 | after inclusion | target | agents: key / drop |\n\
         | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- |\n",
    );
    for run in runs {
        let key_after = secs(run.key) - secs(run.included);
        let drop_after = secs(run.dropped) - secs(run.included);
        writeln!(
            out,
            "| {} | {} | {:.2} s | {:.2} s | {key_after:.2} s | {} | {:.2} s | {drop_after:.2} s \
             | {} | {:.1} s / {:.1} s |",
            run.size,
            if run.revoked == 1 {
                "member 1 (originator)".to_string()
            } else {
                format!("member {}", run.revoked)
            },
            secs(run.included),
            secs(run.key),
            verdict(key_after <= key_target, &format!("≤ {key_target:.0} s")),
            secs(run.dropped),
            verdict(drop_after <= drop_target, &format!("≤ {drop_target:.1} s")),
            run.agent_key_secs,
            run.agent_drop_secs,
        )?;
    }
    out.push('\n');
    Ok(out)
}
