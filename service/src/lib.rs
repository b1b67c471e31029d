//! What every AttestMesh binary (the agent, the indexer, the webhook, the operator and devnet
//! tools) shares, written once: the [`shutdown`] signal all of a process's tasks watch, tripped
//! by SIGINT or SIGTERM, [`logging`] with its human/JSON switch and the ANSI rule of field
//! note 9, TCP listeners bound one way ([`listen`]) and the small HTTP servers beside each
//! binary's main job ([`http`]).

pub mod http;
pub mod listen;
pub mod logging;
pub mod report;
pub mod shutdown;

pub use logging::LogFormat;
pub use shutdown::Shutdown;
