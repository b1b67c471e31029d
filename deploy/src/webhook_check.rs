//! `check-webhook`: the live route of the paymaster webhook must reach *this* project's webhook,
//! serving the expected chain and policy → cluster mapping. Field note 4: sponsorship was once
//! denied with opaque 401s because a custom domain's route still targeted another project's
//! worker; the code was fine, the routing was not. So every deploy asserts the route.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{DeployError, Result};

/// The service name the webhook's `/healthz` reports.
pub const WEBHOOK_SERVICE: &str = "attestmesh-webhook";

/// How long one HTTP request of a check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// `<policyId>=<cluster>` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPolicy {
    pub policy_id: String,
    pub cluster: Address,
}

impl FromStr for ExpectedPolicy {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let (policy_id, cluster) = text
            .rsplit_once('=')
            .ok_or_else(|| format!("{text:?}: expected <policyId>=<cluster address>"))?;
        if policy_id.is_empty() {
            return Err(format!("{text:?}: the policy id is empty"));
        }
        let cluster = Address::from_str(cluster.trim())
            .map_err(|e| format!("{text:?}: {cluster:?} is not an address ({e})"))?;
        Ok(Self {
            policy_id: policy_id.to_string(),
            cluster,
        })
    }
}

/// What the webhook's `/healthz` answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WebhookHealth {
    pub status: String,
    pub service: String,
    #[serde(default)]
    pub version: Option<String>,
    pub chain_id: u64,
    pub policies: Vec<HealthPolicy>,
}

/// One policy → cluster route of the webhook.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HealthPolicy {
    pub policy_id: String,
    pub cluster: String,
}

/// A passed check.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookCheckReport {
    pub url: String,
    pub health: WebhookHealth,
    /// The unauthenticated POST answered 401 `missing_secret`, as only this webhook does.
    pub unauthenticated_post_refused: bool,
}

impl fmt::Display for WebhookCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ok: {} reaches {} {} on chain {}",
            self.url,
            self.health.service,
            self.health.version.as_deref().unwrap_or("(no version)"),
            self.health.chain_id
        )?;
        for p in &self.health.policies {
            writeln!(f, "  policy {} -> cluster {}", p.policy_id, p.cluster)?;
        }
        write!(f, "  unauthenticated POST refused with 401 missing_secret")
    }
}

fn endpoint(base: &Url, path: &str) -> Result<Url> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path)
        .map_err(|e| DeployError::input("--url", format!("{base}{path}: {e}")))
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| DeployError::Http {
            url: String::new(),
            problem: format!("cannot build the HTTP client: {e}"),
        })
}

