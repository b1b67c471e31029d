//! The devnet and cluster every measurement starts from: a stack at the measurement's cadence
//! with the chosen bundler (checked to be the one asked for, alto's version read for the
//! report), `size` nodes whose agents run at their own defaults, and their chain RPC through a
//! fresh counting proxy ([`Metered`]), which is how the steady state counts chain requests.
//! Also the start of every agent until the cluster is whole, which the start, join and
//! revocation runs share.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use eyre::WrapErr;

use super::{Bench, BundlerChoice, Cadence, WAIT_LIMIT};
use crate::cluster::Cluster;
use attestmesh_devnet::fault_proxy::FaultProxy;
use attestmesh_devnet::stack::StackConfig;

/// A cluster whose agents reach the chain through a counting proxy.
#[derive(Debug)]
pub(super) struct Metered {
    pub(super) cluster: Cluster,
    /// Between the agents and anvil: every chain request an agent makes passes here.
    /// Declared after the cluster, so it stops after the agents.
    pub(super) rpc: FaultProxy,
}

impl Bench<'_> {
    /// A devnet at `cadence` with the chosen bundler and `size` nodes, their agents not
    /// started, their chain RPC through a fresh counting proxy.
    pub(super) async fn prepare(
        &mut self,
        dir: &Path,
        size: usize,
        cadence: Cadence,
    ) -> eyre::Result<Metered> {
        std::fs::create_dir_all(dir)?;
        let mut config = cadence.apply(StackConfig::new(dir.join("devnet")));
        if self.args.bundler == BundlerChoice::Alto {
            // 0: alto's server picks its port (read from its log), so no other run can take it.
            config.alto_port = Some(0);
        }
        let prepared = Cluster::prepare_with(config, dir, size, &self.agent).await;
        let mut cluster = match self.args.bundler {
            BundlerChoice::Alto => prepared.wrap_err(
                "cannot run the benchmark with the real @pimlico/alto bundler (--bundler alto); \
                 `--bundler project` measures with the project's bundler instead",
            )?,
            BundlerChoice::Project => prepared?,
        };
        let bundler = match (&cluster.stack.alto, self.args.bundler) {
            (Some(_), BundlerChoice::Alto) => format!(
                "the real `@pimlico/alto` {} (node_modules), which every agent's UserOperations \
                 went through",
                alto_version()?
            ),
            (None, BundlerChoice::Project) => {
                "the project's bundler (devnet/src/bundler.rs)".to_string()
            }
            (alto, choice) => eyre::bail!(
                "asked for --bundler {choice:?} but the stack runs {} (bundler URL {})",
                if alto.is_some() {
                    "alto"
                } else {
                    "the project's bundler"
                },
                cluster.stack.bundler_url()
            ),
        };
        if self.bundler.is_none() {
            self.bundler = Some(bundler);
        }
        let ran_at = cluster.stack.config.cadence();
        if !self.ran_at.contains(&ran_at) {
            self.ran_at.push(ran_at);
        }
        // The agents' own defaults (heartbeat 2 s, chain polling 2 s): what a user runs.
        cluster.poll_interval_secs = None;
        cluster.agent_log_filter = "info".into();
        let rpc = FaultProxy::start_on(
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            cluster.stack.chain.rpc_url().clone(),
        )
        .await
        .wrap_err("cannot start the proxy that counts the agents' chain requests")?;
        cluster.chain_rpc_port = Some(
            rpc.url()
                .port()
                .ok_or_else(|| eyre::eyre!("the RPC proxy's URL {} has no port", rpc.url()))?,
        );
        Ok(Metered { cluster, rpc })
    }
}

/// alto's version, from its package.json in node_modules.
fn alto_version() -> eyre::Result<String> {
    let path = attestmesh_devnet::local_chain::project_root()
        .join("node_modules/@pimlico/alto/package.json");
    let text = std::fs::read_to_string(&path)
        .wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let package: serde_json::Value =
        serde_json::from_str(&text).wrap_err_with(|| format!("{} is not JSON", path.display()))?;
    package["version"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| eyre::eyre!("{} has no version", path.display()))
}

/// Starts the agents of the first `size` nodes and waits until the cluster is whole.
pub(super) async fn start_all_and_wait_whole(
    cluster: &mut Cluster,
    size: usize,
) -> eyre::Result<()> {
    for i in 0..size {
        cluster.start_agent(i)?;
    }
    cluster.wait_converged(WAIT_LIMIT).await?;
    Ok(())
}
