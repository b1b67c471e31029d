//! The small HTTP servers the binaries run beside their main job (health, status, metrics):
//! served until the shutdown signal, with an error end logged rather than lost.

use std::fmt::Debug;

use tokio::task::JoinHandle;
use tracing::warn;

use crate::shutdown::Shutdown;

const LOG_TARGET: &str = "attestmesh::service::http";

/// Serves `app` on `listener` (bound with [`crate::listen::bind_tcp`], or a listener wrapping
/// one) until `shutdown` is cancelled.
pub fn serve<L>(
    what: &'static str,
    listener: L,
    app: axum::Router,
    shutdown: Shutdown,
) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: Debug,
{
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            warn!(target: LOG_TARGET, what, %error, "HTTP server stopped with an error");
        }
    })
}
