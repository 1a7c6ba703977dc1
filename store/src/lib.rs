//! larder-store: Nix's formats, and read-only access to a local Nix store.
//!
//! Every larder process links this crate; it knows no process.
//!
//! Pure formats, no I/O: [`nixbase32`], [`path`] (store paths), [`hash`]
//! (SHA-256 in Nix's encodings), [`narinfo`], [`fingerprint`] (what a
//! signature covers: built and parsed strictly), [`signature`] and
//! [`public_key`] (their `name:base64` syntax, from [`named_base64`]) and
//! [`nar`] (the NAR layout: bytes, listing, offsets). [`signer_proto`] is
//! the framed protocol spoken with larder-signer.
//!
//! No key code: larder-store neither signs nor verifies and links no
//! ed25519 or random-number crate, because larder-server links it. Secret
//! keys (loading, generating, signing, zeroizing) live in larder-signer;
//! `scripts/check-boundaries.sh` keeps it so.
//!
//! I/O: [`location`] says where a store really is, [`dump`] walks a path on
//! disk and streams its NAR without blocking the async reactor, and [`db`]
//! reads the store's SQLite DB read-only.
//!
//! With the `cli` feature, [`cli`] is the command-line convention (flags,
//! environment, `--config` file, logging) all three binaries share.

#![deny(missing_docs)]

pub mod blocking_pool;
#[cfg(feature = "cli")]
pub mod cli;
pub mod db;
pub mod dump;
pub mod fingerprint;
pub mod hash;
pub mod location;
pub mod named_base64;
pub mod nar;
pub mod nar_check;
pub mod narinfo;
pub mod nixbase32;
#[cfg(feature = "cli")]
pub mod panics;
pub mod path;
pub mod public_key;
pub mod signature;
pub mod signer_proto;
pub mod tokens;
pub mod unix_socket;

#[cfg(test)]
mod format_properties;

pub use hash::Sha256Hash;
pub use location::StoreLocation;
pub use path::{StorePath, StorePathHash};
