//! A Nix public key as text: `name:base64(32 bytes)`, as
//! `nix key convert-secret-to-public` prints it and `trusted-public-keys`
//! lists it.
//!
//! Syntax only, like [`crate::signature`]: the 32 bytes are not checked to
//! be an ed25519 point here, because that takes ed25519 code and
//! larder-server must link none. Whoever verifies (larder-sync's
//! `--trusted-key` check, the tests) does so with an ed25519 library.
//! Mirrors Nix's `PublicKey` (`src/libutil/crypto.cc`, Nix 2.8), which
//! also checks only the length.

use std::fmt;
use std::str::FromStr;

use crate::named_base64::{KeyError, check_name, decode_named, encode_named};

/// Bytes in an ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;

/// A named ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    bytes: [u8; PUBLIC_KEY_BYTES],
}

impl PublicKey {
    /// The key `name` with the raw ed25519 public key `bytes`.
    ///
    /// # Errors
    /// [`KeyError::EmptyName`] when `name` is empty or contains `:`.
    pub fn new(name: &str, bytes: [u8; PUBLIC_KEY_BYTES]) -> Result<Self, KeyError> {
        check_name(name, "public key")?;
        Ok(PublicKey {
            name: name.to_owned(),
            bytes,
        })
    }

    /// The key's name, e.g. `cache.example.org-1`; signatures by this key
    /// carry the same name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw ed25519 public key (a compressed Edwards point, unchecked).
    pub fn bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        &self.bytes
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parses `name:base64`; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut raw = Vec::with_capacity(PUBLIC_KEY_BYTES);
        let name = decode_named(s, "public key", PUBLIC_KEY_BYTES, &mut raw)?;
        let mut bytes = [0u8; PUBLIC_KEY_BYTES];
        bytes.copy_from_slice(&raw);
        Ok(PublicKey {
            name: name.to_owned(),
            bytes,
        })
    }
}

impl fmt::Display for PublicKey {
    /// `name:base64`, the form `trusted-public-keys` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_named(&self.name, &self.bytes))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Made by `nix key generate-secret --key-name test` and
    // `nix key convert-secret-to-public` (Nix 2.8).
    const PUBLIC: &str = "test:DfraOZ3WNDYaof6JYAECNWlJrpPoPC/jNTk61DtK03E=";

    #[test]
    fn roundtrips_and_names_errors() {
        let pk: PublicKey = PUBLIC.parse().unwrap();
        assert_eq!(pk.name(), "test");
        assert_eq!(pk.to_string(), PUBLIC);
        assert_eq!(PublicKey::new("test", *pk.bytes()).unwrap(), pk);
        assert_eq!(
            "nocolon".parse::<PublicKey>().unwrap_err(),
            KeyError::NoColon { what: "public key" }
        );
        // A secret key is 64 bytes: refused, and its bytes never echoed.
        let secret = "test:itptK8cpdcApkH5CeCcpJkQfDbOHPR/SaaJo2XPGqsAN+to5ndY0Nhqh/olgAQI1aUmuk+g8L+M1OTrUO0rTcQ==";
        let err = secret.parse::<PublicKey>().unwrap_err();
        assert_eq!(
            err,
            KeyError::Length {
                what: "public key",
                expected: 32,
                actual: 64
            }
        );
        assert!(!err.to_string().contains("itpt"), "{err}");
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,120}") {
            let _ = s.parse::<PublicKey>();
        }
    }
}
