//! The simulator's stand-in for a TDX quote, and its event log.
//!
//! A simulated quote is **not** a TDX quote and nothing should accept it as one: it starts with
//! an ASCII banner saying so (a real TDX v4 quote starts with the bytes `04 00`), followed by
//! fixed-size fields a devnet verifier can read back with [`SimulatedQuote::parse`]:
//!
//! | bytes | field |
//! |---|---|
//! | 48 | [`SIMULATED_QUOTE_MAGIC`] |
//! | 64 | report data (the request's, zero-padded to 64 bytes) |
//! | 20 | app id |
//! | 32 | compose hash |
//! | 32 | device id |

use attestmesh_dstack::wire;
use serde_json::json;
use sha2::{Digest, Sha384};

/// First bytes of every simulated quote.
pub const SIMULATED_QUOTE_MAGIC: &[u8] = b"ATTESTMESH SIMULATED QUOTE v1: NOT A TDX QUOTE.\n";

/// dstack's event type for app events in RTMR3.
const DSTACK_EVENT_TYPE: u32 = 0x0800_0001;

/// The fields of a simulated quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedQuote {
    /// Report data, zero-padded to 64 bytes.
    pub report_data: [u8; 64],
    /// App id of the simulated CVM.
    pub app_id: [u8; 20],
    /// Compose hash of the simulated CVM.
    pub compose_hash: [u8; 32],
    /// Device id of the simulated CVM.
    pub device_id: [u8; 32],
}

impl SimulatedQuote {
    const LEN: usize = SIMULATED_QUOTE_MAGIC.len() + 64 + 20 + 32 + 32;

    /// Serialize as described in the module docs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(SIMULATED_QUOTE_MAGIC);
        out.extend_from_slice(&self.report_data);
        out.extend_from_slice(&self.app_id);
        out.extend_from_slice(&self.compose_hash);
        out.extend_from_slice(&self.device_id);
        out
    }

    /// Read a simulated quote back; `None` if `quote` is not one (e.g. a real TDX quote).
    pub fn parse(quote: &[u8]) -> Option<Self> {
        let body = quote.strip_prefix(SIMULATED_QUOTE_MAGIC)?;
        if body.len() != Self::LEN - SIMULATED_QUOTE_MAGIC.len() {
            return None;
        }
        let (report_data, rest) = body.split_first_chunk::<64>()?;
        let (app_id, rest) = rest.split_first_chunk::<20>()?;
        let (compose_hash, rest) = rest.split_first_chunk::<32>()?;
        let device_id = rest.first_chunk::<32>()?;
        Some(Self {
            report_data: *report_data,
            app_id: *app_id,
            compose_hash: *compose_hash,
            device_id: *device_id,
        })
    }
}

/// The event log as a JSON string, shaped like dstack's RTMR3 events (`imr`, `event_type`,
/// `digest`, `event`, `event_payload`). The digest is SHA-384 over
/// `event_type (u32 LE) ‖ ":" ‖ event ‖ ":" ‖ payload`; it replays into no real register,
/// since the quote is simulated.
pub(crate) fn event_log_json(events: &[(&str, &[u8])]) -> serde_json::Value {
    let entries: Vec<_> = events
        .iter()
        .map(|(event, payload)| {
            let mut hasher = Sha384::new();
            hasher.update(DSTACK_EVENT_TYPE.to_le_bytes());
            hasher.update(b":");
            hasher.update(event.as_bytes());
            hasher.update(b":");
            hasher.update(payload);
            json!({
                "imr": 3,
                "event_type": DSTACK_EVENT_TYPE,
                "digest": wire::encode_hex(hasher.finalize()),
                "event": event,
                "event_payload": wire::encode_hex(payload),
            })
        })
        .collect();
    serde_json::Value::Array(entries)
}
