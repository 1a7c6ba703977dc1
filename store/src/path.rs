//! Store paths: `<hash32>-<name>` under a store dir. The hash part is 20
//! bytes written as 32 nix32 characters; the name is at most 211 characters
//! of `[A-Za-z0-9+\-._?=]` and does not start with `.`. Nix's `StorePath`
//! (`src/libstore/path.cc`).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::nixbase32;

/// Bytes in a store path's hash part (`StorePath::HashLen` in
/// `src/libstore/path.hh`).
pub const HASH_BYTES: usize = 20;
/// nix32 characters in a store path's hash part.
pub const HASH_CHARS: usize = 32;
/// The longest name Nix accepts, in characters (`src/libstore/path.cc`,
/// `checkName`).
pub const MAX_NAME_LEN: usize = 211;

/// Why a text is not a store path. Mirrors the checks of Nix's
/// `StorePath` constructor and `checkName` (`src/libstore/path.cc`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StorePathError {
    /// The hash part is not [`HASH_CHARS`] long (the length found, in characters).
    #[error("hash part must be {HASH_CHARS} nix32 characters, got {0} characters")]
    HashLength(usize),
    /// The hash part is not nix32.
    #[error("hash part has a character outside the nix32 alphabet")]
    HashChar,
    /// No `-` after the hash part (the basename given).
    #[error("store path {0:?} has no '-' between hash part and name")]
    MissingDash(String),
    /// Nothing after `<hash>-`.
    #[error("store path name is empty")]
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`] (its length, in bytes).
    #[error("store path name is {0} characters long; the limit is {MAX_NAME_LEN}")]
    NameTooLong(usize),
    /// The name starts with `.`.
    #[error("store path name starts with '.'")]
    NameStartsWithDot,
    /// The name holds a character outside `[A-Za-z0-9+\-._?=]` (the first one).
    #[error("store path name contains {0:?}; allowed are A-Z a-z 0-9 and + - . _ ? =")]
    NameChar(char),
    /// An absolute path that is not `<store_dir>/<basename>`.
    #[error("path is not directly inside the store dir {store_dir}")]
    NotInStore {
        /// The store dir the path was expected in.
        store_dir: String,
    },
}

/// The 20-byte hash part of a store path; what `<hash>.narinfo` names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePathHash([u8; HASH_BYTES]);

impl StorePathHash {
    /// The raw 20 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_BYTES] {
        &self.0
    }
}

impl FromStr for StorePathHash {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != HASH_CHARS {
            return Err(StorePathError::HashLength(s.chars().count()));
        }
        let bytes = nixbase32::decode(s).map_err(|_| StorePathError::HashChar)?;
        let mut hash = [0u8; HASH_BYTES];
        hash.copy_from_slice(&bytes);
        Ok(StorePathHash(hash))
    }
}

impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&nixbase32::encode(&self.0))
    }
}

impl fmt::Debug for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePathHash({self})")
    }
}

/// A store path without its store dir: hash part and name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash: StorePathHash,
    name: String,
}

/// Checks a store path name: 1 to [`MAX_NAME_LEN`] characters of
/// `[A-Za-z0-9+\-._?=]`, not starting with `.`.
///
/// # Errors
/// [`StorePathError::EmptyName`], [`StorePathError::NameTooLong`],
/// [`StorePathError::NameStartsWithDot`] or [`StorePathError::NameChar`].
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong(name.len()));
    }
    if name.starts_with('.') {
        return Err(StorePathError::NameStartsWithDot);
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c)))
    {
        return Err(StorePathError::NameChar(c));
    }
    Ok(())
}

impl StorePath {
    /// The path `<hash>-<name>`.
    ///
    /// # Errors
    /// As [`validate_name`].
    pub fn new(hash: StorePathHash, name: &str) -> Result<Self, StorePathError> {
        validate_name(name)?;
        Ok(StorePath {
            hash,
            name: name.to_owned(),
        })
    }

    /// Parse a basename `<hash32>-<name>`.
    pub fn from_basename(s: &str) -> Result<Self, StorePathError> {
        let hash = s
            .get(..HASH_CHARS)
            .ok_or(StorePathError::HashLength(s.len()))?;
        let hash: StorePathHash = hash.parse()?;
        let name = s[HASH_CHARS..]
            .strip_prefix('-')
            .ok_or_else(|| StorePathError::MissingDash(s.to_owned()))?;
        StorePath::new(hash, name)
    }

    /// Parse `<store_dir>/<hash32>-<name>`; anything below the path itself is refused.
    pub fn from_absolute(store_dir: &str, full: &str) -> Result<Self, StorePathError> {
        let not_in_store = || StorePathError::NotInStore {
            store_dir: store_dir.to_owned(),
        };
        let base = full
            .strip_prefix(store_dir)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(not_in_store)?;
        if base.contains('/') {
            return Err(not_in_store());
        }
        StorePath::from_basename(base)
    }

    /// The hash part.
    pub fn hash(&self) -> &StorePathHash {
        &self.hash
    }

    /// The name after `<hash>-`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::from_basename(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: &str = "8y7yr95drh588a264899m27vi59a9f4q-hello-2.12.1";

    #[test]
    fn parses_and_prints() {
        let p: StorePath = P.parse().unwrap();
        assert_eq!(p.name(), "hello-2.12.1");
        assert_eq!(p.hash().to_string(), "8y7yr95drh588a264899m27vi59a9f4q");
        assert_eq!(p.to_string(), P);
        let abs = StorePath::from_absolute("/nix/store", &format!("/nix/store/{P}")).unwrap();
        assert_eq!(abs, p);
    }

    #[test]
    fn refuses_bad_paths_with_reasons() {
        use StorePathError::*;
        assert_eq!(StorePath::from_basename("short"), Err(HashLength(5)));
        assert_eq!(
            StorePath::from_basename("8y7yr95drh588a264899m27vi59a9f4e-x"),
            Err(HashChar)
        );
        assert!(matches!(
            StorePath::from_basename("8y7yr95drh588a264899m27vi59a9f4qx"),
            Err(MissingDash(_))
        ));
        assert_eq!(
            StorePath::from_basename("8y7yr95drh588a264899m27vi59a9f4q-"),
            Err(EmptyName)
        );
        assert_eq!(
            StorePath::from_basename("8y7yr95drh588a264899m27vi59a9f4q-.x"),
            Err(NameStartsWithDot)
        );
        assert_eq!(
            StorePath::from_basename("8y7yr95drh588a264899m27vi59a9f4q-a/b"),
            Err(NameChar('/'))
        );
        let long = format!("8y7yr95drh588a264899m27vi59a9f4q-{}", "a".repeat(212));
        assert_eq!(StorePath::from_basename(&long), Err(NameTooLong(212)));
        assert!(StorePath::from_absolute("/nix/store", &format!("/nix/store/{P}/bin")).is_err());
        assert!(StorePath::from_absolute("/nix/store", &format!("/nix/storex/{P}")).is_err());
        // Multi-byte characters must not split a char boundary.
        assert!(StorePath::from_basename("ééééééééééééééééé-x").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,260}") {
            let _ = StorePath::from_basename(&s);
            let _ = StorePath::from_absolute("/nix/store", &s);
            let _ = s.parse::<StorePathHash>();
        }
    }
}
