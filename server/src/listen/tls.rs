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

/// PEM files larger than this are not a certificate chain or a key.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// `path` is a regular file of at most [`MAX_PEM_BYTES`]: reading a device,
/// a FIFO or a huge file would hang or fill memory before any check.
fn pem_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "is {} bytes, more than a PEM file's {MAX_PEM_BYTES}",
            meta.len()
        ));
    }
    Ok(())
}

/// The rustls configuration from PEM files `cert` (the chain) and `key`.
/// Errors: either file missing, not a regular PEM file of at most 1 MiB,
/// holding nothing usable, the key readable by others, or the two not
/// matching.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |detail: String| TlsError::Cert {
        path: cert.to_owned(),
        detail,
    };
    pem_file(cert).map_err(cert_error)?;
    pem_file(key).map_err(|detail| TlsError::Key {
        path: key.to_owned(),
        detail,
    })?;
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
