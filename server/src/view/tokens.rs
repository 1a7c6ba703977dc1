//! Read tokens of a private view: its `tokens-file`, in the format and
//! under the rules of [`larder_store::tokens`] (shared with larder-sync
//! receive's pushers), and the check of a request's `Authorization`
//! header. A reader's Basic login is ignored: the password is the token.

use std::path::Path;

use larder_store::tokens::Tokens as TokenFile;

/// The tokens of one private view.
#[derive(Clone, Debug)]
pub struct Tokens(TokenFile);

impl Tokens {
    /// Read and check the view's `tokens-file`; errors name the file, the
    /// line (never its token) and the fix.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        TokenFile::load(path)
            .map(Tokens)
            .map_err(|e| format!("tokens-file {}: {e}", path.display()))
    }

    /// Whether an `Authorization` header value carries one of the view's
    /// tokens (Basic password or Bearer), compared in constant time.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        self.0.authenticate(authorization, false).is_some()
    }
}
