//! The gas manager's side of the paymaster webhook contract (types/src/webhook.rs):
//! `POST {userOperation, policyId, chainId, webhookData}` with `Authorization: Bearer <secret>`,
//! answered by `{"approved": bool, "reason"?}`.

use std::time::Duration;

use attestmesh_types::webhook::{WebhookRequest, WebhookResponse};
use url::Url;

/// How long the webhook may take: it reads the chain once, so seconds are plenty.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared secret the webhook checks. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Why the webhook gave no decision. A denial is not an error: it is a decision.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "paymaster webhook at {url} unreachable: {source} (is the webhook running at that URL?)"
    )]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "paymaster webhook at {url} refused the gas manager's credentials (HTTP {status}): the shared secret differs, or the URL routes to another service (field note 4)"
    )]
    Unauthorized { url: String, status: u16 },
    #[error("paymaster webhook at {url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "paymaster webhook at {url} answered something that is not {{\"approved\": bool, \"reason\"?: string}}: {detail}"
    )]
    Malformed { url: String, detail: String },
}

/// Client of one paymaster webhook.
#[derive(Debug, Clone)]
pub(crate) struct WebhookClient {
    http: reqwest::Client,
    url: Url,
    secret: WebhookSecret,
}

impl WebhookClient {
    pub(crate) fn new(url: Url, secret: WebhookSecret) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()?;
        Ok(Self { http, url, secret })
    }

    pub(crate) fn url(&self) -> &Url {
        &self.url
    }

    /// The webhook's decision on `request`.
    pub(crate) async fn decide(
        &self,
        request: &WebhookRequest,
    ) -> Result<WebhookResponse, WebhookError> {
        let url = self.url.to_string();
        let reply = self
            .http
            .post(self.url.clone())
            .bearer_auth(self.secret.expose())
            .json(request)
            .send()
            .await
            .map_err(|source| WebhookError::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = reply.status();
        let body = reply
            .text()
            .await
            .map_err(|source| WebhookError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(WebhookError::Unauthorized {
                url,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(WebhookError::Http {
                url,
                status: status.as_u16(),
                body: shorten(&body),
            });
        }
        serde_json::from_str(&body).map_err(|e| WebhookError::Malformed {
            url,
            detail: format!("{e}: {}", shorten(&body)),
        })
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