/// Checks the webhook at `url` (its public route): `/healthz` names `attestmesh-webhook`, the
/// expected chain id and every expected policy → cluster, and an unauthenticated POST answers
/// 401 `missing_secret`. Every mismatch is listed in one error.
pub async fn check_webhook(
    url: &Url,
    expected_chain_id: u64,
    expected_policies: &[ExpectedPolicy],
) -> Result<WebhookCheckReport> {
    let http = client()?;
    let health_url = endpoint(url, "healthz")?;
    let identity_error = |problems: Vec<String>| DeployError::Identity {
        service: WEBHOOK_SERVICE,
        url: url.to_string(),
        problems,
    };
    let reply = http
        .get(health_url.clone())
        .send()
        .await
        .map_err(|e| DeployError::Http {
            url: health_url.to_string(),
            problem: format!(
                "no answer ({}); check the route's DNS, TLS and that the webhook runs",
                describe(&e)
            ),
        })?;
    let status = reply.status();
    let body = reply.text().await.map_err(|e| DeployError::Http {
        url: health_url.to_string(),
        problem: format!("the answer could not be read ({})", describe(&e)),
    })?;
    if !status.is_success() {
        return Err(identity_error(vec![format!(
            "GET {health_url} answered HTTP {status} ({}): the route does not reach an {WEBHOOK_SERVICE} (field note 4: check which worker/service the route or custom domain targets)",
            snippet(&body)
        )]));
    }
    let health: WebhookHealth = serde_json::from_str(&body).map_err(|e| {
        identity_error(vec![format!(
            "GET {health_url} answered 200 but not the webhook's health JSON ({e}): {} — the route reaches some other service (field note 4)",
            snippet(&body)
        )])
    })?;

    if health.service != WEBHOOK_SERVICE {
        // Nothing else it reports matters: the route reaches the wrong service.
        return Err(identity_error(vec![format!(
            "the route reaches service {:?}, not {WEBHOOK_SERVICE:?}: point the route (DNS, proxy, worker binding) at the AttestMesh webhook (field note 4)",
            health.service
        )]));
    }
    let mut problems = Vec::new();
    if health.status != "ok" {
        problems.push(format!(
            "the webhook reports status {:?}, not \"ok\"",
            health.status
        ));
    }
    if health.chain_id != expected_chain_id {
        problems.push(format!(
            "the webhook serves chain {}, expected {expected_chain_id}: restart it with --chain-id {expected_chain_id} and an RPC of that chain",
            health.chain_id
        ));
    }
    for expected in expected_policies {
        match health.policies.iter().find(|p| p.policy_id == expected.policy_id) {
            None => problems.push(format!(
                "the webhook does not serve policy {:?} (it serves: {}): add --policy {}={}",
                expected.policy_id,
                served(&health.policies),
                expected.policy_id,
                expected.cluster
            )),
            Some(found) => match Address::from_str(&found.cluster) {
                Ok(cluster) if cluster == expected.cluster => {}
                Ok(cluster) => problems.push(format!(
                    "policy {:?} maps to cluster {cluster}, expected {}: fix the webhook's --policy {}={}",
                    expected.policy_id, expected.cluster, expected.policy_id, expected.cluster
                )),
                Err(_) => problems.push(format!(
                    "policy {:?} maps to {:?}, which is not an address",
                    expected.policy_id, found.cluster
                )),
            },
        }
    }
    if !problems.is_empty() {
        return Err(identity_error(problems));
    }

    // Only the AttestMesh webhook answers an unauthenticated POST with this exact error code;
    // a 401 from anything else is the symptom of field note 4.
    let post_url = endpoint(url, "")?;
    let reply = http
        .post(post_url.clone())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .map_err(|e| DeployError::Http {
            url: post_url.to_string(),
            problem: format!("no answer to POST ({})", describe(&e)),
        })?;
    let status = reply.status();
    let body = reply
        .text()
        .await
        .unwrap_or_else(|e| format!("(unreadable body: {e})"));
    let code = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    if status != reqwest::StatusCode::UNAUTHORIZED || code.as_deref() != Some("missing_secret") {
        return Err(identity_error(vec![format!(
            "an unauthenticated POST {post_url} answered HTTP {status} ({}), not 401 with \"error\": \"missing_secret\": POSTs on this route reach something other than the webhook whose /healthz answered (field note 4)",
            snippet(&body)
        )]));
    }
    Ok(WebhookCheckReport {
        url: url.to_string(),
        health,
        unauthenticated_post_refused: true,
    })
}

fn served(policies: &[HealthPolicy]) -> String {
    if policies.is_empty() {
        return "none".into();
    }
    policies
        .iter()
        .map(|p| format!("{}={}", p.policy_id, p.cluster))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error with its causes (reqwest's own message omits them: "error sending request").
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(&format!(": {cause}"));
        next = cause.source();
    }
    text
}

/// The first 200 characters of a body, on one line.
pub fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "empty body".into();
    }
    match one_line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_policy_parses() {
        let p: ExpectedPolicy = "pol-1=0x0000000071727De22E5E9d8BAf0edAc6f37da032"
            .parse()
            .unwrap();
        assert_eq!(p.policy_id, "pol-1");
        assert!("nopolicy".parse::<ExpectedPolicy>().is_err());
        assert!("p=0x12".parse::<ExpectedPolicy>().is_err());
    }

    #[test]
    fn endpoints_join_under_a_path_prefix() {
        let base: Url = "https://hooks.example/attestmesh".parse().unwrap();
        assert_eq!(
            endpoint(&base, "healthz").unwrap().as_str(),
            "https://hooks.example/attestmesh/healthz"
        );
        let base: Url = "http://127.0.0.1:8787".parse().unwrap();
        assert_eq!(
            endpoint(&base, "healthz").unwrap().as_str(),
            "http://127.0.0.1:8787/healthz"
        );
    }

    #[test]
    fn snippet_is_short_and_single_line() {
        assert_eq!(snippet("a\n b"), "a b");
        assert!(snippet(&"x".repeat(500)).chars().count() <= 201);
        assert_eq!(snippet(""), "empty body");
    }
}
