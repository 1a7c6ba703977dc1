//! Token files and HTTP credentials: who may push to `larder-sync
//! receive` (`--tokens`) and who may read a private view of larder-server
//! (`tokens-file`). One format, one set of rules, one comparison.
//!
//! File format, one holder per line: `NAME TOKEN` or `NAME sha256:<hex>`
//! (the hex SHA-256 of the token, so the file need not hold the token
//! itself); `#` starts a comment only as a line's first non-blank character
//! (a `#` inside a token is part of it); blank lines are ignored. Names are
//! `[A-Za-z0-9._-]+` not starting with `.` (receive roots arrivals under
//! them) and unique; tokens are unique; a plain token is at least
//! [`MIN_TOKEN_BYTES`] long. The file is refused when group or others may
//! read it, like a signing key file.
//!
//! Nix sends its `netrc-file` credentials as HTTP Basic (login, password =
//! the token); `Authorization: Bearer TOKEN` is accepted too. Only SHA-256
//! digests are kept in memory, compared in constant time (`subtle`) with
//! every entry, without stopping at a match: which holder matched, or
//! whether any did, does not show in timing. Errors name the line, never
//! its token.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// Shortest plain token accepted, in bytes (a hashed `sha256:` entry
/// cannot be checked).
pub const MIN_TOKEN_BYTES: usize = 16;

/// Prefix of a hashed token in a tokens file.
const HASHED_PREFIX: &str = "sha256:";

/// One token holder.
#[derive(Clone)]
pub struct TokenHolder {
    /// `[A-Za-z0-9._-]+`: a pusher's directory name under the GC-root dir.
    pub name: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for TokenHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenHolder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A parsed tokens file.
#[derive(Clone, Debug)]
pub struct Tokens {
    holders: Vec<TokenHolder>,
}

/// What an `Authorization` header presents.
struct Presented {
    /// The Basic login; `None` for Bearer.
    login: Option<Vec<u8>>,
    digest: [u8; 32],
}

impl Tokens {
    /// Read and check the tokens file at `path`: a regular file, not
    /// readable by group or others, of valid lines. Errors say what is
    /// wrong and the fix; callers add the file's name.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the tokens file is readable by group or others (mode {mode:04o}); chmod 600 it"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        Tokens::parse(&text)
    }

    /// Parse a tokens file's text (see the module docs).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut holders: Vec<TokenHolder> = Vec::new();
        let mut lines: Vec<usize> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(token), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "line {n}: expected `NAME TOKEN` or `NAME sha256:<hex>`"
                ));
            };
            if !valid_name(name) {
                return Err(format!(
                    "line {n}: name {name:?} must be letters, digits, `.`, `_` or `-` (not starting with `.`)"
                ));
            }
            if let Some(j) = holders.iter().position(|h| h.name == name) {
                return Err(format!(
                    "line {n}: {name} appears twice (first on line {})",
                    lines[j]
                ));
            }
            let digest = match token.strip_prefix(HASHED_PREFIX) {
                Some(hex) => parse_hex32(hex).ok_or_else(|| {
                    format!(
                        "line {n}: a hashed token is `sha256:` and 64 hex digits (`printf %s TOKEN | sha256sum`)"
                    )
                })?,
                None if token.len() < MIN_TOKEN_BYTES => {
                    return Err(format!(
                        "line {n}: {name}'s token is shorter than {MIN_TOKEN_BYTES} bytes; make one with `openssl rand -hex 32`"
                    ));
                }
                None => Sha256::digest(token.as_bytes()).into(),
            };
            if let Some(j) = holders.iter().position(|h| h.digest == digest) {
                return Err(format!(
                    "line {n}: {name} has the same token as line {} ({}); give each its own",
                    lines[j], holders[j].name
                ));
            }
            lines.push(n);
            holders.push(TokenHolder {
                name: name.to_owned(),
                digest,
            });
        }
        if holders.is_empty() {
            return Err("no token: add a line `NAME TOKEN`".into());
        }
        Ok(Tokens { holders })
    }

    /// The holder whose token an `Authorization` header value presents
    /// (Basic: the password, Bearer: the token), if any. With
    /// `login_is_name`, a Basic login must also be that holder's name (a
    /// pusher's netrc says who it is); otherwise the login is ignored.
    pub fn authenticate(&self, header: Option<&[u8]>, login_is_name: bool) -> Option<&TokenHolder> {
        let presented = presented(header?)?;
        // Every entry is compared, whatever matched before.
        let mut found = u32::MAX;
        for (i, h) in self.holders.iter().enumerate() {
            let hit = h.digest.ct_eq(&presented.digest) & Choice::from(u8::from(found == u32::MAX));
            found = u32::conditional_select(&found, &(i as u32), hit);
        }
        let holder = self.holders.get(found as usize)?;
        match presented.login {
            Some(login) if login_is_name && login != holder.name.as_bytes() => None,
            _ => Some(holder),
        }
    }

    /// Every holder's name, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.holders.iter().map(|h| h.name.as_str())
    }

    /// How many holders the file names.
    pub fn len(&self) -> usize {
        self.holders.len()
    }

    /// Never true for a parsed file (it needs one token at least).
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }
}

