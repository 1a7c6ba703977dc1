//! The narinfo fingerprint: the text a narinfo signature covers, built and
//! parsed in one place.
//!
//! `1;<store path>;sha256:<nix32 NAR hash>;<NAR size in bytes>;<references>`,
//! where references are full store paths, sorted and joined with `,` (empty
//! when there are none). Mirrors `ValidPathInfo::fingerprint` in
//! `src/libstore/path-info.cc` (Nix 2.8), which signs and checks exactly
//! this string.
//!
//! [`fingerprint`] builds it (larder-server asks for signatures over it, via
//! [`crate::db::PathInfo::fingerprint`]); [`Fingerprint::parse`] reads it
//! back strictly (larder-signer checks what it is asked to sign with it, so
//! every field is checked and nothing is taken on trust).

use std::fmt;

use thiserror::Error;

use crate::hash::{HashError, Sha256Hash};
use crate::path::{StorePath, StorePathError};

/// The fingerprint of the path `path` in `store_dir` (e.g. `/nix/store`),
/// whose NAR has SHA-256 `nar_hash` and is `nar_size` bytes long, and which
/// refers to `references` (in any order; a path may refer to itself).
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

/// Why a fingerprint text was refused by [`Fingerprint::parse`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FingerprintError {
    /// Not five `;`-separated fields, or the first is not `1`.
    #[error("fingerprint must have 5 ';'-separated fields starting with `1`")]
    Shape,
    /// The path or a reference is not a store path in the store dir.
    #[error("fingerprint path: {0}")]
    Path(#[from] StorePathError),
    /// The NAR hash does not parse.
    #[error("fingerprint NAR hash: {0}")]
    Hash(#[from] HashError),
    /// The NAR hash parses but is not written `sha256:<nix32>`.
    #[error("fingerprint NAR hash must be written sha256:<nix32>")]
    HashEncoding,
    /// The NAR size is not a plain decimal `u64`.
    #[error("fingerprint NAR size is not a number")]
    Size,
    /// References out of order or repeated (or any other non-canonical form).
    #[error("fingerprint references are not sorted and unique")]
    Unsorted,
}

/// A parsed fingerprint; its [`Display`](fmt::Display) is the canonical
/// text, which [`Fingerprint::parse`] alone accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The store dir its paths lie in, e.g. `/nix/store`.
    pub store_dir: String,
    /// The signed path.
    pub path: StorePath,
    /// SHA-256 of the path's NAR serialisation.
    pub nar_hash: Sha256Hash,
    /// Length of the path's NAR serialisation, in bytes.
    pub nar_size: u64,
    /// The paths it refers to, sorted and unique.
    pub references: Vec<StorePath>,
}

impl Fingerprint {
    /// Parse a fingerprint whose paths lie in `store_dir`. Only the canonical
    /// form is accepted, so that what is signed is exactly what was checked.
    ///
    /// # Errors
    /// A [`FingerprintError`] naming the first field that is wrong.
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
    fn built_with_sorted_comma_joined_references() {
        let p: StorePath = "m28i9qy4zq4nwkz5cz3gj6ivani791d8-smoke".parse().unwrap();
        let a: StorePath = "8y7yr95drh588a264899m27vi59a9f4q-d".parse().unwrap();
        let h = Sha256Hash::digest(b"");
        assert_eq!(fingerprint("/nix/store", &p, &h, 120, &[p.clone(), a]), FP);
    }

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
