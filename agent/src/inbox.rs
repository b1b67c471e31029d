//! Messages delivered to the app, in chain order, with resumable cursors.
//!
//! The inbox is rebuilt from the chain at every start (messages are events), so an app that
//! reconnects with the cursor of the last message it handled gets everything after it, once.

use std::sync::Arc;

use alloy::primitives::B256;
use tokio::sync::{Mutex, broadcast};

/// A decrypted, sender-authenticated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub sender_id: u64,
    pub payload: Vec<u8>,
    pub envelope_id: B256,
    pub block_number: u64,
    pub tx_hash: B256,
    pub log_index: u64,
}

/// A position in the inbox: (block number, log index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub block_number: u64,
    pub log_index: u64,
}

impl Cursor {
    /// `"<block>-<log index>"`.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.block_number, self.log_index)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let (block, index) = text
            .split_once('-')
            .ok_or_else(|| format!("cursor {text:?} is not <block>-<log index>"))?;
        Ok(Self {
            block_number: block
                .parse()
                .map_err(|_| format!("cursor {text:?}: block is not a number"))?,
            log_index: index
                .parse()
                .map_err(|_| format!("cursor {text:?}: log index is not a number"))?,
        })
    }
}

impl InboundMessage {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            block_number: self.block_number,
            log_index: self.log_index,
        }
    }
}

/// The inbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<InboundMessage>>>,
    live: broadcast::Sender<InboundMessage>,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbox {
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            messages: Arc::new(Mutex::new(Vec::new())),
            live,
        }
    }

    /// Appends a message unless its envelope was already delivered (an envelope id is unique
    /// per recipient and sender on chain, so this also absorbs a message re-mined after a
    /// reorg; two senders may use the same id).
    /// Returns whether it was new.
    pub async fn push(&self, message: InboundMessage) -> bool {
        let mut messages = self.messages.lock().await;
        if messages
            .iter()
            .any(|m| m.envelope_id == message.envelope_id && m.sender_id == message.sender_id)
        {
            return false;
        }
        let position = messages.partition_point(|m| m.cursor() <= message.cursor());
        messages.insert(position, message.clone());
        let _ = self.live.send(message);
        true
    }

    /// Messages after `cursor` (all when `None`), and a receiver for the ones that follow.
    /// Subscribing under the lock means nothing falls between the snapshot and the stream.
    pub async fn since(
        &self,
        cursor: Option<Cursor>,
    ) -> (Vec<InboundMessage>, broadcast::Receiver<InboundMessage>) {
        let messages = self.messages.lock().await;
        let receiver = self.live.subscribe();
        let backlog = messages
            .iter()
            .filter(|m| cursor.is_none_or(|c| m.cursor() > c))
            .cloned()
            .collect();
        (backlog, receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(block: u64, index: u64, envelope: u8) -> InboundMessage {
        InboundMessage {
            sender_id: 1,
            payload: vec![envelope],
            envelope_id: B256::repeat_byte(envelope),
            block_number: block,
            tx_hash: B256::ZERO,
            log_index: index,
        }
    }

    #[tokio::test]
    async fn resume_after_cursor_misses_and_repeats_nothing() {
        let inbox = Inbox::new();
        inbox.push(message(5, 0, 1)).await;
        inbox.push(message(5, 3, 2)).await;
        inbox.push(message(9, 1, 3)).await;
        assert!(
            !inbox.push(message(12, 0, 2)).await,
            "a re-mined envelope is not delivered twice"
        );
        let (after, mut live) = inbox.since(Some(Cursor::parse("5-0").unwrap())).await;
        assert_eq!(
            after.iter().map(|m| m.payload[0]).collect::<Vec<_>>(),
            [2, 3]
        );
        inbox.push(message(10, 0, 4)).await;
        assert_eq!(live.recv().await.unwrap().payload, [4]);
    }

    #[test]
    fn cursor_round_trip_and_errors() {
        let cursor = Cursor {
            block_number: 47_000_001,
            log_index: 3,
        };
        assert_eq!(Cursor::parse(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::parse("nope").is_err());
        assert!(Cursor::parse("1-x").is_err());
    }
}
