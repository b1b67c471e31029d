//! Hex encodings for JSON-RPC values.
//!
//! Field note 2: Alchemy's gas manager rejected an odd-length hex string. Every hex value this
//! project sends is therefore even-length: quantities are written with a leading zero nibble when
//! needed (`0x0a`, never `0xa`; zero is `0x00`). Reading is lenient: `0xa`, `0x0a` and decimal
//! JSON numbers are all accepted, because peers differ.

use alloy::primitives::U256;
use serde::{Deserialize, Deserializer, Serializer, de};

/// `value` as an even-length 0x-prefixed hex quantity.
pub fn even_quantity(value: U256) -> String {
    let digits = format!("{value:x}");
    if digits.len() % 2 == 1 {
        format!("0x0{digits}")
    } else {
        format!("0x{digits}")
    }
}

/// `bytes` as 0x-prefixed lowercase hex (always even-length).
pub fn bytes_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("0x");
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Whether `text` is `0x` followed by an even number of hex digits.
pub fn is_even_hex(text: &str) -> bool {
    text.strip_prefix("0x").is_some_and(|digits| {
        digits.len() % 2 == 0 && digits.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Parses a quantity given as hex (`0x..`, any length) or as a decimal string or JSON number.
pub fn parse_quantity(value: &serde_json::Value) -> Result<U256, String> {
    match value {
        serde_json::Value::String(text) => {
            if let Some(digits) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                if digits.is_empty() {
                    return Err(format!("{text:?} has no digits"));
                }
                U256::from_str_radix(digits, 16)
                    .map_err(|e| format!("{text:?} is not a hex quantity: {e}"))
            } else {
                U256::from_str_radix(text, 10)
                    .map_err(|e| format!("{text:?} is not a quantity: {e}"))
            }
        }
        serde_json::Value::Number(number) => number
            .as_u64()
            .map(U256::from)
            .ok_or_else(|| format!("{number} is not a non-negative integer")),
        other => Err(format!("expected a hex string or a number, got {other}")),
    }
}

/// Serde adapter for `U256` fields: even-length hex out, lenient in.
pub mod quantity {
    use super::*;

    pub fn serialize<S: Serializer>(value: &U256, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&even_quantity(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<U256, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        parse_quantity(&value).map_err(de::Error::custom)
    }
}

/// Serde adapter for `Option<U256>` fields (absent or null is `None`).
pub mod opt_quantity {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<U256>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_str(&even_quantity(*v)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<U256>, D::Error> {
        let value = Option::<serde_json::Value>::deserialize(deserializer)?;
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => parse_quantity(&v).map(Some).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_even_length() {
        assert_eq!(even_quantity(U256::ZERO), "0x00");
        assert_eq!(even_quantity(U256::from(10)), "0x0a");
        assert_eq!(even_quantity(U256::from(0x100)), "0x0100");
        assert_eq!(even_quantity(U256::from(0xabcd)), "0xabcd");
    }

    #[test]
    fn quantities_parse_leniently() {
        for (text, want) in [("0xa", 10u64), ("0x0a", 10), ("10", 10), ("0x00", 0)] {
            assert_eq!(
                parse_quantity(&serde_json::json!(text)),
                Ok(U256::from(want))
            );
        }
        assert_eq!(parse_quantity(&serde_json::json!(7)), Ok(U256::from(7)));
        assert!(parse_quantity(&serde_json::json!("0x")).is_err());
        assert!(parse_quantity(&serde_json::json!("0xzz")).is_err());
        assert!(parse_quantity(&serde_json::json!(-1)).is_err());
    }

    #[test]
    fn even_hex_check() {
        assert!(is_even_hex("0x"));
        assert!(is_even_hex("0x00ff"));
        assert!(!is_even_hex("0x0"));
        assert!(!is_even_hex("00"));
        assert!(!is_even_hex("0xgg"));
    }
}
