//! A Nix secret (signing) key: loaded from its `name:base64(seed ‖ public)`
//! text, generated, and used to sign fingerprints. Its bytes are zeroized
//! on drop and never printed.
//!
//! The only ed25519 signing code of larder: larder-store keeps just the
//! public syntax ([`PublicKey`], [`Signature`]), so larder-server links no
//! key code. Interchangeable with `nix key generate-secret` and
//! `convert-secret-to-public`; mirrors Nix's `SecretKey`
//! (`src/libutil/crypto.cc`, Nix 2.8).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey};
use larder_store::named_base64::{KeyError, check_name, decode_named, encode_named};
use larder_store::public_key::PublicKey;
use larder_store::signature::Signature;
use zeroize::{Zeroize, Zeroizing};

/// Bytes in a Nix secret key: the 32-byte seed, then the 32-byte public key.
const SECRET_KEY_BYTES: usize = 64;

/// A named ed25519 signing key.
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A new key named `name`, from the operating system's random source.
    ///
    /// # Errors
    /// [`KeyError::EmptyName`] when `name` is empty or contains `:`.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_name(name, "key name")?;
        Ok(SecretKey {
            name: name.to_owned(),
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        })
    }

    /// The key's name, which its signatures carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, as `trusted-public-keys` lists it.
    pub fn public(&self) -> PublicKey {
        PublicKey::new(&self.name, self.key.verifying_key().to_bytes())
            .expect("the name was checked when the key was made")
    }

    /// The ed25519 signature of `fingerprint` (see
    /// `larder_store::fingerprint`), named after this key.
    pub fn sign(&self, fingerprint: &str) -> Signature {
        Signature::new(&self.name, self.key.sign(fingerprint.as_bytes()).to_bytes())
            .expect("the name was checked when the key was made")
    }

    /// This key's share of the signature-log key ([`log_key`]):
    /// SHA-256 of a fixed label and the seed. One-way, so the log key
    /// reveals nothing about the seed.
    fn log_key_share(&self) -> larder_store::Sha256Hash {
        let mut input = Zeroizing::new(Vec::with_capacity(64));
        input.extend_from_slice(b"larder signature log key v1\0");
        input.extend_from_slice(self.name.as_bytes());
        input.push(0);
        input.extend_from_slice(self.key.as_bytes());
        larder_store::Sha256Hash::digest(&input)
    }

    /// The key file's text, `name:base64(seed ‖ public)`, in a buffer zeroized on drop.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.key.to_keypair_bytes());
        Zeroizing::new(encode_named(&self.name, bytes.as_slice()))
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;

    /// Parses a key file's text; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// As `decode_named` for the syntax, and [`KeyError::PublicMismatch`]
    /// when the public half is not the seed's.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(SECRET_KEY_BYTES));
        let name = decode_named(s, "secret key", SECRET_KEY_BYTES, &mut bytes)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes() != &bytes[32..] {
            return Err(KeyError::PublicMismatch);
        }
        Ok(SecretKey {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}:<redacted>)", self.name)
    }
}

/// The key a server MACs its kept signatures with (`log-key` request of
/// `larder_store::signer_proto`): SHA-256 over each key's share, in key
/// order, as 64 base16 digits. The same key set gives the same key after a
/// restart; another key set, another key.
pub fn log_key(keys: &[SecretKey]) -> String {
    let mut input = Vec::with_capacity(32 * keys.len());
    for key in keys {
        input.extend_from_slice(&key.log_key_share().0);
    }
    let key = larder_store::Sha256Hash::digest(&input).to_base16();
    input.zeroize();
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use ed25519_dalek::{Verifier, VerifyingKey};

    // Made by `nix key generate-secret --key-name test` and
    // `nix key convert-secret-to-public` (Nix 2.8).
    const SECRET: &str = "test:itptK8cpdcApkH5CeCcpJkQfDbOHPR/SaaJo2XPGqsAN+to5ndY0Nhqh/olgAQI1aUmuk+g8L+M1OTrUO0rTcQ==";
    const PUBLIC: &str = "test:DfraOZ3WNDYaof6JYAECNWlJrpPoPC/jNTk61DtK03E=";

    /// True when `sig` is by `pk` (same name) over `fingerprint`.
    fn verifies(pk: &PublicKey, fingerprint: &str, sig: &Signature) -> bool {
        let key = VerifyingKey::from_bytes(pk.bytes()).unwrap();
        sig.key_name() == pk.name()
            && key
                .verify(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(sig.bytes()),
                )
                .is_ok()
    }

    #[test]
    fn the_log_key_follows_the_key_set_and_hides_the_seeds() {
        let a = SecretKey::generate("a").unwrap();
        let b = SecretKey::generate("b").unwrap();
        let a_again: SecretKey = a.to_key_file().parse().unwrap();
        let one = log_key(std::slice::from_ref(&a));
        assert_eq!(one.len(), 64);
        assert_eq!(one, log_key(&[a_again]));
        assert_ne!(one, log_key(std::slice::from_ref(&b)));
        assert_ne!(one, log_key(&[a, b]));
    }

    #[test]
    fn nix_key_loads_and_signs() {
        let sk: SecretKey = SECRET.parse().unwrap();
        assert_eq!(sk.public().to_string(), PUBLIC);
        assert_eq!(sk.to_key_file().as_str(), SECRET);
        let pk: PublicKey = PUBLIC.parse().unwrap();
        let sig = sk.sign("1;/nix/store/x;sha256:y;1;");
        assert!(verifies(&pk, "1;/nix/store/x;sha256:y;1;", &sig));
        assert!(!verifies(&pk, "1;/nix/store/x;sha256:y;2;", &sig));
        let reparsed: Signature = sig.to_string().parse().unwrap();
        assert_eq!(reparsed, sig);
        assert_eq!(format!("{sk:?}"), "SecretKey(test:<redacted>)");
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
        bytes[32..].copy_from_slice(other.public().bytes());
        let forged = format!("test:{}", STANDARD.encode(bytes));
        assert_eq!(
            forged.parse::<SecretKey>().unwrap_err(),
            KeyError::PublicMismatch
        );
        assert_eq!(
            SecretKey::generate("a:b").unwrap_err(),
            KeyError::EmptyName { what: "key name" }
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,120}") {
            let _ = s.parse::<SecretKey>();
        }
    }
}
