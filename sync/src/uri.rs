//! Store URIs as larder-sync accepts them, trusted keys, and store-path
//! arguments: all checked before anything runs, so bad input is a clear
//! error and never a half-done copy.

use std::fmt;
use std::str::FromStr;

use larder_store::StoreLocation;
use larder_store::named_base64::KeyError;
use larder_store::public_key::PublicKey;

use crate::error::{Result, SyncError};

const SCHEMES: &[&str] = &["ssh-ng", "ssh", "http", "https", "file", "s3"];

/// A Nix store URI with a scheme larder-sync knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUri {
    uri: String,
    scheme_len: usize,
}

impl StoreUri {
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn scheme(&self) -> &str {
        &self.uri[..self.scheme_len]
    }

    pub fn is_ssh(&self) -> bool {
        matches!(self.scheme(), "ssh" | "ssh-ng")
    }

    /// What follows `scheme://`, without the query.
    fn authority_and_path(&self) -> &str {
        let rest = &self.uri[self.scheme_len + 3..];
        rest.split('?').next().unwrap_or(rest)
    }

    /// `user@host` of an ssh URI.
    pub fn ssh_host(&self) -> &str {
        self.authority_and_path()
    }

    /// A query parameter, e.g. `remote-store`.
    pub fn param(&self, name: &str) -> Option<&str> {
        let (_, query) = self.uri.split_once('?')?;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// A name for the builder behind this URI, safe as a directory name:
    /// the host (without user and port), or a file cache's last component.
    pub fn builder_name(&self) -> String {
        let rest = self.authority_and_path();
        let name = if self.scheme() == "file" {
            rest.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(rest)
        } else {
            let host = rest.split('/').next().unwrap_or(rest);
            let host = host.rsplit('@').next().unwrap_or(host);
            host.split(':').next().unwrap_or(host)
        };
        sanitize(name)
    }
}

/// Keep `[A-Za-z0-9._-]`, replace the rest with `_`; never empty or `.`/`..`.
pub fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        "_".repeat(clean.len().max(1))
    } else {
        clean
    }
}

impl FromStr for StoreUri {
    type Err = SyncError;

    fn from_str(uri: &str) -> Result<Self> {
        let unknown = || SyncError::UnknownScheme {
            uri: redact_userinfo(uri).into_owned(),
        };
        let (scheme, rest) = uri.split_once("://").ok_or_else(unknown)?;
        if !SCHEMES.contains(&scheme) || rest.is_empty() {
            return Err(unknown());
        }
        Ok(StoreUri {
            uri: uri.to_owned(),
            scheme_len: scheme.len(),
        })
    }
}

impl fmt::Display for StoreUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// `text` with `%XX` escapes decoded (invalid ones kept as they are), so
/// that an escaped `@` or `:` is seen as what it will mean to a client.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `uri` carries something that looks like `user:password@`
/// anywhere (in its authority or in a parameter such as `endpoint=`), also
/// when percent-escaped.
pub fn has_userinfo(uri: &str) -> bool {
    percent_decoded(uri).contains('@')
}

