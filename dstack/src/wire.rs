//! The guest agent's JSON wire format (dstack >= 0.5), as plain string-typed structs.
//!
//! These structs mirror the JSON exactly and are shared by the client (to parse) and the devnet
//! simulator (to produce), so there is one definition of the format in the project. Conversion
//! into checked byte types ([`crate::GetKeyResponse`], [`crate::AppInfo`], ...) gives an error
//! naming the bad field.
//!
//! Hex on this wire is lowercase without a `0x` prefix; when reading we also accept `0x`.

use serde::{Deserialize, Serialize};

/// `POST /GetKey` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKeyRequest {
    /// Derivation path; the only input that changes the key.
    pub path: String,
    /// Purpose string; it is signed into `signature_chain[0]` but does not change the key.
    pub purpose: String,
}

/// `POST /GetKey` response body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetKeyResponse {
    /// 32-byte derived secret key, hex.
    pub key: String,
    /// `[app signature over derived pubkey, KMS root signature over app pubkey]`, 65-byte hex each.
    pub signature_chain: Vec<String>,
}

// Hand-written so that the secret key never ends up in logs through `{:?}`.
impl std::fmt::Debug for GetKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetKeyResponse")
            .field("key", &"<redacted>")
            .field("signature_chain", &self.signature_chain)
            .finish()
    }
}

/// `POST /GetQuote` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetQuoteRequest {
    /// Up to 64 bytes, hex; the agent zero-pads it to 64 bytes.
    pub report_data: String,
}

/// `POST /GetQuote` response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetQuoteResponse {
    /// The quote, hex.
    pub quote: String,
    /// The event log, a JSON document encoded as a string.
    pub event_log: String,
    /// The (padded) report data the quote carries, hex, when the agent echoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_data: Option<String>,
    /// The VM configuration, a JSON document encoded as a string, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<String>,
}

/// `POST /Info` response body. Unknown fields are ignored; optional ones may be absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// 20-byte app id, hex. In AttestMesh it is the node's ERC-4337 member account address.
    pub app_id: String,
    /// Instance id, hex.
    pub instance_id: String,
    /// 32-byte compose hash, hex.
    pub compose_hash: String,
    /// 32-byte device id, hex.
    pub device_id: String,
    /// App name from the compose.
    pub app_name: String,
    /// OS image hash, hex, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_image_hash: Option<String>,
    /// Key provider description, a JSON document encoded as a string, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_provider_info: Option<String>,
    /// TCB info (measurements, event log), a JSON document encoded as a string, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcb_info: Option<String>,
    /// The app's TLS certificate (PEM), when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_cert: Option<String>,
    /// VM configuration, a JSON document encoded as a string, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<String>,
}

/// Error body: dstack answers failures as `{"error": "..."}` with HTTP 400 or 500.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// dstack's message.
    pub error: String,
}

/// Decode hex as it appears on this wire: lowercase or uppercase, optional `0x` prefix.
pub fn decode_hex(value: &str) -> Result<Vec<u8>, String> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
        .unwrap_or(value);
    hex::decode(digits).map_err(|err| format!("not hex ({err})"))
}

/// Decode hex of exactly `N` bytes (see [`decode_hex`]).
pub fn decode_hex_array<const N: usize>(value: &str) -> Result<[u8; N], String> {
    let bytes = decode_hex(value)?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("expected {N} bytes, got {len}"))
}

/// Encode bytes the way dstack does: lowercase hex, no `0x`.
pub fn encode_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}
