//! The `s3://BUCKET?endpoint=…&region=…` target: larder-sync writes a
//! standard Nix binary cache into an S3-compatible bucket itself (Debian's
//! Nix 2.8 has no S3 store), and Nix reads it over plain HTTP from the
//! bucket's web endpoint or a CDN in front of it.
//!
//! Layout (what `nix copy --to file://…?compression=zstd` writes, and what
//! Nix's `HttpBinaryCacheStore` reads):
//! `nix-cache-info`, `<hash>.narinfo` (`Compression: zstd`, `FileHash`,
//! `FileSize`, `URL: nar/<filehash>.nar.zst`), `nar/<filehash>.nar.zst`,
//! `<hash>.ls` and `log/<drv basename>`. Uploads in progress live under
//! `tmp/` until they are complete.
//!
//! - [`export`]: one path at a time, references first; a NAR is streamed
//!   through zstd into multipart parts (memory bounded by a few parts), and
//!   its narinfo is written last, so a reader never sees a narinfo whose NAR
//!   is missing.
//! - [`signer`]: signatures come from larder-signer over its unix socket;
//!   the key never leaves the signer.
//! - [`gc`]: bucket GC by roots, narinfo first, never touching objects
//!   younger than a grace period (an upload in flight).
//!
//! The S3 client is `object_store` (Apache Arrow's), not `aws-sdk-s3`:
//! measured with `cargo tree` against this workspace, `object_store` (with
//! `aws-base`, `reqwest`, `ring`) adds 55 crates we do not already build and
//! reuses our rustls/ring, where `aws-sdk-s3` + `aws-config` add 108 with
//! `aws-lc-sys` (a C/CMake build, minutes on 2 cores). Both stream and do
//! multipart uploads; `object_store`'s `WriteMultipart` bounds the parts in
//! flight for us, and its `list` gives each object's `last_modified`, which
//! the GC's grace period needs.
//!
//! Credentials never appear in the URL, on a command line or in a log:
//! they come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
//! optional `AWS_SESSION_TOKEN`), or from files named by the same variables
//! with `_FILE` appended (systemd's `LoadCredential`: `%d/…`).

pub mod bucket;
pub mod export;
pub mod gc;
pub mod signer;

pub use bucket::{
    Bucket, CREDENTIALS_HINT, Credentials, DEFAULT_LEVEL, DEFAULT_PART_MIB, S3Target, s3_error,
};
