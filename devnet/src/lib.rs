//! The AttestMesh local devnet: emulators of what a node meets in production, one module each,
//! and the `attestmesh-devnet` command that runs them (see [`cli`]).
//!
//! Stand-ins for what cannot run here: [`dstack_simulator`], [`gateway`], [`gas_manager`], a
//! [`bundler`] (and the real [`alto`]), a [`fault_proxy`] for chain RPC faults. Around them: the
//! [`local_chain`], the whole [`stack`] with `up`/`down` ([`up`]), [`netns`] test hosts, a
//! [`cluster`] of real agents in namespaces, and the [`demo`] that shows one working. The
//! project's tests share its [`test_logs`] set-up.

pub mod alto;
pub mod bench;
pub mod bundler;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod dstack_simulator;
pub mod fault_proxy;
pub mod gas_manager;
pub mod gateway;
pub mod local_chain;
pub mod netns;
pub mod stack;
pub mod test_logs;
pub mod up;
