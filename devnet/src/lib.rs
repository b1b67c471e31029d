//! The AttestMesh local devnet: stand-ins for what a node meets in production but cannot run
//! here, one module each, and the `attestmesh-devnet` command that runs them (see [`cli`]).
//!
//! Stand-ins: [`dstack_simulator`], [`gateway`], [`gas_manager`], a [`bundler`] (and the real
//! [`alto`]), a [`fault_proxy`] for RPC faults. Around them: the [`local_chain`] (anvil with the
//! contracts), the whole [`stack`] with `up`/`down` ([`up`]). The project's tests share its
//! [`test_logs`] set-up. Real agents on top of this devnet are the testbed's job
//! (`attestmesh-testbed`: namespaces, clusters, the demo, the benchmark).

pub mod alto;
pub mod bundler;
pub mod cli;
pub mod dstack_simulator;
pub mod fault_proxy;
pub mod gas_manager;
pub mod gateway;
pub mod local_chain;
pub mod stack;
pub mod test_logs;
pub mod up;
