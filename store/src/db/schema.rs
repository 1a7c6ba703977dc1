//! The version of Nix's store DB schema that larder reads.

/// The only schema version larder reads: what Nix 2.0 and later write to
/// `<state>/db/schema` (`nixSchemaVersion` in `src/libstore/local-store.hh`).
pub const SCHEMA_VERSION: u32 = 10;
