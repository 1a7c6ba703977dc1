//! Pushers and their tokens: the `--tokens` file, and checking the
//! `Authorization` header of a request against it.
//!
//! File format, one pusher per line: `NAME TOKEN` or `NAME sha256:<hex>`
//! (the hex SHA-256 of the token, so the file need not hold the token
//! itself); `#` starts a comment, blank lines are ignored. The file is
//! refused when group or others can read it, like the signer's key file.
//!
//! Nix sends its `netrc-file` credentials as HTTP Basic (login = NAME,
//! password = TOKEN); `Authorization: Bearer TOKEN` is accepted too. Only
//! SHA-256 digests are kept in memory and compared, in constant time
//! (`subtle`), against every pusher: which pusher matched, or whether any
//! did, does not show in timing. Tokens are never logged.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::SyncError;

/// Prefix of a hashed token in the tokens file.
const HASHED_PREFIX: &str = "sha256:";

/// One token holder: the name its arrivals are rooted and counted under.
#[derive(Debug, Clone)]
pub struct Pusher {
    /// `[A-Za-z0-9._-]+`, used as a directory name under the GC-root dir.
    pub name: String,
    digest: [u8; 32],
}

/// Every pusher of the tokens file.
#[derive(Debug, Clone)]
pub struct Tokens {
    pushers: Vec<Pusher>,
}

fn config_err(path: &Path, detail: String) -> SyncError {
    SyncError::Config {
        path: path.to_owned(),
        detail,
    }
}

impl Tokens {
    /// Read and check `path`. Errors name the file, the line and the fix.
    pub fn load(path: &Path) -> Result<Tokens, SyncError> {
        let meta = fs::metadata(path).map_err(|e| config_err(path, format!("cannot read: {e}")))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(config_err(
                path,
                format!(
                    "the tokens file is readable by group or others (mode {mode:04o}); chmod 600 it"
                ),
            ));
        }
        let text =
            fs::read_to_string(path).map_err(|e| config_err(path, format!("cannot read: {e}")))?;
        Tokens::parse(&text).map_err(|d| config_err(path, d))
    }

    /// Parse the file's text; errors name the line (never the token).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut pushers: Vec<Pusher> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(token), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "line {}: expected `NAME TOKEN` or `NAME sha256:<hex>`",
                    i + 1
                ));
            };
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                || name.starts_with('.')
            {
                return Err(format!(
                    "line {}: pusher name {name:?} must be letters, digits, `.`, `_` or `-`",
                    i + 1
                ));
            }
            if pushers.iter().any(|p| p.name == name) {
                return Err(format!("line {}: pusher {name} appears twice", i + 1));
            }
            let digest = match token.strip_prefix(HASHED_PREFIX) {
                Some(hex_digest) => parse_hex32(hex_digest).ok_or_else(|| {
                    format!(
                        "line {}: a hashed token is `sha256:` and 64 hex digits (`printf %s TOKEN | sha256sum`)",
                        i + 1
                    )
                })?,
                None => Sha256::digest(token.as_bytes()).into(),
            };
            pushers.push(Pusher {
                name: name.to_owned(),
                digest,
            });
        }
        if pushers.is_empty() {
            return Err("no pusher: add a line `NAME TOKEN`".into());
        }
        Ok(Tokens { pushers })
    }

    /// The pusher an `Authorization` header value authenticates, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<&Pusher> {
        let header = header?;
        let (login, token) = if let Some(b64) = strip_scheme(header, "Basic") {
            let decoded = STANDARD.decode(b64.trim()).ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (login, password) = text.split_once(':')?;
            (Some(login.to_owned()), password.to_owned())
        } else if let Some(token) = strip_scheme(header, "Bearer") {
            (None, token.trim().to_owned())
        } else {
            return None;
        };
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every pusher, without stopping at a match.
        let mut found = None;
        for p in &self.pushers {
            if bool::from(p.digest.ct_eq(&presented)) && found.is_none() {
                found = Some(p);
            }
        }
        let pusher = found?;
        match login {
            Some(l) if l != pusher.name => None,
            _ => Some(pusher),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.pushers.iter().map(|p| p.name.as_str())
    }
}

/// `Basic xyz` → `xyz` (scheme names are case-insensitive).
fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = header.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
    }

    #[test]
    fn plain_and_hashed_tokens_authenticate_their_pusher_only() {
        let hashed = hex_of(&Sha256::digest(b"s3cret"));
        let tokens = Tokens::parse(&format!(
            "# pushers\nci  tok-ci\n\nbuilder sha256:{hashed} # hashed\n"
        ))
        .unwrap();
        let ci = tokens.authenticate(Some(&basic("ci", "tok-ci"))).unwrap();
        assert_eq!(ci.name, "ci");
        assert_eq!(
            tokens
                .authenticate(Some(&basic("builder", "s3cret")))
                .unwrap()
                .name,
            "builder"
        );
        assert_eq!(
            tokens.authenticate(Some("Bearer tok-ci")).unwrap().name,
            "ci"
        );
        assert!(
            tokens
                .authenticate(Some(&basic("builder", "tok-ci")))
                .is_none()
        );
        assert!(tokens.authenticate(Some(&basic("ci", "wrong"))).is_none());
        assert!(tokens.authenticate(Some("Bearer nope")).is_none());
        assert!(tokens.authenticate(Some("Digest x")).is_none());
        assert!(tokens.authenticate(Some("Basic !!!")).is_none());
        assert!(tokens.authenticate(None).is_none());
    }

    #[test]
    fn malformed_lines_are_named_without_the_token() {
        let err = Tokens::parse("ci tok extra\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("tok"), "{err}");
        assert!(Tokens::parse("a/b tok\n").is_err());
        assert!(Tokens::parse("a sha256:zz\n").is_err());
        assert!(Tokens::parse("a x\na y\n").is_err());
        assert!(Tokens::parse("# nothing\n").is_err());
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