/// `uri` safe to print: when it [`has_userinfo`], decoded, and each
/// `…@` run back to the nearest `/`, `?`, `&` or `=` replaced by `***`.
pub fn redact_userinfo(uri: &str) -> std::borrow::Cow<'_, str> {
    if !has_userinfo(uri) {
        return std::borrow::Cow::Borrowed(uri);
    }
    let decoded = percent_decoded(uri);
    let mut out = String::with_capacity(decoded.len());
    let mut rest = decoded.as_str();
    while let Some(at) = rest.find('@') {
        let start = rest[..at].rfind(['/', '?', '&', '=']).map_or(0, |i| i + 1);
        out.push_str(&rest[..start]);
        out.push_str("***@");
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Parse trusted public keys (`name:base64`), naming the bad one. Each
/// must also be an ed25519 point: no signature could ever verify with
/// another 32 bytes, and Nix itself checks only the length.
pub fn parse_keys(keys: &[String]) -> Result<Vec<PublicKey>> {
    keys.iter()
        .map(|k| {
            let bad = |source| SyncError::BadKey {
                key: k.clone(),
                source,
            };
            let key: PublicKey = k.trim().parse().map_err(bad)?;
            ed25519_dalek::VerifyingKey::from_bytes(key.bytes())
                .map_err(|_| bad(KeyError::BadPublicKey))?;
            Ok(key)
        })
        .collect()
}

/// Check that `arg` is a store path of `location`'s store dir (`/nix/store/<hash>-<name>`).
pub fn store_path_arg(location: &StoreLocation, arg: &str) -> Result<String> {
    let arg = arg.trim_end_matches('/');
    location
        .parse_path(arg)
        .map(|p| location.display_path(&p))
        .map_err(|source| SyncError::BadPath {
            arg: arg.to_owned(),
            store_dir: location.store_dir().to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_schemes_parse_and_name_their_builder() {
        let cases = [
            ("ssh-ng://root@127.0.0.1?remote-store=/tmp/b", "127.0.0.1"),
            ("ssh://builder:2222", "builder"),
            ("http://10.0.0.2:5000/", "10.0.0.2"),
            ("file:///var/cache/nix/", "nix"),
        ];
        for (uri, name) in cases {
            let u: StoreUri = uri.parse().unwrap();
            assert_eq!(u.builder_name(), name, "{uri}");
        }
        let u: StoreUri = "ssh-ng://root@h?remote-store=/tmp/b".parse().unwrap();
        assert_eq!(u.param("remote-store"), Some("/tmp/b"));
        assert_eq!(u.ssh_host(), "root@h");
    }

    #[test]
    fn unknown_schemes_are_refused() {
        for uri in ["ftp://x", "sshng://x", "/tmp/x", "http://", ""] {
            let err = uri.parse::<StoreUri>().unwrap_err();
            assert!(
                matches!(err, SyncError::UnknownScheme { .. }),
                "{uri}: {err}"
            );
        }
    }

    #[test]
    fn malformed_keys_are_named() {
        let err = parse_keys(&["cache:notbase64!".into()]).unwrap_err();
        assert!(err.to_string().contains("cache:notbase64!"), "{err}");
        // 32 bytes that are no curve point: refused, not passed on to Nix.
        let not_a_point = (0..=u8::MAX)
            .map(|b| [b; 32])
            .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
            .unwrap();
        let text = PublicKey::new("cache", not_a_point).unwrap().to_string();
        let err = parse_keys(&[text]).unwrap_err();
        assert!(
            err.to_string().contains("not a valid ed25519 point"),
            "{err}"
        );
        let good = "test:DfraOZ3WNDYaof6JYAECNWlJrpPoPC/jNTk61DtK03E=";
        assert_eq!(parse_keys(&[good.into()]).unwrap()[0].to_string(), good);
        assert_eq!(sanitize(".."), "__");
        assert_eq!(sanitize("a/b c"), "a_b_c");
    }

    #[test]
    fn userinfo_is_found_escaped_or_not_and_redacted() {
        for (uri, shown) in [
            (
                "s3://c?endpoint=http://AK:SECRET@h:1&region=r",
                "s3://c?endpoint=http://***@h:1&region=r",
            ),
            ("s3://AK:SECRET@cache", "s3://***@cache"),
            (
                "s3://c?endpoint=http%3A%2F%2FAK%3ASECRET%40h",
                "s3://c?endpoint=http://***@h",
            ),
            ("s3://c?endpoint=AK:SECRET@h", "s3://c?endpoint=***@h"),
            ("s3://c?a=x@y@z", "s3://c?a=***@***@z"),
        ] {
            assert!(has_userinfo(uri), "{uri}");
            assert_eq!(redact_userinfo(uri), shown, "{uri}");
        }
        let plain = "s3://c?endpoint=http://h:1&region=r";
        assert!(!has_userinfo(plain));
        assert_eq!(redact_userinfo(plain), plain);
        assert_eq!(percent_decoded("%zz%4"), "%zz%4");
    }
}
