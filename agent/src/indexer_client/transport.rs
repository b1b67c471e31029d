//! The gRPC channel to one indexer: TLS through the dstack gateway assuming HTTP/2 (field
//! note 10), or h2c on the devnet; and how transport errors are worded.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tracing::debug;

use attestmesh_service::report::error_chain;

use super::{IndexerClientConfig, IndexerClientError, LOG_TARGET, install_ring_provider};

/// A channel to `endpoint`: TLS assuming h2 for `https://` (field note 10), h2c for `http://`.
pub async fn connect(
    config: &IndexerClientConfig,
    endpoint: &str,
) -> Result<Channel, IndexerClientError> {
    let unusable = |reason: String| IndexerClientError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| unusable(format!("not a URI: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| unusable("no host".into()))?
        .to_string();
    let builder = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| unusable(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let connect_error = |e: tonic::transport::Error| IndexerClientError::Connect {
        endpoint: endpoint.to_string(),
        reason: error_chain(&e),
    };
    match uri.scheme_str() {
        Some("https") => {
            install_ring_provider();
            // The gateway terminates TLS on its no-suffix route and negotiates no ALPN although
            // it forwards h2: trust the verified behaviour over the negotiation (field note 10).
            let mut tls = ClientTlsConfig::new()
                .with_enabled_roots()
                .domain_name(host.clone())
                .assume_http2(true);
            if let Some(pem) = &config.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            let builder = builder
                .tls_config(tls)
                .map_err(|e| unusable(format!("TLS configuration: {}", error_chain(&e))))?;
            match config.gateway_connect {
                Some(gateway) => {
                    debug!(target: LOG_TARGET, %endpoint, %gateway, sni = %host, "connecting through the gateway address");
                    let connector = tower::service_fn(move |_: Uri| async move {
                        tokio::net::TcpStream::connect(gateway)
                            .await
                            .map(hyper_util::rt::TokioIo::new)
                    });
                    builder
                        .connect_with_connector(connector)
                        .await
                        .map_err(connect_error)
                }
                None => builder.connect().await.map_err(connect_error),
            }
        }
        Some("http") => builder.connect().await.map_err(connect_error),
        other => Err(unusable(format!(
            "scheme {other:?}; use https (through the gateway) or http (devnet)"
        ))),
    }
}

pub(super) fn rpc_error(
    endpoint: &str,
    call: &'static str,
    status: tonic::Status,
) -> IndexerClientError {
    IndexerClientError::Rpc {
        endpoint: endpoint.to_string(),
        call,
        status: Box::new(status),
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    alloy::hex::encode(bytes)
}
