//! A narinfo signature as text: `name:base64(64 bytes)`, one per `Sig:`
//! line of a narinfo and per entry of `nix path-info --json`'s
//! `signatures`.
//!
//! Syntax only: larder-store neither signs nor verifies, so that
//! larder-server, which links it, links no ed25519 code (signing lives in
//! larder-signer). Mirrors the signature strings of Nix's
//! `ValidPathInfo::sigs` (`src/libstore/path-info.cc`) and the parsing in
//! `verifyDetached` (`src/libutil/crypto.cc`, Nix 2.8).

use std::fmt;
use std::str::FromStr;

use crate::named_base64::{KeyError, check_name, decode_named, encode_named};

/// Bytes in an ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// An ed25519 signature with the name of the key that made it.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    name: String,
    bytes: [u8; SIGNATURE_BYTES],
}

impl Signature {
    /// A signature by key `name` with the raw ed25519 `bytes`.
    ///
    /// # Errors
    /// [`KeyError::EmptyName`] when `name` is empty or contains `:`.
    pub fn new(name: &str, bytes: [u8; SIGNATURE_BYTES]) -> Result<Self, KeyError> {
        check_name(name, "signature")?;
        Ok(Signature {
            name: name.to_owned(),
            bytes,
        })
    }

    /// The name of the key that made it, e.g. `cache.example.org-1`.
    pub fn key_name(&self) -> &str {
        &self.name
    }

    /// The raw ed25519 signature.
    pub fn bytes(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.bytes
    }
}

impl FromStr for Signature {
    type Err = KeyError;

    /// Parses `name:base64`; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut raw = Vec::with_capacity(SIGNATURE_BYTES);
        let name = decode_named(s, "signature", SIGNATURE_BYTES, &mut raw)?;
        let mut bytes = [0u8; SIGNATURE_BYTES];
        bytes.copy_from_slice(&raw);
        Ok(Signature {
            name: name.to_owned(),
            bytes,
        })
    }
}

impl fmt::Display for Signature {
    /// `name:base64`, as a narinfo's `Sig:` line carries it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_named(&self.name, &self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // 64 bytes 0, 1, …, 63: syntax only, no key made it.
    const SIG: &str = "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

    #[test]
    fn roundtrips_and_names_errors() {
        let sig: Signature = SIG.parse().unwrap();
        assert_eq!(sig.key_name(), "test");
        assert_eq!(sig.to_string(), SIG);
        assert_eq!(Signature::new("test", *sig.bytes()).unwrap(), sig);
        assert_eq!(
            ":AAAA".parse::<Signature>().unwrap_err(),
            KeyError::EmptyName { what: "signature" }
        );
        assert!(matches!(
            "test:AAAA".parse::<Signature>().unwrap_err(),
            KeyError::Length {
                expected: 64,
                actual: 3,
                ..
            }
        ));
        assert!(Signature::new("a:b", [0; 64]).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,120}") {
            let _ = s.parse::<Signature>();
        }
    }
}
