//! The AttestMesh testbed: real `cluster-mesh-agent` processes on the local devnet, each in its
//! own network namespace with its own attestmesh0 — what the tests, the demo and the benchmark
//! run. It depends on the devnet (`attestmesh-devnet`, the stand-ins for what cannot run here),
//! never the reverse.
//!
//! [`netns`] makes test hosts (namespaces, veth links, cleanup by name); [`cluster`] starts a
//! devnet [`Stack`](attestmesh_devnet::stack::Stack) and N agents in them and reads their health,
//! metrics and API; [`demo`] shows one working (`make demo`); [`bench`](mod@bench) measures clusters at
//! Base's 2 s blocks and writes `bench/RESULTS.md` (`make bench`); [`cli`] is the
//! `attestmesh-testbed` command.

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod netns;
