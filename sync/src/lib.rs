//! larder-sync: every built path reaches the cache, and builders' closures
//! reach the cache host. All copying is done by the real `nix copy`.
//!
//! Push (builders, CI): [`watch`] follows the local store DB's `ValidPaths`
//! row ids read-only (`StoreDb::paths_after`) and records new paths in the
//! durable [`queue`] (a SQLite file, WAL) together with its checkpoint;
//! `larder-sync enqueue` (Nix's `post-build-hook`) appends to the same
//! queue. A pusher thread drains the queue in batches with
//! `nix copy --to URI`, skipping what the target already has, and a path
//! leaves the queue only once its copy succeeded; failures back off
//! exponentially. [`metrics`] serves the queue's state to Prometheus.
//!
//! Pull (cache host): [`pull`] copies closures from builders with
//! `nix copy --from URI` (signatures checked unless told otherwise) and
//! keeps them alive with [`gcroots`]; [`daemon`] does so per configured
//! builder at an interval.
//!
//! Threads, not async: the work is SQLite calls and child processes, both
//! blocking, and a watcher has three long-lived loops (scanner, pusher,
//! metrics listener), so each gets a thread.

pub mod daemon;
pub mod drv;
pub mod error;
pub mod gcroots;
pub mod keep;
pub mod lease;
pub mod metrics;
pub mod nix;
pub mod progress;
pub mod pull;
pub mod push;
pub mod queue;
pub mod receive;
pub mod retention;
pub mod s3;
pub mod target;
pub mod uri;
pub mod watch;

pub use error::{Result, SyncError};
