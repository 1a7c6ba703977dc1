//! Narinfo signatures: the fingerprint Nix signs, and Nix's key and
//! signature files (`name:base64`). A secret key is 64 bytes (seed ‖
//! public), a public key 32 bytes, a signature 64 bytes (ed25519).
//! Interchangeable with `nix key generate-secret` / `convert-secret-to-public`.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::hash::Sha256Hash;
use crate::path::StorePath;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{what} must look like `name:base64`; no ':' found")]
    NoColon { what: &'static str },
    #[error("{what} has an empty name before ':'")]
    EmptyName { what: &'static str },
    #[error("{what} is not valid base64 after the name")]
    Base64 { what: &'static str },
    #[error("{what} must be {expected} bytes, got {actual} (truncated or not a Nix key?)")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("secret key's public half does not match its seed (corrupt key file)")]
    PublicMismatch,
    #[error("public key is not a valid ed25519 point")]
    BadPublicKey,
}

/// `1;<store path>;sha256:<nix32>;<nar size>;<comma-joined sorted references>`.
pub fn fingerprint(
    store_dir: &str,
    path: &StorePath,
    nar_hash: &Sha256Hash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let mut refs: Vec<String> = references
        .iter()
        .map(|r| format!("{store_dir}/{r}"))
        .collect();
    refs.sort();
    format!(
        "1;{store_dir}/{path};{nar_hash};{nar_size};{}",
        refs.join(",")
    )
}

/// Split `name:base64` and decode the payload, checking its length.
fn split_key(
    s: &str,
    what: &'static str,
    expected: usize,
) -> Result<(String, Zeroizing<Vec<u8>>), KeyError> {
    let (name, b64) = s.trim().split_once(':').ok_or(KeyError::NoColon { what })?;
    if name.is_empty() {
        return Err(KeyError::EmptyName { what });
    }
    let bytes = Zeroizing::new(
        STANDARD
            .decode(b64)
            .map_err(|_| KeyError::Base64 { what })?,
    );
    if bytes.len() != expected {
        return Err(KeyError::Length {
            what,
            expected,
            actual: bytes.len(),
        });
    }
    Ok((name.to_owned(), bytes))
}

/// A signing key. Its bytes are zeroized on drop and never printed.
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        if name.is_empty() || name.contains(':') {
            return Err(KeyError::EmptyName { what: "key name" });
        }
        Ok(SecretKey {
            name: name.to_owned(),
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    pub fn sign(&self, fingerprint: &str) -> Signature {
        Signature {
            name: self.name.clone(),
            bytes: self.key.sign(fingerprint.as_bytes()).to_bytes(),
        }
    }

    /// The key file's text, `name:base64(seed ‖ public)`, in a buffer zeroized on drop.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.key.to_keypair_bytes());
        Zeroizing::new(format!(
            "{}:{}",
            self.name,
            STANDARD.encode(bytes.as_slice())
        ))
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split_key(s, "secret key", 64)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes() != &bytes[32..] {
            return Err(KeyError::PublicMismatch);
        }
        Ok(SecretKey { name, key })
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}:<redacted>)", self.name)
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when `sig` is by this key (same name) over `fingerprint`.
    pub fn verify(&self, fingerprint: &str, sig: &Signature) -> bool {
        sig.name == self.name
            && self
                .key
                .verify(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig.bytes),
                )
                .is_ok()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split_key(s, "public key", 32)?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&bytes);
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::BadPublicKey)?;
        Ok(PublicKey { name, key })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    name: String,
    bytes: [u8; 64],
}

impl Signature {
    pub fn key_name(&self) -> &str {
        &self.name
    }
}

impl FromStr for Signature {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, bytes) = split_key(s, "signature", 64)?;
        let mut raw = [0u8; 64];
        raw.copy_from_slice(&bytes);
        Ok(Signature { name, bytes: raw })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, STANDARD.encode(self.bytes))
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

    // Made by `nix key generate-secret --key-name test` and
    // `nix key convert-secret-to-public` (Nix 2.8).
    const SECRET: &str = "test:itptK8cpdcApkH5CeCcpJkQfDbOHPR/SaaJo2XPGqsAN+to5ndY0Nhqh/olgAQI1aUmuk+g8L+M1OTrUO0rTcQ==";
    const PUBLIC: &str = "test:DfraOZ3WNDYaof6JYAECNWlJrpPoPC/jNTk61DtK03E=";

    #[test]
    fn nix_key_loads_and_signs() {
        let sk: SecretKey = SECRET.parse().unwrap();
        assert_eq!(sk.public().to_string(), PUBLIC);
        assert_eq!(sk.to_key_file().as_str(), SECRET);
        let pk: PublicKey = PUBLIC.parse().unwrap();
        let sig = sk.sign("1;/nix/store/x;sha256:y;1;");
        assert!(pk.verify("1;/nix/store/x;sha256:y;1;", &sig));
        assert!(!pk.verify("1;/nix/store/x;sha256:y;2;", &sig));
        let reparsed: Signature = sig.to_string().parse().unwrap();
        assert_eq!(reparsed, sig);
        assert_eq!(format!("{sk:?}"), "SecretKey(test:<redacted>)");
    }

    #[test]
    fn fingerprint_sorts_and_joins_references() {
        let p: StorePath = "m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke".parse().unwrap();
        let a: StorePath = "8y7yr95drh588a264899m27vi59a9f4q-d".parse().unwrap();
        let h = Sha256Hash::digest(b"");
        assert_eq!(
            fingerprint("/nix/store", &p, &h, 120, &[p.clone(), a]),
            "1;/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke;sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;120;/nix/store/8y7yr95drh588a264899m27vi59a9f4q-d,/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(
            "nocolon".parse::<SecretKey>().unwrap_err(),
            KeyError::NoColon { what: "secret key" }
        );
        assert_eq!(
            SECRET[..40].parse::<SecretKey>().unwrap_err(),
            KeyError::Base64 { what: "secret key" }
        );
        assert!(matches!(
            PUBLIC.parse::<SecretKey>().unwrap_err(),
            KeyError::Length {
                expected: 64,
                actual: 32,
                ..
            }
        ));
        // Public half swapped for another key's.
        let other = SecretKey::generate("test").unwrap();
        let mut bytes = STANDARD.decode(&SECRET[5..]).unwrap();
        bytes[32..].copy_from_slice(other.public().key.as_bytes());
        let forged = format!("test:{}", STANDARD.encode(bytes));
        assert_eq!(
            forged.parse::<SecretKey>().unwrap_err(),
            KeyError::PublicMismatch
        );
        assert_eq!(
            ":AAAA".parse::<Signature>().unwrap_err(),
            KeyError::EmptyName { what: "signature" }
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,120}") {
            let _ = s.parse::<SecretKey>();
            let _ = s.parse::<PublicKey>();
            let _ = s.parse::<Signature>();
        }
    }
}
