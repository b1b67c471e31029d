//! Start-up verification and the identity `/healthz` reports (field note 4: the deploy routine
//! asserts that the route reaches this service, for this chain and these clusters).

use alloy::primitives::Address;
use attestmesh_webhook::{Webhook, WebhookConfig, WebhookError, WebhookSecret};
use serde_json::json;

use crate::{CHAIN_ID, ClusterChain, POLICY, SECRET, within};

#[tokio::test(flavor = "multi_thread")]
async fn healthz_reports_service_chain_id_and_policies() {
    let chain = ClusterChain::start().await;
    // A second policy on the same cluster (e.g. a staging gas-manager policy).
    let webhook = Webhook::spawn(chain.config().with_policy("policy-staging", chain.cluster))
        .await
        .unwrap();
    let response = reqwest::get(format!("http://{}/healthz", webhook.local_addr()))
        .await
        .unwrap();
    let (status, body) = crate::into_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("ok"));
    assert_eq!(body["service"], json!("attestmesh-webhook"));
    assert_eq!(body["chain_id"], json!(CHAIN_ID));
    let cluster = chain.cluster.to_string();
    assert_eq!(
        body["policies"],
        json!([
            {"policy_id": POLICY, "cluster": cluster},
            {"policy_id": "policy-staging", "cluster": cluster},
        ]),
        "{body}"
    );
    webhook.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_start_when_a_cluster_has_no_code_or_is_not_a_diamond() {
    let chain = ClusterChain::start().await;

    // An address with no contract on this chain (e.g. a cluster of another chain).
    let nowhere = Address::repeat_byte(0x99);
    let err = Webhook::spawn(chain.config().with_policy("policy-other", nowhere))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WebhookError::ClusterMissing { ref policy_id, cluster, .. }
        if policy_id == "policy-other" && cluster == nowhere),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("no contract") && message.contains(&nowhere.to_string()),
        "{message}"
    );

    // A contract, but not a cluster diamond: the factory configured by mistake.
    let factory = chain.chain.deployment().cluster_factory;
    let mut config = chain.config();
    config.policies[0].cluster = factory;
    let err = Webhook::spawn(config).await.unwrap_err();
    assert!(
        matches!(err, WebhookError::NotACluster { cluster, .. } if cluster == factory),
        "{err:?}"
    );
    assert!(err.to_string().contains("checkSponsorship"), "{err}");

    // No policy at all.
    let mut config = chain.config();
    config.policies.clear();
    assert!(matches!(
        Webhook::spawn(config).await,
        Err(WebhookError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_start_on_another_chain_or_an_unreachable_rpc() {
    let chain = ClusterChain::start().await;

    let mut config = chain.config();
    config.chain_id = 8453;
    let err = Webhook::spawn(config).await.unwrap_err();
    assert!(
        matches!(err, WebhookError::Connect { chain_id: 8453, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("serves chain 31337"), "{err}");

    // A port nothing listens on: bound (so no one else can take it) but not listening, so a
    // connection is refused.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut config = chain.config();
    config.rpc_url = format!("http://{}", closed.local_addr().unwrap())
        .parse()
        .unwrap();
    let err = within("start-up against a closed port", Webhook::spawn(config))
        .await
        .unwrap_err();
    assert!(matches!(err, WebhookError::Connect { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_start_when_the_rpc_accepts_but_never_answers() {
    // A listener that accepts and then says nothing: start-up must end in an error, not hang.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let mut config = WebhookConfig::new(
        format!("http://{addr}").parse().unwrap(),
        CHAIN_ID,
        WebhookSecret::new(SECRET).unwrap(),
    )
    .with_policy(POLICY, Address::repeat_byte(0x01));
    config.chain_timeout = std::time::Duration::from_millis(300);
    // The error names the configured timeout: start-up gave up on its own.
    let err = within("start-up against a silent RPC", Webhook::spawn(config))
        .await
        .unwrap_err();
    assert!(
        matches!(err, WebhookError::ChainTimeout { ref call, timeout, .. }
        if call == "eth_chainId" && timeout == std::time::Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().contains("did not answer"), "{err}");
    held.abort();
}
