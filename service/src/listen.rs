//! TCP listeners, bound the same way by every server: before the server starts, so a taken port
//! fails at start with the address named; with port 0 the address the system chose is the one
//! to report and log.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for {what} on {address}: {source} (is the port taken, by another instance \
     perhaps, or the address not local here? choose another address)"
)]
pub struct ListenError {
    /// What the listener is for, e.g. "the health endpoint".
    pub what: &'static str,
    /// The address as configured.
    pub address: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `address` for `what` and returns the listener with its bound address.
pub async fn bind_tcp(
    what: &'static str,
    address: SocketAddr,
) -> Result<(TcpListener, SocketAddr), ListenError> {
    let error = |source| ListenError {
        what,
        address,
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

#[cfg(test)]
mod tests {
    use super::bind_tcp;

    #[tokio::test]
    async fn port_zero_reports_the_chosen_port_and_a_taken_port_names_itself() {
        let (_held, bound) = bind_tcp("a test", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_ne!(bound.port(), 0);
        let err = bind_tcp("the second listener", bound).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("the second listener") && text.contains(&bound.to_string()),
            "{text}"
        );
    }
}
