//! The transport's TLS: a deterministic self-signed identity per node, the server configuration
//! that presents it, and the dialer's configuration that pins the peer's certificate by its
//! SHA-256 fingerprint instead of trusting any CA.
//!
//! rustls is given the `ring` provider explicitly everywhere: the workspace also compiles
//! aws-lc-rs, and a builder left to pick the process default could panic at runtime.

use std::fmt;
use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ED25519, SerialNumber,
    date_time_ymd,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, ServerConfig,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::error::{MeshError, Result};

/// ALPN id of the transport. A client of another protocol that reaches the listener by mistake
/// fails the handshake instead of being fed WireGuard frames.
pub(super) const ALPN: &[u8] = b"attestmesh-wg/1";

/// Domain separation: the seed is hashed with this label before it becomes the Ed25519 key, so
/// the same seed used elsewhere never yields this key.
const KEY_LABEL: &[u8] = b"attestmesh/v1/mesh-transport-tls/ed25519";

/// PKCS#8 v1 framing of a raw Ed25519 private key (RFC 8410): SEQUENCE { version 0,
/// AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET STRING (32 bytes) } }.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The provider every TLS object of the mesh uses.
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's transport TLS identity: a self-signed Ed25519 certificate derived deterministically
/// from a 32-byte seed (a TEE-derived key), so a restarted node presents the same certificate and
/// the fingerprint its peers pinned stays valid. The fingerprint is SHA-256 of the certificate
/// DER.
///
/// Determinism comes from Ed25519 (deterministic signatures), a fixed serial number, fixed
/// validity dates and fixed names: the certificate is a pure function of the seed.
#[derive(Clone)]
pub struct TlsIdentity {
    cert: CertificateDer<'static>,
    key_pkcs8: Arc<Zeroizing<Vec<u8>>>,
    fingerprint: [u8; 32],
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &hex32(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Build the identity for `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self> {
        let mut hasher = Sha256::new();
        hasher.update(KEY_LABEL);
        hasher.update(seed);
        let secret = Zeroizing::new(<[u8; 32]>::from(hasher.finalize()));
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
        pkcs8.extend_from_slice(secret.as_slice());

        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
            &PKCS_ED25519,
        )?;
        let mut params = CertificateParams::new(vec!["attestmesh-transport".to_owned()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "AttestMesh mesh transport");
        params.distinguished_name = name;
        params.serial_number = Some(SerialNumber::from(vec![1]));
        params.not_before = date_time_ymd(2025, 1, 1);
        params.not_after = date_time_ymd(9999, 12, 31);
        let cert = params.self_signed(&key)?.der().clone();
        let fingerprint = fingerprint(&cert);
        Ok(Self {
            cert,
            key_pkcs8: Arc::new(pkcs8),
            fingerprint,
        })
    }

    /// SHA-256 of the certificate DER: what peers pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// The server side of the transport: presents this certificate, asks for no client
    /// certificate (WireGuard authenticates the peer inside the tunnel), TLS 1.3 only.
    pub(super) fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let tls = |what| move |source| MeshError::Tls { what, source };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.to_vec()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls("server protocol versions"))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .map_err(tls("server certificate"))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // Dialers never resume (see `client_config`): tickets would be wasted bytes.
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }
}

/// SHA-256 of a certificate's DER encoding.
pub fn fingerprint(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// The dialer's TLS configuration for one peer: the server certificate must hash to `pinned`;
/// names, CAs and validity dates are not checked (the pin replaces the PKI), but the handshake
/// signature is, with the ring provider's algorithms, so the server must hold the pinned key.
/// Session resumption is off, so every connection proves the pinned key afresh. Public for
/// tools and tests that speak the transport themselves.
pub fn client_config(pinned: [u8; 32]) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = PinnedServerCert {
        pinned,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| MeshError::Tls {
            what: "client protocol versions",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The gateway host name that reaches `port` of `app_id` through TLS passthrough:
/// `<40 lowercase hex>-<port>s.<domain>` (the `s` route of the dstack gateway).
pub fn gateway_sni(app_id: &[u8; 20], port: u16, domain: &str) -> String {
    let mut name = String::with_capacity(64 + domain.len());
    for byte in app_id {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push_str(&format!("-{port}s.{}", domain.to_ascii_lowercase()));
    name
}

/// Parse a gateway host name for rustls (it must be a valid DNS name).
pub(super) fn server_name(sni: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(sni.to_owned()).map_err(|err| {
        MeshError::InvalidConfig(format!(
            "the gateway name {sni:?} is not a valid DNS name ({err}); check the gateway domain"
        ))
    })
}

/// Lowercase hex of a fingerprint, for logs and errors.
pub(super) fn hex32(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts exactly the certificate whose SHA-256 is `pinned`.
#[derive(Debug)]
struct PinnedServerCert {
    pinned: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

/// The presented certificate is not the pinned one.
#[derive(thiserror::Error)]
#[error("certificate fingerprint {got} is not the pinned {pinned}")]
struct PinMismatch {
    got: String,
    pinned: String,
}

// rustls prints certificate errors with `{:?}`: make that the readable message.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity.as_ref());
        // Not a secret comparison: the fingerprint is public (it travels in envelopes).
        if got == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    got: hex32(&got),
                    pinned: hex32(&self.pinned),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    #[test]
    fn the_identity_is_a_pure_function_of_the_seed() {
        let a = TlsIdentity::from_seed(&[7; 32]).unwrap();
        let again = TlsIdentity::from_seed(&[7; 32]).unwrap();
        let other = TlsIdentity::from_seed(&[8; 32]).unwrap();
        assert_eq!(a.certificate_der(), again.certificate_der());
        assert_eq!(a.fingerprint(), again.fingerprint());
        assert_ne!(a.fingerprint(), other.fingerprint());
        assert_eq!(a.fingerprint(), fingerprint(a.certificate_der()));
        // The Debug form never shows key material.
        assert!(!format!("{a:?}").contains("key"));
    }

    #[test]
    fn the_sni_is_the_gateway_passthrough_name() {
        let mut app = [0u8; 20];
        app[0] = 0xAB;
        app[19] = 0x01;
        assert_eq!(
            gateway_sni(&app, 51820, "Devnet.AttestMesh.local"),
            "ab00000000000000000000000000000000000001-51820s.devnet.attestmesh.local"
        );
        assert!(server_name(&gateway_sni(&app, 1, "devnet.attestmesh.local")).is_ok());
        assert!(server_name("not a name").is_err());
    }

    async fn handshake(server: &TlsIdentity, pin: [u8; 32]) -> Result<(), String> {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(server.server_config().unwrap());
        let connector = TlsConnector::from(client_config(pin).unwrap());
        let name = server_name("peer.devnet.attestmesh.local").unwrap();
        let serve = tokio::spawn(async move {
            let mut tls = acceptor
                .accept(server_io)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())
        });
        let mut tls = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
        let mut got = [0u8; 4];
        tls.read_exact(&mut got).await.map_err(|e| e.to_string())?;
        assert_eq!(&got, b"pong");
        serve.await.unwrap()
    }

    #[tokio::test]
    async fn the_dialer_accepts_the_pinned_certificate_and_refuses_any_other() {
        let server = TlsIdentity::from_seed(&[1; 32]).unwrap();
        handshake(&server, server.fingerprint()).await.unwrap();
        let err = handshake(&server, [0xEE; 32]).await.unwrap_err();
        assert!(err.contains("is not the pinned"), "{err}");
    }
}
