//! `check-indexer`: the indexer's boot-derived Ed25519 public key, read from its health endpoint
//! or scraped from its logs, and optionally checked against the on-chain IndexerRegistry.
//!
//! Field note 9: the routine that scraped the key from CVM logs matched nothing, because
//! pretty-format tracing puts colour escapes between the label and the hex. Escape codes are
//! stripped before anything is matched ([`strip_ansi`]).
//!
//! The indexer's side of the contract: `GET <health-url>` (its `/healthz`) answers JSON with
//! `"public_key": "<64 hex digits>"` (`ed25519_public_key` is accepted too), and, when present,
//! `"service"` must be `"attestmesh-indexer"`, `"chain_id"` the expected chain and `"factory"` the
//! deployment's factory. Its boot log carries the key as a field `public_key=<hex>` or
//! `ed25519_public_key=<hex>` (`label: hex` in pretty format, `"label":"hex"` in JSON).

use std::fmt;
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256};
use attestmesh_bindings::indexer_registry::IndexerRegistry;
use attestmesh_chain::ChainClient;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{DeployError, Result};
use crate::webhook_check::{CHECK_TIMEOUT, describe, snippet};

/// The service name the indexer's health endpoint reports.
pub const INDEXER_SERVICE: &str = "attestmesh-indexer";
/// The log fields that carry the key, tried together (the last occurrence of any wins).
pub const DEFAULT_KEY_LABELS: [&str; 2] = ["ed25519_public_key", "public_key"];

/// Removes terminal escape sequences: CSI (`ESC [ … final`, also the 8-bit `0x9B` form), OSC
/// (`ESC ] … BEL` or `ESC ] … ESC \`), two-byte `ESC x` sequences, and the same sequences
/// written out as text (`\u001b[2m`, `\x1b[2m`, `\033[2m`), as they appear when logs are
/// JSON-encoded by a log shipper.
pub fn strip_ansi(text: &str) -> String {
    let text = strip_textual_escapes(text);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek().copied() {
                Some('[') => {
                    chars.next();
                    skip_csi(&mut chars);
                }
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(next) if ('\u{20}'..='\u{2f}').contains(&next) => {
                    // nF: intermediates, then one final byte.
                    while chars
                        .peek()
                        .is_some_and(|c| ('\u{20}'..='\u{2f}').contains(c))
                    {
                        chars.next();
                    }
                    chars.next();
                }
                Some(next) if ('\u{30}'..='\u{7e}').contains(&next) => {
                    chars.next();
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            other => out.push(other),
        }
    }
    out
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            break;
        }
    }
}

