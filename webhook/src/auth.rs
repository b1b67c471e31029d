//! `Authorization: Bearer <secret>`, compared in constant time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The digest of the expected secret; the plain secret is not kept by the server.
#[derive(Clone)]
pub(crate) struct SecretDigest([u8; 32]);

impl SecretDigest {
    pub(crate) fn new(digest: [u8; 32]) -> Self {
        Self(digest)
    }
}

impl std::fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

/// Why a request is not authenticated. The reply says which, so an operator looking at a 401
/// can tell a route that drops the header from a secret that differs (field note 4: the opaque
/// 401s came from a route pointing at another worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No `Authorization` header at all.
    Missing,
    /// A header that is not `Bearer <token>`.
    NotBearer,
    /// A bearer token that is not the secret.
    Wrong,
}

impl AuthFailure {
    /// The machine-readable error code of the reply.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_secret",
            Self::NotBearer | Self::Wrong => "wrong_secret",
        }
    }

    /// The words of the reply and the log line.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Missing => {
                "missing shared secret: send `Authorization: Bearer <secret>` (the webhook \
                 secret configured on the gas manager)"
            }
            Self::NotBearer => "malformed Authorization header: expected `Bearer <secret>`",
            Self::Wrong => {
                "wrong shared secret: the bearer token is not this webhook's secret (check the \
                 gas manager's webhook secret, and that the route reaches this service)"
            }
        }
    }
}

/// Checks the request's bearer token against `expected`.
pub(crate) fn check(headers: &HeaderMap, expected: &SecretDigest) -> Result<(), AuthFailure> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(AuthFailure::Missing);
    };
    let text = value.to_str().map_err(|_| AuthFailure::NotBearer)?;
    let text = text.trim();
    // `Bearer` with nothing after it is a missing secret, not a malformed header.
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    // RFC 7235: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthFailure::Missing);
    }
    // Hashing first makes both sides 32 bytes, so neither the comparison nor an early length
    // mismatch tells an attacker anything about the secret.
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if bool::from(presented.ct_eq(&expected.0)) {
        Ok(())
    } else {
        Err(AuthFailure::Wrong)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    fn digest(secret: &str) -> SecretDigest {
        SecretDigest::new(Sha256::digest(secret.as_bytes()).into())
    }

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn accepts_the_secret_with_any_scheme_case() {
        let expected = digest("0123456789abcdef");
        assert_eq!(
            check(&headers(Some("Bearer 0123456789abcdef")), &expected),
            Ok(())
        );
        assert_eq!(
            check(&headers(Some("bearer 0123456789abcdef")), &expected),
            Ok(())
        );
    }

    #[test]
    fn tells_missing_from_wrong() {
        let expected = digest("0123456789abcdef");
        assert_eq!(check(&headers(None), &expected), Err(AuthFailure::Missing));
        assert_eq!(
            check(&headers(Some("Bearer ")), &expected),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            check(&headers(Some("Bearer nope")), &expected),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(
            check(&headers(Some("Basic 0123456789abcdef")), &expected),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            check(&headers(Some("0123456789abcdef")), &expected),
            Err(AuthFailure::NotBearer)
        );
    }
}
