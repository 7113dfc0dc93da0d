//! rustls `ServerConfig` from PEM files, with ALPN offering h2 then http/1.1.

use std::sync::Arc;

use crate::config::TlsFiles;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Build a server config from the listener's PEM files.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let pem_err = |path: &std::path::Path, why: String| TlsError::Pem {
        path: path.display().to_string(),
        why,
    };
    let cert_pem = std::fs::read(&files.cert).map_err(|e| pem_err(&files.cert, e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(&files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(&files.cert, "no certificate found".into()));
    }
    let key_pem = std::fs::read(&files.key).map_err(|e| pem_err(&files.key, e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| pem_err(&files.key, e.to_string()))?
        .ok_or_else(|| pem_err(&files.key, "no private key found".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
