//! Producing NAR bytes to send, beside the store's own NAR encoder
//! (`larder_store::nar`): zstd on the fly ([`compress`]), the compressed-NAR
//! cache it fills ([`nar_cache`]), the layouts of recently walked paths
//! ([`plan_cache`]), byte ranges ([`range`]), and when nginx may send a
//! cached file itself ([`offload`]).

pub mod compress;
pub mod nar_cache;
pub mod offload;
pub mod plan_cache;
pub mod range;
