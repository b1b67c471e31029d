//! The one redaction helper of AttestMesh: what of an endpoint URL may appear in a message.
//!
//! Hosted providers put API keys in a URL's user info, path (`/v2/<key>`) or query
//! (`?apikey=<key>`), and the chain RPC, bundler and gas manager URLs of a node are such URLs.
//! Everything a node says can end up public: logs are scraped, and `/healthz` (with its
//! `x-attestmesh-waiting-for` header) and `/status` are watched through the dstack gateway. So a
//! URL is shown as scheme, host and port only ([`url`]), reqwest errors drop their URL
//! ([`reqwest_error`]), text that may quote a URL has that URL's secret parts replaced
//! ([`secrets_of`]), and text that reaches a public surface has every URL in it cut down to its
//! origin ([`urls_in`]).

use url::Url;

/// Scheme, host and port only: safe to log and to show.
pub fn url(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{}://{host}:{port}", url.scheme()),
        (Some(host), None) => format!("{}://{host}", url.scheme()),
        _ => format!("<{} URL without a host>", url.scheme()),
    }
}

/// The error without the request URL (reqwest puts the whole URL, key included, in its
/// `Display`: "error sending request for url (https://…/v2/KEY)").
pub fn reqwest_error(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

/// `text` with every spelling of `url` that can carry a secret (the whole URL, its path, its
/// query, its user name and password) replaced by [`url`]'s form: for text a service or a tool
/// wrote that may quote the URL it was called at (an error body, another program's output).
pub fn secrets_of(text: &str, url_: &Url) -> String {
    let shown = url(url_);
    let mut secrets = vec![
        url_.as_str().to_string(),
        url_.as_str().trim_end_matches('/').to_string(),
    ];
    if url_.path().len() > 1 {
        secrets.push(url_.path().to_string());
    }
    if let Some(query) = url_.query() {
        secrets.push(query.to_string());
    }
    if !url_.username().is_empty() {
        secrets.push(url_.username().to_string());
    }
    if let Some(password) = url_.password() {
        secrets.push(password.to_string());
    }
    // Longest first, so a whole URL is replaced before its parts.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() > 1) {
        let replacement = if secret.starts_with(url_.scheme()) {
            shown.as_str()
        } else {
            "<redacted>"
        };
        out = out.replace(secret.as_str(), replacement);
    }
    out
}

/// `text` with every `scheme://…` URL in it cut down to scheme, host and port (user info, path,
/// query and fragment removed), whatever the URL: the last step before text reaches a public
/// surface, for text whose URLs nobody listed.
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: the letters, digits, '+', '-' and '.' right before "://".
        let scheme_start = rest[..at]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map_or(at, |(i, _)| i);
        let after = &rest[at + 3..];
        // The URL runs to the first character no URL in a sentence contains.
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')'))
            .unwrap_or(after.len());
        let whole = &after[..end];
        if scheme_start == at {
            // "://" without a scheme before it: not a URL, keep it.
            out.push_str(&rest[..at + 3]);
            rest = after;
            continue;
        }
        let authority_end = whole.find(['/', '?', '#']).unwrap_or(whole.len());
        let authority = &whole[..authority_end];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        out.push_str(&rest[..at + 3]);
        out.push_str(host_port);
        // A sentence's closing punctuation stays.
        if let Some(last) = whole[authority_end..]
            .chars()
            .last()
            .filter(|c| matches!(c, '.' | ',' | ';' | ':'))
        {
            out.push(last);
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYED: &str = "https://user:pa55word@base-mainnet.g.alchemy.com/v2/API_KEY?key=QUERYKEY";

    fn assert_clean(text: &str) {
        for secret in ["user", "pa55word", "API_KEY", "QUERYKEY", "/v2"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn a_url_is_shown_as_scheme_host_and_port() {
        let keyed: Url = KEYED.parse().unwrap();
        assert_eq!(url(&keyed), "https://base-mainnet.g.alchemy.com");
        assert_eq!(
            url(&"http://127.0.0.1:8545/".parse().unwrap()),
            "http://127.0.0.1:8545"
        );
    }

    #[test]
    fn every_spelling_of_a_known_url_is_replaced() {
        let keyed: Url = KEYED.parse().unwrap();
        let text = format!(
            "error sending request for url ({KEYED}); path {}; query {}; user {}",
            keyed.path(),
            keyed.query().unwrap(),
            keyed.username()
        );
        let out = secrets_of(&text, &keyed);
        assert_clean(&out);
        assert!(
            out.contains("(https://base-mainnet.g.alchemy.com)"),
            "{out}"
        );
        let local: Url = "http://127.0.0.1:8545/".parse().unwrap();
        assert_eq!(
            secrets_of("at http://127.0.0.1:8545/ now", &local),
            "at http://127.0.0.1:8545 now"
        );
    }

    #[test]
    fn every_url_in_free_text_is_cut_to_its_origin() {
        let text = format!(
            "bundler eth_sendUserOperation at {KEYED}: no answer (error sending request for url ({KEYED})); see http://127.0.0.1:9/a/b?c=d."
        );
        let out = urls_in(&text);
        assert_clean(&out);
        assert_eq!(
            out,
            "bundler eth_sendUserOperation at https://base-mainnet.g.alchemy.com: no answer \
             (error sending request for url (https://base-mainnet.g.alchemy.com)); see http://127.0.0.1:9."
        );
        // Text without URLs, and a bare "://", are unchanged.
        for plain in ["operator: not an allowlisted member account", "a :// b", ""] {
            assert_eq!(urls_in(plain), plain);
        }
    }

    /// reqwest's Display carries the URL, key included, unless the URL is dropped.
    #[tokio::test]
    async fn reqwest_errors_lose_their_url() {
        // Bound but not listening: connections are refused, and no other test can take the port.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let keyed = format!("http://127.0.0.1:{port}/v2/API_KEY?key=QUERYKEY");
        let error = reqwest::Client::new()
            .post(&keyed)
            .send()
            .await
            .unwrap_err();
        assert!(error.to_string().contains("API_KEY"), "{error}");
        let error = reqwest_error(error);
        assert_clean(&error.to_string());
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            assert_clean(&inner.to_string());
            source = inner.source();
        }
    }
}
