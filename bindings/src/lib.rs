//! Contract bindings, generated at compile time by `sol!` from the ABI JSON committed in
//! `bindings/abi/`. `make bindings` rewrites those files from the contracts (forge build +
//! tools/export-abi.js) and CI fails when the committed files differ, so these types always
//! match the deployed code. Chain types come from here only.
//!
//! Each contract lives in its own module because `sol!` emits the ABI's structs (e.g.
//! `DstackProof`, `PackedUserOperation`) at module level. `cluster::Cluster` is the diamond's
//! whole ABI (the union of its facets), so one `DstackProof` type serves every facet call.

#![allow(missing_docs, clippy::too_many_arguments)]

/// The cluster diamond: every facet's functions, events and errors.
pub mod cluster {
    alloy::sol!(
        #[sol(rpc, all_derives)]
        Cluster,
        "abi/Cluster.json"
    );
}

/// The factory of clusters and member accounts.
pub mod factory {
    alloy::sol!(
        #[sol(rpc, all_derives)]
        ClusterFactory,
        "abi/ClusterFactory.json"
    );
}

/// A node's ERC-4337 account.
pub mod member_account {
    alloy::sol!(
        #[sol(rpc, all_derives)]
        MemberAccount,
        "abi/MemberAccount.json"
    );
}

/// The verifying paymaster.
pub mod paymaster {
    alloy::sol!(
        #[sol(rpc, all_derives)]
        VerifyingPaymaster,
        "abi/VerifyingPaymaster.json"
    );
}

/// The indexer registry.
pub mod indexer_registry {
    alloy::sol!(
        #[sol(rpc, all_derives)]
        IndexerRegistry,
        "abi/IndexerRegistry.json"
    );
}

/// EntryPoint v0.7 (from the npm artifact).
pub mod entry_point {
    alloy::sol!(
        #[sol(rpc, all_derives)]
        EntryPoint,
        "abi/EntryPoint.json"
    );
}

/// EntryPoint v0.7's canonical address, the same on Base and on the devnet.
pub const ENTRY_POINT_V07: alloy::primitives::Address =
    alloy::primitives::address!("0x0000000071727De22E5E9d8BAf0edAc6f37da032");
