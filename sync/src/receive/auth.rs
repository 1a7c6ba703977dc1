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

/// Shortest plain token accepted, in bytes (a hashed `sha256:` entry
/// cannot be checked).
pub const MIN_TOKEN_BYTES: usize = 16;

/// Every pusher of the tokens file.
#[derive(Debug, Clone)]
pub struct Tokens {
    pushers: Vec<Pusher>,
}

fn config_err(path: &Path, detail: String) -> SyncError {
    SyncError::Config {
        kind: "tokens file",
        path: path.to_owned(),
        detail,
    }
}

impl Tokens {
    /// Read and check `path`. Errors name the file, the line and the fix.
    pub fn load(path: &Path) -> Result<Tokens, SyncError> {
        let meta = fs::metadata(path).map_err(|e| config_err(path, format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(config_err(
                path,
                "not a file; --tokens names the tokens file".into(),
            ));
        }
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
    /// `#` starts a comment only as a line's first non-blank character (a
    /// `#` inside a token is part of it). Names and tokens must be unique;
    /// a plain token must be at least [`MIN_TOKEN_BYTES`] long.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut pushers: Vec<Pusher> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
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
            if let Some(j) = pushers.iter().position(|p| p.name == name) {
                return Err(format!(
                    "line {}: pusher {name} appears twice (first on line {})",
                    i + 1,
                    lines[j]
                ));
            }
            let digest = match token.strip_prefix(HASHED_PREFIX) {
                Some(hex_digest) => parse_hex32(hex_digest).ok_or_else(|| {
                    format!(
                        "line {}: a hashed token is `sha256:` and 64 hex digits (`printf %s TOKEN | sha256sum`)",
                        i + 1
                    )
                })?,
                None if token.len() < MIN_TOKEN_BYTES => {
                    return Err(format!(
                        "line {}: pusher {name}'s token is shorter than {MIN_TOKEN_BYTES} bytes; make one with `openssl rand -hex 32`",
                        i + 1
                    ));
                }
                None => Sha256::digest(token.as_bytes()).into(),
            };
            if let Some(j) = pushers.iter().position(|p| p.digest == digest) {
                return Err(format!(
                    "line {}: pusher {name} has the same token as line {} ({}); give each pusher its own",
                    i + 1,
                    lines[j],
                    pushers[j].name
                ));
            }
            lines.push(i + 1);
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
    fn hash_sign_inside_a_token_duplicates_and_short_tokens() {
        let t = Tokens::parse("ci abc#def-0123456789\n").unwrap();
        assert!(t.authenticate(Some("Bearer abc#def-0123456789")).is_some());
        assert!(t.authenticate(Some("Bearer abc")).is_none());
        let e = Tokens::parse("a tok-0123456789abcdef\nb tok-0123456789abcdef\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("line 1"), "{e}");
        assert!(!e.contains("tok-0123"), "{e}");
        let hashed = hex_of(&Sha256::digest(b"tok-0123456789abcdef"));
        let e = Tokens::parse(&format!("a tok-0123456789abcdef\nb sha256:{hashed}\n")).unwrap_err();
        assert!(e.contains("same token"), "{e}");
        let e = Tokens::parse("a tok-0123456789abcdef\na tok-0123456789abcdeg\n").unwrap_err();
        assert!(e.contains("twice") && e.contains("line 1"), "{e}");
        let e = Tokens::parse("a tiny\n").unwrap_err();
        assert!(
            e.contains("openssl rand -hex 32") && !e.contains("tiny"),
            "{e}"
        );
    }

    #[test]
    fn plain_and_hashed_tokens_authenticate_their_pusher_only() {
        let hashed = hex_of(&Sha256::digest(b"s3cret"));
        let tokens = Tokens::parse(&format!(
            "# pushers\nci  tok-ci-0123456789\n\n  # hashed\nbuilder sha256:{hashed}\n"
        ))
        .unwrap();
        let ci = tokens
            .authenticate(Some(&basic("ci", "tok-ci-0123456789")))
            .unwrap();
        assert_eq!(ci.name, "ci");
        assert_eq!(
            tokens
                .authenticate(Some(&basic("builder", "s3cret")))
                .unwrap()
                .name,
            "builder"
        );
        assert_eq!(
            tokens
                .authenticate(Some("Bearer tok-ci-0123456789"))
                .unwrap()
                .name,
            "ci"
        );
        assert!(
            tokens
                .authenticate(Some(&basic("builder", "tok-ci-0123456789")))
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
