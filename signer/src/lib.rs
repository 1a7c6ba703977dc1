//! larder-signer's key handling, as a library: the secret key itself
//! ([`signing_key`]) and its files on disk ([`key_file`]). The
//! `larder-signer` binary serves signatures with them; the end-to-end tests
//! and the benchmarks use them as oracles. Nothing else in larder holds
//! secret-key code: larder-store has only the public syntax, so that
//! larder-server links no key code (`scripts/check-boundaries.sh`).

pub mod key_file;
pub mod signing_key;
