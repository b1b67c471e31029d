//! The local chain: anvil + EntryPoint v0.7 at its canonical address + the deploy script.

use alloy::primitives::{Address, B256, U256};
use attestmesh_bindings::ENTRY_POINT_V07;
use attestmesh_bindings::cluster::Cluster::NodeKeys;
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig};

#[tokio::test(flavor = "multi_thread")]
async fn deploys_contracts_and_creates_a_cluster_with_member_accounts() {
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let client = chain.operator_client();
    client
        .require_code("EntryPoint", ENTRY_POINT_V07)
        .await
        .unwrap();
    assert_eq!(chain.deployment().entry_point, ENTRY_POINT_V07);

    let kms_root = Address::repeat_byte(0x42);
    let cluster = chain
        .create_cluster(
            B256::repeat_byte(1),
            0x0a58_0000,
            16,
            vec![kms_root],
            vec![B256::repeat_byte(7)],
        )
        .await
        .unwrap();
    client.require_code("cluster", cluster).await.unwrap();
    let account = chain.add_member_account(cluster, "node-1").await.unwrap();
    client
        .require_code("member account", account)
        .await
        .unwrap();

    // No member yet: an honest None, not a defaulted record.
    assert!(client.member_of(cluster, account).await.unwrap().is_none());
    let keys = NodeKeys {
        x25519: B256::repeat_byte(1),
        ed25519: B256::repeat_byte(2),
        wireguard: B256::repeat_byte(3),
    };
    let digest = client
        .registration_digest(cluster, account, keys)
        .await
        .unwrap();
    assert_ne!(digest, B256::ZERO);
    assert_eq!(
        client
            .entry_point_nonce(ENTRY_POINT_V07, account, Default::default())
            .await
            .unwrap(),
        U256::ZERO
    );
}

/// The Rust userOpHash is the EntryPoint's own (v0.7 packing, paymaster fields included).
#[tokio::test(flavor = "multi_thread")]
async fn user_op_hash_matches_the_entry_point() {
    use alloy::primitives::Bytes;
    use attestmesh_bindings::entry_point::EntryPoint;
    use attestmesh_types::UserOperation;

    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let op = UserOperation {
        sender: Address::repeat_byte(0x11),
        nonce: U256::from(7),
        factory: Some(Address::repeat_byte(0x22)),
        factory_data: Some(Bytes::from(vec![1, 2, 3])),
        call_data: Bytes::from(vec![0xab; 40]),
        call_gas_limit: U256::from(123_456),
        verification_gas_limit: U256::from(654_321),
        pre_verification_gas: U256::from(50_000),
        max_fee_per_gas: U256::from(3_000_000_000u64),
        max_priority_fee_per_gas: U256::from(1_000_000_000u64),
        paymaster: Some(Address::repeat_byte(0x33)),
        paymaster_verification_gas_limit: Some(U256::from(80_000)),
        paymaster_post_op_gas_limit: Some(U256::from(1)),
        paymaster_data: Some(Bytes::from(vec![9; 77])),
        signature: Bytes::from(vec![5; 65]),
    };
    let on_chain = EntryPoint::new(ENTRY_POINT_V07, chain.operator_client().provider().clone())
        .getUserOpHash(attestmesh_chain::packed_for_entry_point(&op))
        .call()
        .await
        .unwrap();
    assert_eq!(op.hash(ENTRY_POINT_V07, 31337), on_chain);
}

/// At Base's 2 s blocks, the set-up of more nodes than one block's gas holds (each member
/// account is a contract deployment of about 1.6 M gas, a block holds 30 M) lands in a few
/// blocks. Regression: sent at once, anvil dropped what did not fit in the block it mined and
/// the set-up of 32 nodes never finished.
#[tokio::test(flavor = "multi_thread")]
async fn preparing_more_nodes_than_a_block_holds_lands_in_a_few_blocks() {
    let chain = LocalChain::start(LocalChainConfig {
        block_time: Some(2),
        ..LocalChainConfig::default()
    })
    .await
    .unwrap();
    let client = chain.operator_client();
    let cluster = chain
        .create_cluster(
            B256::repeat_byte(1),
            0x0a58_0000,
            16,
            vec![Address::repeat_byte(0x42)],
            vec![B256::repeat_byte(7)],
        )
        .await
        .unwrap();
    let names: Vec<String> = (1..=24).map(|i| format!("node-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let before = client.block_number().await.unwrap();
    let accounts = chain.add_member_accounts(cluster, &names).await.unwrap();
    let blocks = client.block_number().await.unwrap() - before;
    assert_eq!(accounts.len(), 24);
    for account in accounts {
        client
            .require_code("member account", account)
            .await
            .unwrap();
    }
    // Two waves (24 × 1.6 M gas > 30 M), each a block and a receipt poll: not one per node.
    assert!(blocks <= 6, "the set-up took {blocks} blocks");
}