fn valid_name(name: &str) -> bool {
    !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The credentials an `Authorization` value presents: `Basic base64(login:
/// password)` or `Bearer token` (scheme names case-insensitive); anything
/// else presents nothing.
fn presented(value: &[u8]) -> Option<Presented> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    let (login, token) = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        (
            Some(decoded[..colon].to_vec()),
            decoded[colon + 1..].to_vec(),
        )
    } else if scheme.eq_ignore_ascii_case("bearer") {
        (None, rest.as_bytes().to_vec())
    } else {
        return None;
    };
    Some(Presented {
        login,
        digest: Sha256::digest(&token).into(),
    })
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

    fn basic(user: &str, pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
    }

    fn auth<'a>(t: &'a Tokens, header: &str, login_is_name: bool) -> Option<&'a str> {
        t.authenticate(Some(header.as_bytes()), login_is_name)
            .map(|h| h.name.as_str())
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn plain_and_hashed_tokens_find_their_holder() {
        let hashed = hex_of(&Sha256::digest(b"s3cret-0123456789"));
        let t = Tokens::parse(&format!(
            "# holders\nci  tok-ci-0123456789\n\n  # hashed\nbuilder sha256:{hashed}\n"
        ))
        .unwrap();
        assert_eq!(
            auth(&t, &basic("ci", "tok-ci-0123456789"), true),
            Some("ci")
        );
        assert_eq!(
            auth(&t, &basic("builder", "s3cret-0123456789"), true),
            Some("builder")
        );
        assert_eq!(auth(&t, "Bearer tok-ci-0123456789", true), Some("ci"));
        assert_eq!(auth(&t, "bearer  tok-ci-0123456789 ", true), Some("ci"));
        // A pusher's login must be its name; a reader's login is ignored.
        assert_eq!(auth(&t, &basic("builder", "tok-ci-0123456789"), true), None);
        assert_eq!(
            auth(&t, &basic("anyone", "tok-ci-0123456789"), false),
            Some("ci")
        );
        assert_eq!(auth(&t, &basic("", "tok-ci-0123456789"), false), Some("ci"));
        for bad in [
            basic("ci", "wrong"),
            "Bearer nope".into(),
            "Digest x".into(),
            "Basic !!!".into(),
            "Basic".into(),
            String::new(),
        ] {
            assert_eq!(auth(&t, &bad, false), None, "{bad}");
        }
        assert!(t.authenticate(None, false).is_none());
        assert_eq!(t.names().collect::<Vec<_>>(), ["ci", "builder"]);
    }

    #[test]
    fn file_rules_name_the_line_never_the_token() {
        let t = Tokens::parse("ci abc#def-0123456789\n").unwrap();
        assert_eq!(auth(&t, "Bearer abc#def-0123456789", false), Some("ci"));
        let e = Tokens::parse("a tok-0123456789abcdef\nb tok-0123456789abcdef\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("line 1") && !e.contains("tok-0"),
            "{e}"
        );
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
        let e = Tokens::parse("ci tok extra\n").unwrap_err();
        assert!(e.contains("line 1") && !e.contains("tok"), "{e}");
        for bad in [
            "a/b tok-0123456789abcdef\n",
            ".a tok-0123456789abcdef\n",
            "a sha256:zz\n",
            "# nothing\n",
        ] {
            assert!(Tokens::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "ci tok-ci-0123456789\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Tokens::load(&path).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Tokens::load(&path).unwrap().len(), 1);
        assert!(
            Tokens::load(dir.path())
                .unwrap_err()
                .contains("not a regular file")
        );
    }
}
