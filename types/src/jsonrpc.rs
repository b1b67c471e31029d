//! JSON-RPC 2.0 envelopes, shared by the clients and the devnet services.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request. `id` is kept as JSON so any client's ids round-trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    pub id: Value,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

impl Request {
    pub fn new(id: u64, method: &str, params: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id: Value::from(id),
            method: method.into(),
            params,
        }
    }
}

/// A response: exactly one of `result` and `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Value,
    /// `Some(Value::Null)` for `"result": null` (a valid answer: "no receipt yet"), `None` when
    /// the member is absent, which is no answer at all and must not be read as `null`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

/// Deserializes a member that is present, `null` included, as `Some`; serde's `default` leaves an
/// absent one `None`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(id: Value, error: ErrorObject) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct ErrorObject {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

/// Standard and ERC-4337 (ERC-7769) error codes.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// ERC-7769: the operation was rejected during validation (an AA error).
    pub const REJECTED_BY_ENTRY_POINT: i64 = -32500;
    /// ERC-7769: the paymaster rejected the operation.
    pub const REJECTED_BY_PAYMASTER: i64 = -32501;
    /// ERC-7769: the operation reverted during execution (gas estimation).
    pub const EXECUTION_REVERTED: i64 = -32521;
    /// The paymaster webhook or policy denied sponsorship.
    pub const SPONSORSHIP_DENIED: i64 = -32600;
}
