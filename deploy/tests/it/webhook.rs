//! check-webhook against the real paymaster webhook, and against what a misrouted domain reaches
//! instead (field note 4: the route once pointed at another project's worker).

use alloy::primitives::{Address, keccak256};
use attestmesh_devnet::local_chain::{LocalChain, LocalChainConfig};
use attestmesh_webhook::{Webhook, WebhookConfig, WebhookHandle, WebhookSecret};
use axum::routing::{get, post};

use crate::support::{Run, init_logs, operator};

/// A stand-in for "another project's worker": answers /healthz with its own identity and every
/// POST with a 401 of its own.
async fn foreign_worker() -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok", "service": "image-resizer", "chain_id": 8453, "policies": []})) }),
        )
        .route(
            "/",
            post(|| async { (axum::http::StatusCode::UNAUTHORIZED, "invalid token") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// A local chain with one cluster, and the real webhook on it serving `policy-a` → that cluster
/// on chain 31337.
struct RealWebhook {
    chain: LocalChain,
    cluster: Address,
    webhook: WebhookHandle,
    url: String,
    /// `--expected-policy` of the right identity: `policy-a=<cluster>`.
    expect_a: String,
}

async fn real_webhook() -> RealWebhook {
    init_logs();
    let chain = LocalChain::start(LocalChainConfig::default())
        .await
        .unwrap();
    let kms_root = Address::repeat_byte(0x11);
    let cluster = chain
        .create_cluster(
            keccak256(b"webhook-check"),
            0x0a58_0000,
            16,
            vec![kms_root],
            vec![],
        )
        .await
        .unwrap();
    let config = WebhookConfig::new(
        chain.rpc_url().clone(),
        31337,
        WebhookSecret::new("a-test-secret-of-enough-length").unwrap(),
    )
    .with_policy("policy-a", cluster);
    let webhook = Webhook::spawn(WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    })
    .await
    .unwrap();
    let url = webhook.url();
    let expect_a = format!("policy-a={cluster}");
    RealWebhook {
        chain,
        cluster,
        webhook,
        url,
        expect_a,
    }
}

/// `check-webhook --url <url>` expecting chain `chain_id` and `policies`, with `extra` before
/// the subcommand (e.g. `--json`).
async fn check_webhook(extra: &[&str], url: &str, chain_id: &str, policies: &[&str]) -> Run {
    let mut args = extra.to_vec();
    args.extend([
        "check-webhook",
        "--url",
        url,
        "--expected-chain-id",
        chain_id,
    ]);
    for policy in policies {
        args.extend(["--expected-policy", policy]);
    }
    operator(&args).await
}

/// The real webhook with the right identity passes, in JSON and in text.
#[tokio::test(flavor = "multi_thread")]
async fn check_webhook_passes_the_real_webhook_with_the_right_identity() {
    let real = real_webhook().await;
    let ok = check_webhook(&["--json"], &real.url, "31337", &[&real.expect_a])
        .await
        .json();
    assert_eq!(ok["health"]["service"], "attestmesh-webhook");
    assert_eq!(ok["unauthenticated_post_refused"], true);
    let text = check_webhook(&[], &real.url, "31337", &[&real.expect_a]).await;
    assert!(
        text.success && text.stdout.starts_with("ok:"),
        "{}",
        text.stdout
    );
}

/// The policy maps to another cluster; a policy it does not serve; another chain: all named in
/// the one error.
#[tokio::test(flavor = "multi_thread")]
async fn check_webhook_names_a_wrong_cluster_an_unserved_policy_and_a_wrong_chain_together() {
    let real = real_webhook().await;
    let cluster = real.cluster;
    let other = Address::repeat_byte(0x22);
    check_webhook(
        &[],
        &real.url,
        "8453",
        &[&format!("policy-a={other}"), &format!("policy-b={cluster}")],
    )
    .await
    .fails_with(&[
        &format!("policy \"policy-a\" maps to cluster {cluster}, expected {other}"),
        "does not serve policy \"policy-b\"",
        "serves chain 31337, expected 8453",
    ]);
}

/// A route that reaches another service: named as such, with no advice about its policies.
#[tokio::test(flavor = "multi_thread")]
async fn check_webhook_names_a_route_that_reaches_another_service() {
    let real = real_webhook().await;
    let (foreign, _task) = foreign_worker().await;
    let misrouted = check_webhook(&[], &foreign, "8453", &[&real.expect_a]).await;
    misrouted.fails_with(&[
        "reaches service \"image-resizer\", not \"attestmesh-webhook\"",
        "field note 4",
    ]);
    assert!(
        !misrouted.stderr.contains("--policy"),
        "no advice about the policies of a service that is not the webhook"
    );
}

/// A URL that is not a webhook at all (anvil's JSON-RPC).
#[tokio::test(flavor = "multi_thread")]
async fn check_webhook_refuses_a_url_that_is_not_a_webhook() {
    let real = real_webhook().await;
    check_webhook(
        &[],
        real.chain.rpc_url().as_str(),
        "31337",
        &[&real.expect_a],
    )
    .await
    .fails_with(&[
        "attestmesh-webhook identity check",
        "does not reach an attestmesh-webhook",
    ]);
}

/// Nothing listening (the webhook stopped): no answer, and why.
#[tokio::test(flavor = "multi_thread")]
async fn check_webhook_reports_no_answer_when_nothing_listens() {
    let real = real_webhook().await;
    drop(real.webhook);
    check_webhook(&[], &real.url, "31337", &[&real.expect_a])
        .await
        .fails_with(&["no answer", "onnection refused"]);
}

/// Field note 4 in the deploy itself: `deploy --webhook-url` runs the check-webhook checks
/// before sending anything, passes with the right webhook and fails naming the mismatch with a
/// wrong one (another service, or the webhook mapping the policy to another cluster).
#[tokio::test(flavor = "multi_thread")]
async fn deploy_asserts_the_live_webhook_route_before_sending_anything() {
    use crate::support::{Chain, ProjectFiles, key_file};
    use attestmesh_devnet::local_chain::project_root;

    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::start(31337);
    chain.place_entry_point().await;
    let key = key_file(dir.path(), &chain.deployer);
    let key = key.to_str().unwrap();
    let (_files, relative) = ProjectFiles::deployments(&format!("webhook-{}", chain.anvil.port()));
    let broadcast = dir.path().join("broadcast");
    let broadcast = broadcast.to_str().unwrap();
    let rpc = chain.rpc_url.to_string();
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "deploy",
            "--rpc-url",
            rpc.as_str(),
            "--private-key-file",
            key,
            "--expected-chain-id",
            "31337",
            "--deployments-file",
            relative.as_str(),
            "--forge-broadcast-dir",
            broadcast,
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        operator(&args).await
    };

    // The contracts, then two clusters of this deployment, one served by the webhook.
    let first = run(deploy(&[])).await.json();
    assert!(
        first["webhook"].is_null(),
        "no webhook URL, no check: {first}"
    );
    let deployments = project_root().join(&relative);
    let deployments = deployments.to_str().unwrap();
    let mut clusters = Vec::new();
    for salt in ["served", "other"] {
        let created = operator(&[
            "--json",
            "create-cluster",
            "--rpc-url",
            rpc.as_str(),
            "--expected-chain-id",
            "31337",
            "--private-key-file",
            key,
            "--deployments",
            deployments,
            "--salt",
            salt,
            "--mesh-cidr",
            "10.88.0.0/16",
            "--kms-root",
            &Address::repeat_byte(0x11).to_string(),
        ])
        .await
        .json();
        let cluster: Address = created["cluster"].as_str().unwrap().parse().unwrap();
        clusters.push(cluster.to_string());
    }
    let served: Address = clusters[0].parse().unwrap();
    let webhook = Webhook::spawn(WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..WebhookConfig::new(
            chain.rpc_url.clone(),
            31337,
            WebhookSecret::new("a-test-secret-of-enough-length").unwrap(),
        )
        .with_policy("policy-a", served)
    })
    .await
    .unwrap();
    let url = webhook.url();

    // The right webhook: the deploy passes and reports what it checked.
    let right = format!("policy-a={}", clusters[0]);
    let ok = run(deploy(&["--webhook-url", &url, "--webhook-policy", &right]))
        .await
        .json();
    assert_eq!(
        ok["webhook"]["health"]["service"], "attestmesh-webhook",
        "{ok}"
    );
    assert_eq!(ok["webhook"]["health"]["chain_id"], 31337);
    assert_eq!(ok["webhook"]["unauthenticated_post_refused"], true);

    // The webhook maps the policy to another cluster than the one expected: refused, named,
    // nothing sent.
    let nonce = chain.nonce(chain.deployer.address()).await;
    let wrong = format!("policy-a={}", clusters[1]);
    run(deploy(&["--webhook-url", &url, "--webhook-policy", &wrong]))
        .await
        .fails_with(&[
            "the paymaster webhook route does not check out, so nothing was sent",
            &format!(
                "policy \"policy-a\" maps to cluster {}, expected {}",
                clusters[0], clusters[1]
            ),
            "field note 4",
        ]);
    // A policy it does not serve at all.
    run(deploy(&[
        "--webhook-url",
        &url,
        "--webhook-policy",
        &format!("policy-b={}", clusters[0]),
    ]))
    .await
    .fails_with(&["does not serve policy \"policy-b\""]);
    // The route reaches another project's worker.
    let (foreign, _task) = foreign_worker().await;
    run(deploy(&["--webhook-url", &foreign]))
        .await
        .fails_with(&[
            "reaches service \"image-resizer\", not \"attestmesh-webhook\"",
            "nothing was sent",
        ]);
    assert_eq!(
        chain.nonce(chain.deployer.address()).await,
        nonce,
        "a failed route check sends nothing"
    );
}
