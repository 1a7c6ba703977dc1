//! Signatures for exported narinfos, asked from larder-signer over its
//! unix socket (the protocol of [`larder_store::signer_proto`]). The signer
//! checks every fingerprint against its own view of the local store, so
//! larder-sync can only get signatures for what really is in the store; the
//! key never leaves the signer's process.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use larder_store::signer_proto::{Reply, Request, encode_frame, read_frame_blocking};

use crate::error::{Result, SyncError};

/// How long one request to the signer may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to larder-signer (opened on first use, reopened after an error).
pub struct SignerSocket {
    path: PathBuf,
    conn: Option<UnixStream>,
}

impl SignerSocket {
    pub fn new(path: PathBuf) -> SignerSocket {
        SignerSocket { path, conn: None }
    }

    fn fail(&self, detail: String) -> SyncError {
        SyncError::Signer {
            socket: self.path.clone(),
            detail,
        }
    }

    /// Signatures (`name:base64`, one per key the signer holds) of `fingerprint`.
    ///
    /// # Errors
    /// [`SyncError::Signer`]: the socket cannot be reached, or the signer
    /// refused (its reason says which field does not match the store).
    pub fn sign(&mut self, fingerprint: &str) -> Result<Vec<String>> {
        let request = Request::Sign {
            fingerprint: fingerprint.to_owned(),
            keys: None,
        };
        match self.call(&request) {
            Ok(Reply::Signatures(sigs)) => Ok(sigs),
            Ok(Reply::Refused(r)) => {
                Err(self.fail(format!("refused ({}): {}", r.code.as_str(), r.reason)))
            }
            Ok(_) => Err(self.fail("answered a sign request with something else".into())),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// The names of the signer's keys (`name` of each `name:base64`).
    ///
    /// # Errors
    /// [`SyncError::Signer`]: the socket cannot be reached or the answer is
    /// not a key list.
    pub fn key_names(&mut self) -> Result<Vec<String>> {
        match self.call(&Request::PublicKeys) {
            Ok(Reply::PublicKeys(keys)) => Ok(keys
                .iter()
                .map(|k| k.split_once(':').map_or(k.as_str(), |(n, _)| n).to_owned())
                .collect()),
            Ok(_) => Err(self.fail("answered a public-keys request with something else".into())),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn call(&mut self, request: &Request) -> Result<Reply> {
        use std::io::Write;
        if self.conn.is_none() {
            let conn = UnixStream::connect(&self.path).map_err(|e| {
                self.fail(format!(
                    "cannot connect: {e} (is larder-signer running, and may this user open its socket?)"
                ))
            })?;
            conn.set_read_timeout(Some(TIMEOUT))
                .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| self.fail(e.to_string()))?;
            self.conn = Some(conn);
        }
        let frame = encode_frame(request).map_err(|e| self.fail(e.to_string()))?;
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected above")
        };
        conn.write_all(&frame)
            .map_err(|e| e.to_string())
            .and_then(|()| read_frame_blocking(conn).map_err(|e| e.to_string()))
            .map_err(|e| self.fail(e))
    }
}