/// `\u001b[…m`, `\x1b[…m` and `\033[…m` written out as characters.
fn strip_textual_escapes(text: &str) -> String {
    const INTRODUCERS: [&str; 4] = ["\\u001b[", "\\u001B[", "\\x1b[", "\\033["];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for intro in INTRODUCERS {
            if let Some(after) = rest.strip_prefix(intro) {
                let params = after
                    .find(|c: char| !(c.is_ascii_digit() || c == ';'))
                    .unwrap_or(after.len());
                let tail = &after[params..];
                if let Some(final_char) = tail.chars().next()
                    && final_char.is_ascii_alphabetic()
                {
                    rest = &tail[final_char.len_utf8()..];
                    continue 'outer;
                }
            }
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The key after the last occurrence of any of `labels` followed by 32 bytes of hex in `log`
/// (escape codes stripped first): the key of the most recent boot. Accepts `label=hex`,
/// `label: hex`, `"label":"hex"`, with or without `0x`; a label must be a whole word
/// (`x_public_key` is not `public_key`).
pub fn scrape_public_key(log: &str, labels: &[&str]) -> Option<B256> {
    let clean = strip_ansi(log);
    let mut found: Option<(usize, B256)> = None;
    for label in labels {
        for (at, _) in clean.match_indices(label) {
            let word_start = clean[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if !word_start {
                continue;
            }
            let rest = clean[at + label.len()..].trim_start_matches(|c: char| {
                c.is_whitespace() || matches!(c, '=' | ':' | '"' | '\'')
            });
            let rest = rest.strip_prefix("0x").unwrap_or(rest);
            let digits = rest.chars().take_while(char::is_ascii_hexdigit).count();
            if digits == 64
                && let Ok(key) = rest[..64].parse::<B256>()
                && found.is_none_or(|(best, _)| at > best)
            {
                found = Some((at, key));
            }
        }
    }
    found.map(|(_, key)| key)
}

/// Reads `path` and scrapes the key from it.
pub fn key_from_log_file(path: &Path, labels: &[&str]) -> Result<B256> {
    let bytes = std::fs::read(path).map_err(|source| DeployError::Io {
        action: "read the indexer log",
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    scrape_public_key(&text, labels).ok_or_else(|| {
        DeployError::precondition(
            format!(
                "no {} followed by 64 hex digits in {} (escape codes were stripped first)",
                labels.join(" or "),
                path.display()
            ),
            "check that this is the indexer's boot log and that the indexer has finished deriving its identity",
        )
    })
}

/// What the indexer's health endpoint answers (the fields this check reads).
#[derive(Debug, Clone, Deserialize)]
struct IndexerHealth {
    service: Option<String>,
    public_key: Option<String>,
    ed25519_public_key: Option<String>,
    chain_id: Option<u64>,
    factory: Option<Address>,
}

/// What the health answer must show besides a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexerIdentity {
    pub chain_id: Option<u64>,
    pub factory: Option<Address>,
}

/// Asks the indexer's health endpoint for its public key, asserting what it reports about
/// itself (service name, chain, factory) matches `expect`.
pub async fn key_from_health(url: &Url, expect: IndexerIdentity) -> Result<B256> {
    let http = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .build()
        .map_err(|e| DeployError::Http {
            url: url.to_string(),
            problem: format!("cannot build the HTTP client: {e}"),
        })?;
    let reply = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| DeployError::Http {
            url: url.to_string(),
            problem: format!(
                "no answer ({}); check the route and that the indexer runs",
                describe(&e)
            ),
        })?;
    let status = reply.status();
    let body = reply.text().await.map_err(|e| DeployError::Http {
        url: url.to_string(),
        problem: format!("the answer could not be read ({})", describe(&e)),
    })?;
    let identity_error = |problems: Vec<String>| DeployError::Identity {
        service: INDEXER_SERVICE,
        url: url.to_string(),
        problems,
    };
    if !status.is_success() {
        return Err(identity_error(vec![format!(
            "answered HTTP {status} ({}); the indexer's /healthz answers 200 once its key is derived",
            snippet(&body)
        )]));
    }
    let health: IndexerHealth = serde_json::from_str(&body).map_err(|e| {
        identity_error(vec![format!(
            "answered something that is not the indexer's health JSON ({e}): {}; the route reaches another service (field note 4)",
            snippet(&body)
        )])
    })?;
    let mut problems = Vec::new();
    if let Some(service) = &health.service
        && service != INDEXER_SERVICE
    {
        problems.push(format!(
            "reports service {service:?}, not {INDEXER_SERVICE:?}: the route reaches another service (field note 4)"
        ));
    }
    if let (Some(expected), Some(actual)) = (expect.chain_id, health.chain_id)
        && expected != actual
    {
        problems.push(format!(
            "follows chain {actual}, expected {expected}: check the indexer's RPC"
        ));
    }
    if let (Some(expected), Some(actual)) = (expect.factory, health.factory)
        && expected != actual
    {
        problems.push(format!(
            "follows factory {actual}, expected {expected}: check the indexer's factory setting"
        ));
    }
    let key = match health.public_key.or(health.ed25519_public_key) {
        Some(key) => {
            let hex_part = key.strip_prefix("0x").unwrap_or(&key).to_string();
            match hex_part.parse::<B256>() {
                Ok(key) => Some(key),
                Err(_) => {
                    problems.push(format!("public_key {key:?} is not 32 bytes of hex"));
                    None
                }
            }
        }
        None => {
            problems.push("the health answer has no public_key".into());
            None
        }
    };
    match key {
        Some(key) if problems.is_empty() => Ok(key),
        _ => Err(identity_error(problems)),
    }
}

/// Where the key was read.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "at")]
pub enum KeyOrigin {
    Health(String),
    Log(PathBuf),
}

/// The outcome of `check-indexer`.
#[derive(Debug, Clone, Serialize)]
pub struct IndexerCheckReport {
    pub origin: KeyOrigin,
    pub ed25519_public_key: B256,
    /// The registry checked and the indexer id whose active entry holds this key.
    pub registry: Option<Address>,
    pub registered_id: Option<u64>,
    pub registered_endpoint: Option<String>,
}

impl fmt::Display for IndexerCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match &self.origin {
            KeyOrigin::Health(url) => format!("health endpoint {url}"),
            KeyOrigin::Log(path) => format!("log {}", path.display()),
        };
        write!(
            f,
            "indexer Ed25519 public key {} (from {origin})",
            self.ed25519_public_key
        )?;
        if let (Some(registry), Some(id)) = (self.registry, self.registered_id) {
            write!(
                f,
                "\nregistered in {registry} as indexer {id} ({})",
                self.registered_endpoint.as_deref().unwrap_or("")
            )?;
        }
        Ok(())
    }
}

/// Fails unless an active registry entry holds `key` (and `endpoint`, when given).
pub async fn check_registered(
    client: &ChainClient,
    registry: Address,
    key: B256,
    endpoint: Option<&str>,
) -> Result<(u64, String)> {
    let entries = IndexerRegistry::new(registry, client.provider().clone())
        .listIndexers()
        .call()
        .await
        .map_err(|e| client.call_error("IndexerRegistry.listIndexers", e))?;
    let found = entries.iter().enumerate().find(|(_, e)| {
        e.active && e.ed25519PublicKey == key && endpoint.is_none_or(|want| e.endpoint == want)
    });
    match found {
        Some((id, entry)) => Ok((id as u64, entry.endpoint.clone())),
        None => Err(DeployError::precondition(
            format!(
                "no active entry of the indexer registry {registry} holds the indexer's key {key}{}",
                endpoint
                    .map(|e| format!(" with endpoint {e}"))
                    .unwrap_or_default()
            ),
            format!(
                "the indexer re-derived its key at boot or was never registered: run attestmesh-operator register-indexer --endpoint <endpoint> --ed25519-key {key}"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

    #[test]
    fn strips_csi_osc_and_eight_bit_sequences() {
        let colored = "\u{1b}[2m2025-01-01\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\ \u{9b}1mbold";
        assert_eq!(strip_ansi(colored), "2025-01-01  INFO link bold");
        assert_eq!(strip_ansi("plain"), "plain");
        assert_eq!(strip_ansi("\\u001b[3mlabel\\u001b[0m"), "label");
    }

    #[test]
    fn scrapes_the_key_from_a_coloured_tracing_line() {
        // What tracing-subscriber's compact/full format writes with ANSI on: the field name is
        // italic, '=' dimmed, so escape codes sit between the label and the hex (field note 9).
        let line = format!(
            "\u{1b}[2m2025-06-01T10:00:00.000000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mattestmesh::indexer\u{1b}[0m\u{1b}[2m:\u{1b}[0m identity derived \u{1b}[3med25519_public_key\u{1b}[0m\u{1b}[2m=\u{1b}[0m0x{KEY}\n"
        );
        // The naive match the field note describes finds nothing.
        assert!(!line.contains(&format!("ed25519_public_key=0x{KEY}")));
        assert_eq!(
            scrape_public_key(&line, &DEFAULT_KEY_LABELS),
            Some(KEY.parse().unwrap())
        );
    }

    #[test]
    fn scrapes_pretty_and_json_forms_and_keeps_the_last_boot() {
        let old = "11".repeat(32);
        let log = format!(
            "  \u{1b}[1;32mINFO\u{1b}[0m identity\n    \u{1b}[3med25519_public_key\u{1b}[0m\u{1b}[2m:\u{1b}[0m {old}\n\
             {{\"fields\":{{\"public_key\":\"0x{KEY}\"}}}}\n"
        );
        assert_eq!(
            scrape_public_key(&log, &DEFAULT_KEY_LABELS),
            Some(KEY.parse().unwrap())
        );
    }

    #[test]
    fn ignores_longer_labels_short_hex_and_other_fields() {
        let log = format!("x_public_key={KEY} ed25519_public_key=abcd other={KEY}");
        assert_eq!(scrape_public_key(&log, &DEFAULT_KEY_LABELS), None);
        let long = format!("ed25519_public_key={KEY}ff");
        assert_eq!(scrape_public_key(&long, &DEFAULT_KEY_LABELS), None);
    }

    #[test]
    fn scrapes_what_tracing_subscriber_really_writes_with_ansi() {
        use std::io::Write;
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        for pretty in [false, true] {
            let buffer = Buffer::default();
            let writer = buffer.clone();
            let builder = tracing_subscriber::fmt()
                .with_ansi(true)
                .with_writer(move || writer.clone());
            let key = format!("0x{KEY}");
            if pretty {
                let subscriber = builder.pretty().finish();
                tracing::subscriber::with_default(subscriber, || {
                    tracing::info!(ed25519_public_key = %key, "indexer identity derived");
                });
            } else {
                let subscriber = builder.finish();
                tracing::subscriber::with_default(subscriber, || {
                    tracing::info!(ed25519_public_key = %key, "indexer identity derived");
                });
            }
            let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
            assert!(
                text.contains('\u{1b}'),
                "the subscriber wrote colour codes: {text:?}"
            );
            assert_eq!(
                scrape_public_key(&text, &DEFAULT_KEY_LABELS),
                Some(KEY.parse().unwrap()),
                "pretty={pretty}: {text:?}"
            );
        }
    }
}
