//! The Base suite. With `FORK_URL` set, anvil forks Base (`--fork-url $FORK_URL`) and the run
//! meets the real EntryPoint v0.7, the real deterministic deployer and dstack's real DstackKms.
//! Without it, the same steps run on a local chain with Base's chain id 8453, EntryPoint v0.7
//! placed at its canonical address, and a stand-in at dstack's DstackKms address on Base whose
//! `kmsInfo()` answers a known compressed key.

use alloy::primitives::{Address, B256, Bytes};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use attestmesh_deploy::dstack_kms::DSTACK_KMS_BASE;
use attestmesh_devnet::local_chain::member_salt;

use crate::support::{Chain, ProjectFiles, init_logs, key_file, operator};

/// Runtime code that answers every call with `data` (CODECOPY it to memory, RETURN it).
fn returns_constant(data: &[u8]) -> Bytes {
    let len = u16::try_from(data.len()).unwrap().to_be_bytes();
    let mut code = vec![
        0x61, len[0], len[1], // PUSH2 len
        0x61, 0x00, 0x0f, // PUSH2 15 (where data starts)
        0x60, 0x00, // PUSH1 0
        0x39, // CODECOPY(0, 15, len)
        0x61, len[0], len[1], // PUSH2 len
        0x60, 0x00, // PUSH1 0
        0xf3, // RETURN(0, len)
    ];
    assert_eq!(code.len(), 15);
    code.extend_from_slice(data);
    code.into()
}

#[tokio::test(flavor = "multi_thread")]
async fn base_deploy_then_cluster_trusting_the_kms_root_read_from_dstack_kms() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let fork_url = std::env::var("FORK_URL").ok().filter(|url| !url.is_empty());
    let chain = match &fork_url {
        Some(url) => Chain::fork(url),
        None => Chain::start(8453),
    };
    let rpc = chain.rpc_url.as_str();
    let expected_root = match fork_url {
        Some(_) => None,
        None => {
            chain.place_entry_point().await;
            let kms_root = PrivateKeySigner::random();
            let compressed = kms_root.credential().verifying_key().to_encoded_point(true);
            let info = (
                Bytes::copy_from_slice(compressed.as_bytes()),
                Bytes::from_static(b"ca-pubkey"),
                Bytes::new(),
                Bytes::new(),
            )
                .abi_encode_params();
            chain
                .set_code(DSTACK_KMS_BASE, returns_constant(&info))
                .await;
            Some(kms_root.address())
        }
    };
    let key = key_file(dir.path(), &chain.deployer);
    let key = key.to_str().unwrap();
    let (_files, relative) = ProjectFiles::deployments(&format!("base-{}", chain.anvil.port()));
    let broadcast = dir.path().join("broadcast");

    let deployed = operator(&[
        "--json",
        "deploy",
        "--rpc-url",
        rpc,
        "--private-key-file",
        key,
        "--expected-chain-id",
        "8453",
        "--deployments-file",
        &relative,
        "--forge-broadcast-dir",
        broadcast.to_str().unwrap(),
    ])
    .await
    .json();
    assert_eq!(deployed["chain_id"], 8453);
    let deployments = attestmesh_devnet::local_chain::project_root().join(&relative);
    let deployments = deployments.to_str().unwrap();

    let compose_hash = B256::repeat_byte(0xc0).to_string();
    let created = operator(&[
        "--json",
        "create-cluster",
        "--rpc-url",
        rpc,
        "--expected-chain-id",
        "8453",
        "--private-key-file",
        key,
        "--deployments",
        deployments,
        "--salt",
        "base-suite",
        "--mesh-cidr",
        "10.88.0.0/16",
        "--kms-root-from-dstack-kms",
        &DSTACK_KMS_BASE.to_string(),
        "--compose-hash",
        &compose_hash,
    ])
    .await
    .json();
    let roots: Vec<Address> = serde_json::from_value(created["kms_roots"].clone()).unwrap();
    match expected_root {
        Some(root) => assert_eq!(
            roots,
            vec![root],
            "the root is the address of kmsInfo().k256Pubkey"
        ),
        None => assert!(roots.len() == 1 && roots[0] != Address::ZERO, "{created}"),
    }
    let cluster = created["cluster"].as_str().unwrap().to_string();

    let shown = operator(&[
        "--json",
        "show",
        "--rpc-url",
        rpc,
        "--expected-chain-id",
        "8453",
        "--cluster",
        &cluster,
    ])
    .await
    .json();
    assert_eq!(shown["chain_id"], 8453);
    assert_eq!(shown["mesh"]["cidr"], "10.88.0.0/16");
    assert_eq!(
        serde_json::from_value::<Vec<Address>>(shown["allowlists"]["kms_roots"].clone()).unwrap(),
        roots
    );

    let predicted = operator(&[
        "--json",
        "predict-account",
        "--rpc-url",
        rpc,
        "--expected-chain-id",
        "8453",
        "--cluster",
        &cluster,
        "--node-name",
        "base-node-1",
    ])
    .await
    .json();
    assert_eq!(
        predicted["salt"].as_str().unwrap().parse::<B256>().unwrap(),
        member_salt("base-node-1")
    );
    assert_eq!(predicted["deployed"], false);

    // A DstackKms address without a contract is refused with the Base address as advice.
    let refused = operator(&[
        "create-cluster",
        "--rpc-url",
        rpc,
        "--expected-chain-id",
        "8453",
        "--private-key-file",
        key,
        "--deployments",
        deployments,
        "--salt",
        "base-suite-2",
        "--mesh-cidr",
        "10.88.0.0/16",
        "--kms-root-from-dstack-kms",
        &Address::repeat_byte(0x99).to_string(),
    ])
    .await;
    refused.fails_with(&["no contract at", DSTACK_KMS_BASE.to_string().as_str()]);
}
