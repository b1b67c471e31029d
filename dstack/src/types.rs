//! Checked, byte-typed responses, converted from the [`crate::wire`] structs.
//! A malformed field becomes [`DstackError::InvalidResponse`] naming the endpoint and field.

use crate::chain::{
    EthAddress, RecoveredChain, SecretKeyBytes, SignatureChain, recover_signature_chain_for_secret,
};
use crate::error::{DstackError, Result};
use crate::wire;

/// A `/GetKey` answer: the derived secret key and the signature chain proving its origin.
#[derive(Debug, Clone)]
pub struct GetKeyResponse {
    /// The 32-byte derived key (a secp256k1 scalar for the chain; usable as seed for others).
    pub key: SecretKeyBytes,
    /// The parsed signature chain.
    pub signature_chain: SignatureChain,
}

impl GetKeyResponse {
    /// Recover the app pubkey and KMS root that vouch for this key. `app_id` and `purpose` must
    /// be the ones the agent signed (the app id from `/Info`, the purpose of the request).
    pub fn recover_chain(&self, app_id: &[u8; 20], purpose: &str) -> Result<RecoveredChain> {
        recover_signature_chain_for_secret(app_id, purpose, &self.key, &self.signature_chain)
    }
}

impl TryFrom<wire::GetKeyResponse> for GetKeyResponse {
    type Error = DstackError;

    fn try_from(raw: wire::GetKeyResponse) -> Result<Self> {
        let key = wire::decode_hex_array::<32>(&raw.key)
            .map_err(|reason| invalid("/GetKey", "key", reason))?;
        Ok(Self {
            key: SecretKeyBytes::new(key),
            signature_chain: SignatureChain::from_hex_list(&raw.signature_chain)?,
        })
    }
}

/// A `/GetQuote` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteResponse {
    /// The quote bytes (a TDX quote on real hardware; a labelled fake from the simulator).
    pub quote: Vec<u8>,
    /// The event log, a JSON document as dstack sends it (a string).
    pub event_log: String,
    /// The 64-byte report data the quote carries, when the agent echoes it.
    pub report_data: Option<Vec<u8>>,
    /// VM configuration JSON, when present.
    pub vm_config: Option<String>,
}

impl TryFrom<wire::GetQuoteResponse> for QuoteResponse {
    type Error = DstackError;

    fn try_from(raw: wire::GetQuoteResponse) -> Result<Self> {
        let quote =
            wire::decode_hex(&raw.quote).map_err(|reason| invalid("/GetQuote", "quote", reason))?;
        let report_data = raw
            .report_data
            .as_deref()
            .map(wire::decode_hex)
            .transpose()
            .map_err(|reason| invalid("/GetQuote", "report_data", reason))?;
        Ok(Self {
            quote,
            event_log: raw.event_log,
            report_data,
            vm_config: raw.vm_config,
        })
    }
}

/// An `/Info` answer: who this CVM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// The app id (20 bytes). In AttestMesh, the node's ERC-4337 member account address.
    pub app_id: EthAddress,
    /// The instance id.
    pub instance_id: Vec<u8>,
    /// The compose hash the CVM booted.
    pub compose_hash: [u8; 32],
    /// The device id.
    pub device_id: [u8; 32],
    /// The app name.
    pub app_name: String,
    /// OS image hash, when present.
    pub os_image_hash: Option<Vec<u8>>,
    /// Key provider description JSON, when present.
    pub key_provider_info: Option<String>,
    /// TCB info JSON, when present.
    pub tcb_info: Option<String>,
    /// The app certificate (PEM), when present.
    pub app_cert: Option<String>,
    /// VM configuration JSON, when present.
    pub vm_config: Option<String>,
}

impl TryFrom<wire::InfoResponse> for AppInfo {
    type Error = DstackError;

    fn try_from(raw: wire::InfoResponse) -> Result<Self> {
        let field = |name: &'static str| move |reason| invalid("/Info", name, reason);
        // An empty os_image_hash means "not reported", the same as absent.
        let os_image_hash = match raw.os_image_hash.as_deref() {
            None | Some("") => None,
            Some(value) => Some(wire::decode_hex(value).map_err(field("os_image_hash"))?),
        };
        Ok(Self {
            app_id: EthAddress::from_hex(&raw.app_id).map_err(field("app_id"))?,
            instance_id: wire::decode_hex(&raw.instance_id).map_err(field("instance_id"))?,
            compose_hash: wire::decode_hex_array(&raw.compose_hash)
                .map_err(field("compose_hash"))?,
            device_id: wire::decode_hex_array(&raw.device_id).map_err(field("device_id"))?,
            app_name: raw.app_name,
            os_image_hash,
            key_provider_info: raw.key_provider_info,
            tcb_info: raw.tcb_info,
            app_cert: raw.app_cert,
            vm_config: raw.vm_config,
        })
    }
}

fn invalid(endpoint: &'static str, field: &str, reason: String) -> DstackError {
    DstackError::InvalidResponse {
        endpoint,
        reason: format!("field {field}: {reason}"),
    }
}
