//! SHA-256 hashes as Nix writes them: `sha256:<base16|nix32|base64>` or SRI
//! `sha256-<base64>`. The DB stores base16, narinfo wants nix32, and
//! `nix path-info --json` prints SRI. Nix's `Hash` (`src/libutil/hash.cc`),
//! SHA-256 only.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::nixbase32;

/// Why a hash text was refused. Carries at most 80 characters of the input.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    /// Not prefixed `sha256:` or `sha256-` (larder handles SHA-256 only).
    #[error("hash {0:?} is not a sha256 hash (expected sha256:<digest> or sha256-<base64>)")]
    Algorithm(String),
    /// The digest after the prefix is not 32 bytes in base16, nix32 or base64.
    #[error("sha256 digest {0:?} is neither 64 base16, 52 nix32 nor 44 base64 characters")]
    Encoding(String),
}

/// A SHA-256 digest: 32 raw bytes. Displays as `sha256:<nix32>`; parses
/// every form Nix prints (`src/libutil/hash.cc`, `Hash::parseAny`, limited
/// to SHA-256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// The SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Self {
        Sha256Hash(Sha256::digest(data).into())
    }

    /// The 52-character nix32 form, without prefix (as in narinfo and store paths).
    pub fn to_nix32(&self) -> String {
        nixbase32::encode(&self.0)
    }

    /// The 64-character lowercase hex form, without prefix (as the store DB keeps it).
    pub fn to_base16(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The SRI form `sha256-<base64>` (as `nix path-info --json` prints it).
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", STANDARD.encode(self.0))
    }

    fn from_digest(digest: &str) -> Option<Self> {
        let bytes = match digest.len() {
            64 if digest.bytes().all(|c| c.is_ascii_hexdigit()) => (0..32)
                .map(|i| u8::from_str_radix(digest.get(2 * i..2 * i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?,
            52 => nixbase32::decode(digest).ok()?,
            44 => STANDARD.decode(digest).ok()?,
            _ => return None,
        };
        Some(Sha256Hash(bytes.try_into().ok()?))
    }
}

impl FromStr for Sha256Hash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digest = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("sha256-"))
            .ok_or_else(|| HashError::Algorithm(truncate(s)))?;
        Sha256Hash::from_digest(digest).ok_or_else(|| HashError::Encoding(truncate(digest)))
    }
}

/// Keep error messages short whatever the input.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `sha256:<nix32>`, the form narinfo and fingerprints use.
impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn all_encodings_agree() {
        // From `nix path-info --json` (SRI) and the DB (base16) of one path.
        let sri = "sha256-Op0tQQGZWxecZ/E7Gs9GT9xNe1ORKVeixyNeHLiIVaM=";
        let h: Sha256Hash = sri.parse().unwrap();
        assert_eq!(h.to_sri(), sri);
        let b16: Sha256Hash = format!("sha256:{}", h.to_base16()).parse().unwrap();
        let n32: Sha256Hash = h.to_string().parse().unwrap();
        assert_eq!(b16, h);
        assert_eq!(n32, h);
        assert_eq!(
            Sha256Hash::digest(b"").to_string(),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(
            "md5:abc".parse::<Sha256Hash>(),
            Err(HashError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:abc".parse::<Sha256Hash>(),
            Err(HashError::Encoding(_))
        ));
        let bad16 = format!("sha256:{}", "g".repeat(64));
        assert!(bad16.parse::<Sha256Hash>().is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = s.parse::<Sha256Hash>();
            let _ = format!("sha256:{s}").parse::<Sha256Hash>();
        }
    }
}
