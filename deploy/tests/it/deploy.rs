//! The asserted deploy routine on a real anvil: deploys, re-runs without sending anything, and
//! refuses, before sending anything, a chain it must not deploy to.

use alloy::primitives::{Address, Bytes};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use attestmesh_deploy::deploy::{CREATE2_DEPLOYER, Expectation, verify_deployment};
use attestmesh_deploy::deployments::Deployments;
use attestmesh_devnet::local_chain::project_root;

use crate::support::{Chain, ProjectFiles, init_logs, key_file, operator};

fn deploy_args<'a>(
    chain: &'a Chain,
    key: &'a str,
    deployments: &'a str,
    broadcast: &'a str,
    expected: &'a str,
) -> Vec<&'a str> {
    vec![
        "--json",
        "deploy",
        "--rpc-url",
        chain.rpc_url.as_str(),
        "--private-key-file",
        key,
        "--expected-chain-id",
        expected,
        "--deployments-file",
        deployments,
        "--forge-broadcast-dir",
        broadcast,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_on_fresh_anvil_then_rerun_deploys_nothing() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(31337);
    chain.place_entry_point().await;
    let key = key_file(dir.path(), &chain.deployer);
    let key = key.to_str().unwrap();
    let (_files, relative) = ProjectFiles::deployments(&format!("operator-{}", chain.anvil.port()));
    let broadcast = dir.path().join("broadcast");
    let broadcast = broadcast.to_str().unwrap();
    let sponsor = PrivateKeySigner::random().address();
    let sponsor_text = sponsor.to_string();

    let mut args = deploy_args(&chain, key, &relative, broadcast, "31337");
    args.extend([
        "--sponsor-signer",
        &sponsor_text,
        "--paymaster-deposit",
        "1000000000000000000",
    ]);
    let first = operator(&args).await.json();
    assert!(
        first["transactions_sent"].as_u64().unwrap() >= 11,
        "{first}"
    );
    let path = project_root().join(&relative);
    let written = Deployments::read(&path).unwrap();
    assert_eq!(written.chain_id, 31337);
    assert_eq!(
        first["deployment"]["clusterFactory"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        written.cluster_factory
    );
    assert!(first["factory_deploy_block"].as_u64().unwrap() > 0);
    assert_eq!(first["paymaster_deposit_wei"], "1000000000000000000");

    // Idempotent: same inputs, nothing sent, same addresses.
    let nonce = chain.nonce(chain.deployer.address()).await;
    let second = operator(&args).await.json();
    assert_eq!(second["transactions_sent"], 0, "{second}");
    assert_eq!(
        chain.nonce(chain.deployer.address()).await,
        nonce,
        "the re-run sent a transaction"
    );
    assert_eq!(Deployments::read(&path).unwrap(), written);

    // The human report says so too.
    let text_args: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    let text = operator(&text_args).await;
    assert!(
        text.success && text.stdout.contains("nothing to do"),
        "{}",
        text.stdout
    );

    // verify-deployment alone passes on the same file...
    let verified = operator(&[
        "verify-deployment",
        "--rpc-url",
        chain.rpc_url.as_str(),
        "--expected-chain-id",
        "31337",
        "--deployments",
        path.to_str().unwrap(),
    ])
    .await;
    assert!(verified.success, "{}", verified.stderr);

    // ...and the post-deploy checks catch a stale file and a file of another chain.
    let client = chain.client().await;
    let stale_path = dir.path().join("stale.json");
    let mut stale = written.clone();
    stale.cluster_factory = Address::repeat_byte(0x42);
    std::fs::write(&stale_path, serde_json::to_string(&stale).unwrap()).unwrap();
    let err = verify_deployment(&client, &stale_path, &Expectation::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no code") && err.contains("clusterFactory") && err.contains("rerun"),
        "{err}"
    );
    let mut other = written.clone();
    other.chain_id = 8453;
    std::fs::write(&stale_path, serde_json::to_string(&other).unwrap()).unwrap();
    let err = verify_deployment(&client, &stale_path, &Expectation::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("records chain 8453") && err.contains("serves chain 31337"),
        "{err}"
    );
    let err = verify_deployment(
        &client,
        &path,
        &Expectation {
            sponsor_signer: Some(Address::repeat_byte(7)),
            ..Default::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("verifying signer is") && err.contains(&sponsor.to_string()),
        "{err}"
    );

    // create-cluster refuses an empty KMS root list before sending anything.
    let nonce = chain.nonce(chain.deployer.address()).await;
    let refused = operator(&[
        "create-cluster",
        "--rpc-url",
        chain.rpc_url.as_str(),
        "--expected-chain-id",
        "31337",
        "--private-key-file",
        key,
        "--deployments",
        path.to_str().unwrap(),
        "--salt",
        "no-roots",
        "--mesh-cidr",
        "10.88.0.0/16",
    ])
    .await;
    refused.fails_with(&[
        "no KMS root given",
        "--kms-root",
        "--kms-root-from-dstack-kms",
    ]);
    assert_eq!(chain.nonce(chain.deployer.address()).await, nonce);
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_refuses_a_chain_with_another_id() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(31337);
    chain.place_entry_point().await;
    let key = key_file(dir.path(), &chain.deployer);
    let (_files, relative) = ProjectFiles::deployments(&format!("operator-{}", chain.anvil.port()));
    let broadcast = dir.path().join("broadcast");
    let nonce = chain.nonce(chain.deployer.address()).await;
    let run = operator(&deploy_args(
        &chain,
        key.to_str().unwrap(),
        &relative,
        broadcast.to_str().unwrap(),
        "8453",
    ))
    .await;
    run.fails_with(&[
        "serves chain 31337",
        "--expected-chain-id is 8453",
        "point --rpc-url at an RPC of chain 8453",
    ]);
    assert!(
        !project_root().join(&relative).exists(),
        "nothing was written"
    );
    assert_eq!(
        chain.nonce(chain.deployer.address()).await,
        nonce,
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_refuses_a_chain_without_entry_point_or_deployer_or_funds() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(31337);
    let key = key_file(dir.path(), &chain.deployer);
    let key = key.to_str().unwrap();
    let (_files, relative) = ProjectFiles::deployments(&format!("operator-{}", chain.anvil.port()));
    let broadcast = dir.path().join("broadcast");
    let broadcast = broadcast.to_str().unwrap();
    let args = deploy_args(&chain, key, &relative, broadcast, "31337");

    // No EntryPoint v0.7 code at its canonical address.
    operator(&args).await.fails_with(&[
        "no EntryPoint v0.7 code at 0x0000000071727De22E5E9d8BAf0edAc6f37da032 on chain 31337",
        "place it first",
    ]);
    assert_eq!(
        chain.nonce(chain.deployer.address()).await,
        0,
        "nothing was sent"
    );

    // Something else than v0.7 at the canonical address (here: a contract that only reverts).
    chain
        .set_code(
            attestmesh_bindings::ENTRY_POINT_V07,
            Bytes::from_static(&[0x60, 0x00, 0x80, 0xfd]),
        )
        .await;
    operator(&args).await.fails_with(&[
        "does not answer EntryPoint v0.7's getUserOpHash",
        "not v0.7",
    ]);

    // EntryPoint v0.7 but no deterministic deployer.
    chain
        .set_code(attestmesh_bindings::ENTRY_POINT_V07, Bytes::new())
        .await;
    chain.place_entry_point().await;
    let deployer_code = chain
        .client()
        .await
        .provider()
        .get_code_at(CREATE2_DEPLOYER)
        .await
        .unwrap();
    chain.set_code(CREATE2_DEPLOYER, Bytes::new()).await;
    operator(&args).await.fails_with(&[
        "the deterministic deployer 0x4e59b44847b379578588920cA78FbF26c0B4956C has no code",
    ]);
    chain.set_code(CREATE2_DEPLOYER, deployer_code).await;

    // A deployer without funds.
    let poor = PrivateKeySigner::random();
    let poor_dir = tempfile::tempdir().unwrap();
    let poor_key = key_file(poor_dir.path(), &poor);
    let run = operator(&deploy_args(
        &chain,
        poor_key.to_str().unwrap(),
        &relative,
        broadcast,
        "31337",
    ))
    .await;
    run.fails_with(&[
        &format!("the deployer {} holds 0 wei", poor.address()),
        "fund the deployer",
    ]);
    assert!(
        !project_root().join(&relative).exists(),
        "nothing was written"
    );

    // With the balance check waived, forge itself fails; the error points at its log.
    let mut waived = deploy_args(
        &chain,
        poor_key.to_str().unwrap(),
        &relative,
        broadcast,
        "31337",
    );
    waived.extend(["--min-balance-wei", "0", "--forge-timeout-secs", "300"]);
    let failed = operator(&waived).await;
    failed.fails_with(&[
        "forge script script/Deploy.s.sol failed (exit status: 1)",
        "full output in",
        ".forge.log",
        "nsufficient funds",
    ]);
    assert!(
        !failed.stderr.contains('\u{1b}'),
        "no colour codes in the quoted log"
    );
    assert!(!failed.stderr.contains("/../"), "the log path is canonical");
}
