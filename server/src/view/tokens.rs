//! Read tokens of a private view: the `tokens-file`, and checking a
//! request's `Authorization` header against it.
//!
//! File format (the rules of larder-sync receive's tokens file): one token
//! a line, `NAME TOKEN` or `NAME sha256:<hex>` (the hex SHA-256 of the
//! token, so the file need not hold it); `#` starts a comment line, blank
//! lines are ignored. Plain tokens are at least [`MIN_TOKEN_BYTES`] long.
//! The file is refused when group or others may read it.
//!
//! Nix sends `netrc-file` credentials as HTTP Basic: the login is
//! ignored, the password is the token. `Authorization: Bearer TOKEN` is
//! accepted too. Only SHA-256 digests are kept and compared, in constant
//! time (`subtle`), against every entry. Tokens are never logged: errors
//! name the line, not its content.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// Shortest plain token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The digests of a view's tokens.
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} entries)", self.digests.len())
    }
}

impl Tokens {
    /// Read and check `path`; errors name the file, the line and the fix.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let fail = |d: String| format!("tokens-file {}: {d}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "readable by group or others (mode {mode:04o}); chmod 600 it"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        Tokens::parse(&text).map_err(fail)
    }

    /// Parse the file's text (see the module docs).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut digests = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(_name), Some(token), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "line {}: expected `NAME TOKEN` or `NAME sha256:<hex>`",
                    i + 1
                ));
            };
            let digest: [u8; 32] = match token.strip_prefix("sha256:") {
                Some(hex) => parse_hex32(hex).ok_or_else(|| {
                    format!(
                        "line {}: a hashed token is `sha256:` and 64 hex digits (`printf %s TOKEN | sha256sum`)",
                        i + 1
                    )
                })?,
                None if token.len() < MIN_TOKEN_BYTES => {
                    return Err(format!(
                        "line {}: the token is shorter than {MIN_TOKEN_BYTES} bytes; make one with `openssl rand -hex 32`",
                        i + 1
                    ));
                }
                None => Sha256::digest(token.as_bytes()).into(),
            };
            digests.push(digest);
        }
        if digests.is_empty() {
            return Err("no token: add a line `NAME TOKEN`".into());
        }
        Ok(Tokens { digests })
    }

    /// Whether an `Authorization` header value carries one of the tokens
    /// (Basic: the password; Bearer: the token). Every entry is compared,
    /// in constant time, whatever matched.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = authorization.and_then(presented_token) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(&token).into();
        let mut found = Choice::from(0);
        for d in &self.digests {
            found |= d.ct_eq(&digest);
        }
        found.into()
    }
}

/// The token an `Authorization` value presents.
fn presented_token(value: &[u8]) -> Option<Vec<u8>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    #[test]
    fn basic_and_bearer_are_checked() {
        let hashed = hex_digest(TOKEN);
        for text in [
            format!("# c\nalice {TOKEN}\n"),
            format!("alice sha256:{hashed}\n"),
        ] {
            let t = Tokens::parse(&text).unwrap();
            assert!(t.admits(Some(&basic("anyone", TOKEN))));
            assert!(t.admits(Some(format!("Bearer {TOKEN}").as_bytes())));
            assert!(!t.admits(Some(&basic(TOKEN, "wrong-wrong-wrong-1"))));
            assert!(!t.admits(Some(b"Bearer nope")));
            assert!(!t.admits(Some(b"Basic !!!")));
            assert!(!t.admits(None));
        }
    }

    fn hex_digest(s: &str) -> String {
        Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn bad_files_name_the_line_not_the_token() {
        for (text, needle) in [
            ("a short\n", "line 1"),
            ("a b c\n", "line 1"),
            ("\n\n", "no token"),
            ("a sha256:zz\n", "line 1"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.contains(needle) && !err.contains("short\n"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, format!("a {TOKEN}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(Tokens::load(&file).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Tokens::load(&file).is_ok());
    }
}
