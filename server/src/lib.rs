//! larder-server: a Nix binary cache served straight from a Nix store.
//!
//! # Floors, from the leaves up
//!
//! No module imports one above it, so a reader can stop at any floor and
//! know everything below it (`lib.rs` holds only this page and the list).
//!
//! 0. **Leaves**, each standing alone: [`config`] (flags, environment and
//!    TOML resolved into one checked [`config::Config`]), [`error`] (one
//!    [`error::ServerError`], one exhaustive match to a status), [`metrics`]
//!    (the Prometheus definitions), [`path_info_memo`], [`signer_client`]
//!    (larder-signer's unix-socket client with its per-fingerprint cache),
//!    [`signature_log`] (that cache kept across restarts in the cache dir),
//!    [`nar::plan_cache`], [`listen::systemd`], [`listen::tls`], [`view`]
//!    (views of the store: their roots, closures, tokens and selection),
//!    [`listen::unix_stall`] (the send timeout of unix-socket connections),
//!    [`framing`] (the middleware refusing ambiguously framed requests).
//! 1. **Building blocks**: [`body`] (streamed, metered response bodies),
//!    [`nar::range`], [`nar::nar_cache`] (the on-disk compressed-NAR
//!    cache), [`listen::socket`] (every kind of listening socket as one
//!    value).
//! 2. [`nar::compress`] (zstd on the fly, filling the NAR cache), and
//!    [`state`]: the [`state::AppState`] every handler shares, data only:
//!    config, store location and DB, metrics, and each cache in a field
//!    named for its module.
//! 3. **What handlers do with the state**: [`lookup`] (hash part → path
//!    info, within the request's view), [`signing`] (a narinfo's
//!    signatures), [`request_metrics`] and [`placement`] (the middlewares);
//!    and [`startup`], which opens the store and builds the state
//!    ([`startup::StartupError`] names the setting to fix).
//! 4. [`routes`]: the router, one file per endpoint.
//! 5. [`server`]: [`run`] puts the middleware and the router on the socket.
//!
//! # Request flow
//!
//! `main.rs` reads the [`config::Settings`] (flags, `LARDER_SERVER_*`
//! environment, TOML file: [`larder_store::cli`]'s convention), resolves them into a checked [`config::Config`], and calls
//! [`run`]. `run` opens the store DB read-only once (so a wrong
//! `--store-root` fails at startup, naming the setting), builds the shared
//! [`state::AppState`] ([`startup::app_state`]), binds ([`listen`]), and
//! hands connections to actix-web's workers: one single-threaded async
//! runtime per core, each with its own pool of blocking threads.
//!
//! A request then goes:
//!
//! 1. **Metrics middleware** ([`request_metrics`]): times the request to its
//!    response headers and counts it by matched route pattern and status
//!    (and by view). Inside it, [`framing`] answers 400 and closes the
//!    connection for a request with both `Transfer-Encoding` and
//!    `Content-Length`.
//! 2. **Placement** ([`placement`]): the request's view, from `Host` and
//!    the first path segment; a private view's token checked (401 on every
//!    route otherwise); the view's prefix stripped. Lookups then answer
//!    anything outside the view exactly as an absent path.
//! 3. **Router** ([`routes`]): one file per endpoint. Every handler
//!    answers GET and HEAD; other methods get 405 with `Allow`. The
//!    router's table of routes ([`routes::SERIES`]) also names every
//!    metric series, which `run` creates at 0 before the first request.
//! 4. **Lookup** ([`lookup`]): the 32-character hash part is validated,
//!    then the DB is queried in place on a connection that never waits
//!    for a lock (busy timeout 0), or, when SQLite answers busy, on a DB
//!    thread ([`larder_store::db::StoreDb::path_info_now`]).
//!    Malformed and absent hashes are both 404. narinfo and `.ls` lookups
//!    go through a short-lived memo ([`path_info_memo`]).
//! 5. **Decide before the headers.** NAR, listing, log and file handlers do
//!    everything that can fail first: the NAR route walks the store path
//!    into a [`larder_store::nar::NarPlan`] (every file `lstat`ed, sizes
//!    known; recent plans are kept in [`nar::plan_cache`]) and checks it
//!    against the DB's NAR hash and size. Then the status and
//!    `Content-Length` are certain.
//!    A zstd response first looks in the compressed-NAR cache
//!    ([`nar::nar_cache`], when `cache-dir` is set): a hit is served as a
//!    static file with its `Content-Length`, without walking the store path,
//!    or, behind nginx with `accel-redirect`, named to nginx, which sends it
//!    ([`nar::offload`] decides which requests nginx may answer).
//! 6. **Stream.** Bodies come from blocking threads through bounded
//!    channels ([`body`], and [`nar::compress`] for zstd), wrapped in
//!    [`body::MeteredStream`] for byte counts and durations. A failure after
//!    the headers is yielded as an error item, and actix then drops the
//!    connection: the client sees a broken download, never a clean short
//!    one, which Nix would treat as a hard failure with no fallback.
//! 7. **Errors** ([`error::ServerError`]): one enum, one exhaustive match to
//!    a status; the client gets the status phrase, the log gets the detail.
//!
//! The server holds no key. narinfo signatures are the DB's own plus, with
//! `signer-socket` set, larder-signer's ([`signing`], [`signer_client`]):
//! asked over a unix socket, cached per fingerprint (and, with a cache
//! dir, kept across restarts), and made ahead for the paths newest in the
//! store and for the references of each narinfo asked for.

pub mod body;
pub mod config;
pub mod error;
pub mod framing;
pub mod in_flight;
pub mod listen;
pub mod lookup;
pub mod metrics;
pub mod nar;
pub mod path_info_memo;
pub mod placement;
pub mod request_metrics;
pub mod routes;
pub mod server;
pub mod signature_log;
pub mod signer_breaker;
pub mod signer_client;
pub mod signing;
pub mod startup;
pub mod state;
pub mod view;

pub use server::run;
pub use startup::{StartupError, check};
