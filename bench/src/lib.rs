//! Benchmarks of larder against the real Nix and a static file server.
//! Binaries, not tests: `cargo run --release -p larder-bench --bin NAME`.
//!
//! - [`closure`]: the benchmark closure, real files in a chroot store under
//!   `bench/work/` (gitignored), made once and reused.
//! - [`http`] and [`load`]: a minimal keep-alive HTTP/1.1 client and the
//!   load it generates (N connections, bodies counted and discarded), the
//!   same for every server measured.
//! - [`servers`]: larder-server, larder-signer and nginx as child processes.
//! - [`fixtures`]: static exports for nginx, the concatenated NARs, a store
//!   with one path over 1 GiB.
//! - [`memory`]: the server's RSS under many concurrent downloads.
//! - [`report`], [`results`], [`serve_report`]: machine description,
//!   medians, targets, Markdown, the plot.

pub mod closure;
pub mod fixtures;
pub mod http;
pub mod load;
pub mod memory;
pub mod report;
pub mod results;
pub mod serve_report;
pub mod servers;
pub mod signing;

/// Errors of a benchmark run: they end it with a message.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
