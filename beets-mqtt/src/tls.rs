//! The rustls client configuration for `mqtts://` (provider `ring`).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsOptions;
use crate::error::ConfigError;
use crate::link::tls_error;

/// Builds the client configuration: the CA file's certificates (or the system's trust store)
/// as roots, and the client certificate and key when given.
///
/// # Errors
/// [`ConfigError::Tls`] naming the file or step: unreadable or empty CA file, no usable system
/// root, a bad certificate or key.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore::empty();
    match &opts.ca_file {
        Some(path) => {
            let what = format!("CA file {}", path.display());
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_error(&what, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(&what, e))?;
            if certs.is_empty() {
                return Err(tls_error(&what, "no certificate in it"));
            }
            for c in certs {
                roots.add(c).map_err(|e| tls_error(&what, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                // A system store may hold certificates rustls cannot use; skip those.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(tls_error(
                    "system trust store",
                    "no usable root certificate; give a CA file",
                ));
            }
        }
    }
    // `ring` without post-quantum key exchange: the provider this crate builds against (the
    // default aws-lc-rs provider needs cmake); brokers speak X25519/P-256 anyway.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_root_certificates(roots);
    let config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let what = format!("client certificate {}", cert.display());
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls_error(&what, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(&what, e))?;
            let kwhat = format!("client key {}", key.display());
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(&kwhat, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error(&what, e))?
        }
    };
    Ok(Arc::new(config))
}
