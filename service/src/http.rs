//! HTTP servers: the small ones the binaries run beside their main job (health, status,
//! metrics), served until the shutdown signal with an error end logged rather than lost
//! ([`serve`]); and a server its owner stops and whose end it reads ([`Server`]: the webhook,
//! the devnet's bundler and gas manager).

use std::fmt::Debug;
use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::listen::{ListenError, bind_tcp};
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

/// A running HTTP server that its owner stops: dropping it stops the server at once;
/// [`Server::shutdown`] lets in-flight requests finish. Handlers can read the peer's address
/// (`ConnectInfo<SocketAddr>`).
#[derive(Debug)]
pub struct Server {
    what: &'static str,
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// How a served HTTP task ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The server stopped with an I/O error.
    #[error("{what}: the HTTP server failed: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped without being asked to.
    #[error("{what}: the HTTP server stopped without being asked to")]
    StoppedUnexpectedly { what: &'static str },
    /// The server task panicked or was cancelled.
    #[error("{what}: the HTTP server task ended abnormally: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Server {
    /// Binds `listen` for `what` and serves `app` on it. Must be called inside a tokio runtime.
    pub async fn start(
        what: &'static str,
        listen: SocketAddr,
        app: axum::Router,
    ) -> Result<Self, ListenError> {
        let (listener, local_addr) = bind_tcp(what, listen).await?;
        Ok(Self::serve_on(what, listener, local_addr, app))
    }

    /// Serves `app` on a listener already bound (with [`bind_tcp`]) at `local_addr`.
    pub fn serve_on(
        what: &'static str,
        listener: tokio::net::TcpListener,
        local_addr: SocketAddr,
        app: axum::Router,
    ) -> Self {
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // An explicit shutdown and a dropped handle both end the server.
                    let _ = shutdown_rx.await;
                })
                .await
        });
        Self {
            what,
            local_addr,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        }
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish, reports how the server ended.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        let task = self.task.take();
        self.stop(task).await
    }

    /// Serves until `signal` completes, then shuts down gracefully; an error if the server
    /// stops by itself first.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        let what = self.what;
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            () = signal => {}
            ended = &mut task => {
                return match ended {
                    Ok(Ok(())) => Err(ServeError::StoppedUnexpectedly { what }),
                    Ok(Err(source)) => Err(ServeError::Io { what, source }),
                    Err(source) => Err(ServeError::Task { what, source }),
                };
            }
        }
        self.stop(Some(task)).await
    }

    async fn stop(
        &mut self,
        task: Option<JoinHandle<std::io::Result<()>>>,
    ) -> Result<(), ServeError> {
        let what = self.what;
        if let Some(tx) = self.shutdown.take() {
            // The server may have stopped on its own already; its result is read below.
            let _ = tx.send(());
        }
        match task {
            Some(task) => match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(ServeError::Io { what, source }),
                Err(source) => Err(ServeError::Task { what, source }),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Nobody will await the task: stop it now rather than wait for idle keep-alive
        // connections.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{ServeError, Server};

    async fn get_root(server: &Server) -> String {
        let mut stream = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn serves_until_the_signal_then_stops_and_the_port_is_free_again() {
        let app = axum::Router::new().route("/", get(|| async { "hello" }));
        let server = Server::start("a test", "127.0.0.1:0".parse().unwrap(), app)
            .await
            .unwrap();
        let address = server.local_addr();
        assert!(get_root(&server).await.ends_with("hello"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run_until(async move {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("run_until returns once signalled")
            .unwrap()
            .unwrap();
        tokio::net::TcpListener::bind(address)
            .await
            .expect("the port is released");
    }

    #[tokio::test]
    async fn a_dropped_handle_stops_the_server() {
        let app = axum::Router::new().route("/", get(|| async { "hello" }));
        let server = Server::start("a test", "127.0.0.1:0".parse().unwrap(), app)
            .await
            .unwrap();
        let address = server.local_addr();
        drop(server);
        let refused = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if tokio::net::TcpStream::connect(address).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(refused.is_ok(), "the dropped server still accepts");
        // Named so that a caller can tell which server ended how.
        let err = ServeError::StoppedUnexpectedly { what: "a test" };
        assert_eq!(
            err.to_string(),
            "a test: the HTTP server stopped without being asked to"
        );
    }
}
