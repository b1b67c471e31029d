//! One shutdown signal every task of a process watches, so they stop together, and the
//! SIGINT/SIGTERM handlers that trip it.

use std::sync::Arc;

use eyre::WrapErr;
use tokio::sync::watch;
use tracing::warn;

const LOG_TARGET: &str = "attestmesh::service";

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

    /// Cancels this shutdown on SIGINT or SIGTERM (from a task of its own).
    pub fn cancel_on_signals(&self) -> eyre::Result<()> {
        let signalled = signals()?;
        let shutdown = self.clone();
        tokio::spawn(async move {
            signalled.await;
            shutdown.cancel();
        });
        Ok(())
    }
}

/// Completes on SIGINT or SIGTERM. Both handlers are installed before this returns, so a signal
/// that cannot be watched is an error now rather than a process that cannot be stopped later.
pub fn signals() -> eyre::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).wrap_err("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).wrap_err("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => warn!(target: LOG_TARGET, "SIGTERM received, shutting down"),
            _ = interrupt.recv() => warn!(target: LOG_TARGET, "SIGINT received, shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Shutdown;

    /// Every clone sees the cancellation, a sleep is cut short, and waiting ends.
    #[tokio::test]
    async fn a_cancel_reaches_every_clone_and_cuts_a_sleep_short() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        let sleeper = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.sleep(std::time::Duration::from_secs(3600)).await }
        });
        assert!(!watcher.is_cancelled());
        shutdown.cancel();
        watcher.cancelled().await;
        assert!(watcher.is_cancelled());
        assert!(!sleeper.await.unwrap(), "the sleep ended by the shutdown");
    }
}
