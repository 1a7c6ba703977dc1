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
            uri: uri.to_owned(),
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
}
