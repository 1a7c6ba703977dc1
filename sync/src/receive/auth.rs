//! Pushers and their tokens: the `--tokens` file, in the format and under
//! the rules of [`larder_store::tokens`] (shared with larder-server's
//! private views), and the check of a request's `Authorization` header.
//! A pusher's Basic login must be its name (Nix sends its netrc entry);
//! Bearer needs the token alone. Tokens are never logged.

use std::path::Path;

use larder_store::tokens::{TokenHolder, Tokens as TokenFile};

use crate::error::SyncError;

/// One token holder: the name its arrivals are rooted and counted under
/// (`[A-Za-z0-9._-]+`, a directory name under the GC-root dir).
pub type Pusher = TokenHolder;

/// Every pusher of the tokens file.
#[derive(Debug, Clone)]
pub struct Tokens(TokenFile);

impl Tokens {
    /// Read and check `path`. Errors name the file, the line and the fix.
    pub fn load(path: &Path) -> Result<Tokens, SyncError> {
        TokenFile::load(path)
            .map(Tokens)
            .map_err(|detail| SyncError::Config {
                kind: "tokens file",
                path: path.to_owned(),
                detail,
            })
    }

    /// The pusher an `Authorization` header value authenticates, if any.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Option<&Pusher> {
        self.0.authenticate(header, true)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.0.names()
    }
}
