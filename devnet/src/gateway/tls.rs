//! The gateway's TLS material: a devnet CA generated at start, the `*.<domain>` certificate it
//! issues, and one rustls server configuration per terminating mode.
//!
//! The CA key lives only in memory and is new at every start; clients trust the CA through the
//! PEM file the gateway writes (or [`GatewayHandle::ca_pem`](super::GatewayHandle::ca_pem)).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::error::{GatewayError, Result};

/// ALPN id of HTTP/2, the only protocol the `g` routes negotiate.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider, chosen explicitly: if another crate in the build enables a second
/// rustls provider, the implicit default would be ambiguous and rustls would refuse at runtime.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Everything TLS the gateway needs, made once at start.
#[derive(Debug)]
pub(super) struct GatewayTls {
    /// The devnet CA certificate, PEM.
    pub ca_pem: String,
    /// The devnet CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// No suffix: no ALPN protocol is negotiated, whatever the client offers.
    pub terminate: Arc<ServerConfig>,
    /// Suffix `g`: ALPN `h2` only.
    pub terminate_h2: Arc<ServerConfig>,
}

impl GatewayTls {
    /// Generate a CA and the wildcard certificate for `*.<domain>` (domain already validated).
    pub fn generate(domain: &str) -> Result<Self> {
        let cert_error = |what| move |source| GatewayError::Certificate { what, source };

        let ca_key = KeyPair::generate().map_err(cert_error("CA key"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(cert_error("CA"))?;
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("AttestMesh devnet gateway CA ({domain})"),
        );
        // Path length 0: this CA signs leaf certificates only.
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error("CA"))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let wildcard = format!("*.{domain}");
        let leaf_key = KeyPair::generate().map_err(cert_error("certificate key"))?;
        let mut leaf_params = CertificateParams::new(vec![wildcard.clone()])
            .map_err(cert_error("wildcard certificate"))?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, wildcard);
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(cert_error("wildcard certificate"))?;

        let leaf_der = leaf_cert.der().clone();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let terminate = server_config(leaf_der.clone(), key_der.clone_key(), Vec::new())?;
        let terminate_h2 = server_config(leaf_der, key_der, vec![ALPN_H2.to_vec()])?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            terminate: Arc::new(terminate),
            terminate_h2: Arc::new(terminate_h2),
        })
    }

    /// Write the CA PEM to `path` (creating its directory) through a temporary file and a
    /// rename, so a client polling for the file never reads half of it.
    pub fn write_ca_pem(&self, path: &Path) -> Result<()> {
        let ca_error = |source| GatewayError::CaFile {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(ca_error)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, &self.ca_pem).map_err(ca_error)?;
        std::fs::rename(&tmp, path).map_err(ca_error)
    }
}

fn server_config(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    // Empty = the server never selects a protocol, even when the client offers h2: the
    // behaviour of dstack's gateway on its no-suffix routes (field note 10).
    config.alpn_protocols = alpn;
    Ok(config)
}
