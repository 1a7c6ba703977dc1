//! TLS with rustls (ring provider): a certificate chain and a private key,
//! both PEM files, checked at startup.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("tls-cert {path}: {detail}; give a PEM file with the certificate chain")]
    Cert { path: PathBuf, detail: String },
    #[error("tls-key {path}: {detail}; give a PEM file with the private key")]
    Key { path: PathBuf, detail: String },
    #[error("tls-key {path} is readable by other users; chmod 600 it")]
    KeyExposed { path: PathBuf },
    #[error("tls-cert {cert} and tls-key {key} do not make a TLS configuration: {detail}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |detail: String| TlsError::Cert {
        path: cert.to_owned(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no certificate in the file".to_owned()));
    }
    let mode = std::fs::metadata(key)
        .map_err(|e| TlsError::Key {
            path: key.to_owned(),
            detail: e.to_string(),
        })?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        return Err(TlsError::KeyExposed {
            path: key.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        detail: e.to_string(),
    })?;
    let config_error = |detail: String| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        detail,
    };
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_error(e.to_string()))
}
