//! The narinfo fingerprint as a type: what a signature covers.
//! `1;<store path>;sha256:<nix32>;<nar size>;<comma-joined sorted references>`.
//! The signer parses what it is asked to sign with this, so every field is
//! checked and nothing is taken on trust.

use std::fmt;

use thiserror::Error;

use crate::hash::{HashError, Sha256Hash};
use crate::path::{StorePath, StorePathError};
use crate::signature::fingerprint;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FingerprintError {
    #[error("fingerprint must have 5 ';'-separated fields starting with `1`")]
    Shape,
    #[error("fingerprint path: {0}")]
    Path(#[from] StorePathError),
    #[error("fingerprint NAR hash: {0}")]
    Hash(#[from] HashError),
    #[error("fingerprint NAR hash must be written sha256:<nix32>")]
    HashEncoding,
    #[error("fingerprint NAR size is not a number")]
    Size,
    #[error("fingerprint references are not sorted and unique")]
    Unsorted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub store_dir: String,
    pub path: StorePath,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    /// Sorted and unique.
    pub references: Vec<StorePath>,
}

impl Fingerprint {
    /// Parse a fingerprint whose paths lie in `store_dir`. Only the canonical
    /// form is accepted, so that what is signed is exactly what was checked.
    pub fn parse(store_dir: &str, s: &str) -> Result<Self, FingerprintError> {
        let fields: Vec<&str> = s.split(';').collect();
        let [version, path, hash, size, refs] = fields[..] else {
            return Err(FingerprintError::Shape);
        };
        if version != "1" {
            return Err(FingerprintError::Shape);
        }
        let nar_hash: Sha256Hash = hash.parse()?;
        if hash != nar_hash.to_string() {
            return Err(FingerprintError::HashEncoding);
        }
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FingerprintError::Size);
        }
        let nar_size = size.parse().map_err(|_| FingerprintError::Size)?;
        let references = if refs.is_empty() {
            Vec::new()
        } else {
            refs.split(',')
                .map(|r| StorePath::from_absolute(store_dir, r))
                .collect::<Result<Vec<_>, _>>()?
        };
        let fp = Fingerprint {
            store_dir: store_dir.to_owned(),
            path: StorePath::from_absolute(store_dir, path)?,
            nar_hash,
            nar_size,
            references,
        };
        let unique = fp
            .references
            .windows(2)
            .all(|w| w[0].to_string() < w[1].to_string());
        if !unique || fp.to_string() != s {
            return Err(FingerprintError::Unsorted);
        }
        Ok(fp)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fingerprint(
            &self.store_dir,
            &self.path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FP: &str = "1;/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke;sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;120;/nix/store/8y7yr95drh588a264899m27vi59a9f4q-d,/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke";

    #[test]
    fn roundtrips() {
        let fp = Fingerprint::parse("/nix/store", FP).unwrap();
        assert_eq!(fp.nar_size, 120);
        assert_eq!(fp.references.len(), 2);
        assert_eq!(fp.to_string(), FP);
        let none = "1;/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke;sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;0;";
        assert!(
            Fingerprint::parse("/nix/store", none)
                .unwrap()
                .references
                .is_empty()
        );
    }

    #[test]
    fn refuses_non_canonical_forms() {
        use FingerprintError::*;
        let p = |s: &str| Fingerprint::parse("/nix/store", s).unwrap_err();
        assert_eq!(p("garbage"), Shape);
        assert_eq!(p(&FP.replacen("1;", "2;", 1)), Shape);
        assert_eq!(p(&FP.replace(";120;", ";+120;")), Size);
        assert_eq!(p(&FP.replace(";120;", ";;")), Size);
        let swapped = FP.replace(
            "/nix/store/8y7yr95drh588a264899m27vi59a9f4q-d,/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke",
            "/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke,/nix/store/8y7yr95drh588a264899m27vi59a9f4q-d",
        );
        assert_eq!(p(&swapped), Unsorted);
        let twice = FP.replace(
            ",/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke",
            ",/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke,/nix/store/m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke",
        );
        assert_eq!(p(&twice), Unsorted);
        let b16 = FP.replace(
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        assert_eq!(p(&b16), HashEncoding);
        assert!(matches!(
            p(&FP.replace("/nix/store/8y7", "/other/8y7")),
            Path(_)
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = Fingerprint::parse("/nix/store", &s);
            let _ = Fingerprint::parse("/nix/store", &format!("1;/nix/store/{s}"));
        }
    }
}
