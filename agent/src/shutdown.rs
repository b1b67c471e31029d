//! One shutdown signal every task watches, so they stop together.

use std::sync::Arc;

use tokio::sync::watch;

/// Cancelled once; every clone sees it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver that sees the cancellation (for streams that must end with it).
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Sleeps `duration`; false when shutdown came first.
    pub async fn sleep(&self, duration: std::time::Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.cancelled() => false,
        }
    }

    /// Completes once cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the wait ends only by cancellation.
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }
}
