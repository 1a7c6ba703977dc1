//! Configuration: one typed struct, three sources, larder's convention.
//!
//! [`Settings`] is what the user said: flags (clap), environment variables
//! (`LARDER_SERVER_<FLAG>`, named in `--help`) and a TOML file (`--config`,
//! keys = long flags, unknown keys refused), merged by
//! [`larder_store::cli`] in that order of precedence. The defaults live in
//! the clap declarations below and nowhere else, so `--help` shows them;
//! so do the valid ranges of numbers (`value_parser` ranges), which clap
//! checks for flags, environment and file alike, naming the range.
//! [`Settings::resolve`] checks every value into a [`Config`], naming the
//! setting and the fix when one is wrong.
//! `server/larder-server.example.toml` lists every key with its default
//! (a test keeps it true).

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, ValueEnum};
use larder_store::cli::Convention;
use thiserror::Error;

use crate::view::config::{self as view_config, ViewConfig};

/// larder-server's name and environment prefix.
pub const CONVENTION: Convention = Convention {
    binary: "larder-server",
    env_prefix: "LARDER_SERVER",
    actions: &["check-config"],
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("setting {setting} = {value:?}: {fix}")]
    Invalid {
        setting: &'static str,
        value: String,
        fix: &'static str,
    },
    /// A `[[view]]` table of the `--config` file is wrong; the message
    /// names the file or the view, and the key.
    #[error("{0}")]
    Views(String),
}

/// Tables of the `--config` file that are no flags: `[[view]]`.
pub const SECTIONS: &[&str] = &["view"];

/// How narinfo files advertise NARs (independent of HTTP `Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// `Compression: none`, `nar/<hash>.nar` URLs.
    None,
    /// `Compression: zstd`, `nar/<hash>.nar.zst` URLs compressed on the fly:
    /// the only compression clients older than Nix 2.14 get.
    Zstd,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Tcp(String),
    Unix(PathBuf),
    /// The socket systemd passes (socket activation, `LISTEN_FDS`).
    Systemd,
}

impl Bind {
    fn parse(s: &str) -> Result<Bind, ConfigError> {
        if s == "systemd" {
            return Ok(Bind::Systemd);
        }
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        match s.parse::<std::net::SocketAddr>() {
            Ok(_) => Ok(Bind::Tcp(s.to_owned())),
            Err(_) => Err(ConfigError::Invalid {
                setting: "bind",
                value: s.to_owned(),
                fix: "use ADDRESS:PORT (127.0.0.1:5000, [::1]:5000), unix:/path/to/socket or systemd",
            }),
        }
    }
}

/// What the user said, defaults filled in by clap. Parse it with
/// [`larder_store::cli::parse`] and [`CONVENTION`] so that the environment
/// and the `--config` file count.
#[derive(Debug, Parser)]
#[command(
    name = "larder-server",
    version,
    about = "Serve a Nix store as a binary cache"
)]
pub struct Settings {
    /// TOML file whose keys are the long flags below (`store-root = "/"`); unknown keys are refused.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the settings and open the store DB, then exit: 0 if the server would start. Run as root (systemd's ExecStartPre=+), it also creates the DB's WAL index that an unprivileged server needs.
    #[arg(long)]
    pub check_config: bool,
    /// Where to listen: ADDRESS:PORT, unix:/path, or `systemd` (socket activation).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub bind: String,
    /// Mode of the socket with --bind unix:PATH, in octal: who may connect (a reverse proxy needs write permission).
    #[arg(long, default_value = "0660")]
    pub socket_mode: String,
    /// Group (name or gid) of the socket with --bind unix:PATH, e.g. the reverse proxy's; unset = the server's own.
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Directory under which the store really is (`/` for the host store, or a chroot store's root).
    #[arg(long, default_value = "/")]
    pub store_root: PathBuf,
    /// The store dir clients see; must equal theirs.
    #[arg(long, default_value = larder_store::StoreLocation::DEFAULT_STORE_DIR)]
    pub store_dir: String,
    /// Priority announced in /nix-cache-info (lower is preferred; cache.nixos.org is 40).
    #[arg(long, default_value_t = 30)]
    pub priority: u32,
    /// narinfo-level compression: `zstd` gives old clients (Nix < 2.14) compressed NARs.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// zstd level for both kinds of compression, 1 (fastest) to 19.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// zstd worker threads for one large NAR; 0 = one per core.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub zstd_threads: u32,
    /// HTTP worker threads; 0 = one per core.
    #[arg(long, default_value_t = 0, value_parser = RangedU64ValueParser::<usize>::new().range(0..=1024))]
    pub workers: usize,
    /// Maximum concurrent connections per worker.
    #[arg(long, default_value_t = 25_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Seconds an idle keep-alive connection stays open; 0 = no keep-alive.
    #[arg(long, default_value_t = 75, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub keep_alive_secs: u64,
    /// Seconds a client has to send its request headers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// Seconds running downloads get to finish on SIGTERM/SIGINT (0 = none: cut them).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub shutdown_timeout_secs: u64,
    /// Seconds to keep serving after SIGTERM/SIGINT with `/health` answering 503 `draining`, so load balancers stop sending before the listeners close; 0 = close at once.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_delay_secs: u64,
    /// Seconds a download may make no progress (the client accepts no bytes) before it is disconnected; 0 = never.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub send_timeout_secs: u64,
    /// Threads reading files for downloads (one 256 KiB chunk per job, only while the client reads), 1 to 1024.
    #[arg(long, default_value_t = 16)]
    pub read_threads: usize,
    /// Threads answering store-DB lookups, apart from file reads, 1 to 256.
    #[arg(long, default_value_t = 4)]
    pub db_threads: usize,
    /// Directory of the compressed-NAR cache (zstd NARs kept for the next download) and of larder-signer's signatures kept across restarts; none if unset.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Behind nginx only: answer a download that the compressed-NAR cache holds with an empty body and `X-Accel-Redirect: <PREFIX>file/<name>` (a `.nar.zst` URL) or `<PREFIX>encoded/<name>` (`Content-Encoding: zstd`), so nginx sends the cache file itself (sendfile); e.g. `/_larder_cache/`. Needs `cache-dir`; see contrib/nginx/larder.conf.
    #[arg(long)]
    pub accel_redirect: Option<String>,
    /// Size limit of the compressed-NAR cache in MiB; least recently used files go first.
    #[arg(long, default_value_t = 10_240, value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    pub cache_size_mib: u64,
    /// Milliseconds a narinfo lookup (hit or miss) is remembered; 0 = always ask the DB.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub path_info_ttl_ms: u64,
    /// Seconds shared HTTP caches (proxies, CDNs) may keep a narinfo and nix-cache-info (`Cache-Control: public, max-age`); 0 = `no-store`. NAR URLs are immutable whatever this says.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub narinfo_max_age_secs: u64,
    /// TLS certificate chain (PEM); serve HTTPS with --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, not readable by other users).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Unix socket of larder-signer; narinfo then carries its signatures too. None if unset.
    #[arg(long)]
    pub signer_socket: Option<PathBuf>,
    /// Milliseconds to wait for larder-signer before treating it as down (then requests fail fast until a probe, one a second, gets an answer).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub signer_timeout_ms: u64,
    /// While the signer is down: `absent` answers narinfo with 404 (clients build locally or use another cache; they remember the miss for an hour); `unavailable` with 503 and Retry-After (Nix 2.8 then fails the build, even with --fallback); `unsigned` serves the store's own signatures only (clients that require signatures build locally, but remember the unsigned narinfo for a month).
    #[arg(long, value_enum, default_value_t = SignerDown::Absent)]
    pub signer_down: SignerDown,
    /// Retry-After seconds sent with a 503 while the signer is down.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub signer_retry_after_secs: u64,
    /// Signatures remembered per fingerprint (least recently used go first).
    #[arg(long, default_value_t = 100_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000_000))]
    pub signature_cache_entries: usize,
    /// Seconds between checks of the signer's public keys: when they changed (rotation), cached signatures are dropped and the landing page shows the new keys.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub signer_key_check_secs: u64,
    /// The URL clients use (behind a proxy: `https://cache.example`), for the landing page and /nix.conf; unset = from the request's Host.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `larder_server=debug,info`.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// The resolved configuration, every value checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: Bind,
    /// Mode and group of a unix socket (`bind = unix:…`).
    pub socket: SocketOptions,
    pub store_root: PathBuf,
    pub store_dir: String,
    pub priority: u32,
    pub compression: Compression,
    pub zstd_level: i32,
    pub zstd_threads: u32,
    pub workers: usize,
    pub max_connections: usize,
    pub keep_alive_secs: u64,
    pub request_timeout_secs: u64,
    pub shutdown_timeout_secs: u64,
    /// Serving on after a stop signal, `/health` saying draining.
    pub drain_delay_secs: u64,
    /// 0 = never.
    pub send_timeout_secs: u64,
    pub read_threads: usize,
    pub db_threads: usize,
    pub cache_dir: Option<PathBuf>,
    /// URI prefix (`/…/`) of nginx's internal locations for cache files,
    /// if downloads of cached compressed NARs are handed to nginx.
    pub accel_redirect: Option<String>,
    pub cache_size_mib: u64,
    pub path_info_ttl_ms: u64,
    /// `max-age` of narinfo and nix-cache-info for shared caches; 0 = `no-store`.
    pub narinfo_max_age_secs: u64,
    /// Certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub signer: Option<SignerConfig>,
    /// `public-url` without a trailing `/`.
    pub public_url: Option<String>,
    /// The `[[view]]` tables of the `--config` file; empty: one view of
    /// the whole store.
    pub views: Vec<ViewConfig>,
    pub log: String,
}

/// Who may connect to the server's unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Permission bits, at most 0o777.
    pub mode: u32,
    /// A group name or numeric gid; `None` keeps the server's group.
    pub group: Option<String>,
}

/// What to do with narinfo requests while larder-signer cannot be reached.
/// Seen with the real Nix 2.8 (`tests/tests/server_signer_down.rs`): a 503
/// fails the client's build after its retries (and `--fallback` aborts
/// it), a 404 lets it build locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignerDown {
    /// 404, as for a path the cache lacks: clients build locally or use
    /// their next substituter, and cache the miss for
    /// `narinfo-cache-negative-ttl` (1 h). The default: with larder as the
    /// only substituter, builds go on.
    Absent,
    /// 503 with Retry-After: no client caches anything, but Nix 2.8 retries,
    /// then fails the build (with `--fallback` it aborts). For clients that
    /// would rather fail than rebuild.
    Unavailable,
    /// Serve the narinfo with only the store's own signatures: clients that
    /// require signatures ignore it and build locally, and cache it for
    /// `narinfo-cache-positive-ttl` (30 days), so they keep building
    /// locally after the signer is back; clients that do not require
    /// signatures get the path.
    Unsigned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerConfig {
    pub socket: PathBuf,
    pub timeout_ms: u64,
    pub key_check_secs: u64,
    pub when_down: SignerDown,
    pub retry_after_secs: u64,
    pub cache_entries: std::num::NonZeroUsize,
}

impl Settings {
    /// Check every value; the resolved [`Config`].
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let store_dir = self.store_dir;
        if !store_dir.starts_with('/') || store_dir.len() < 2 {
            return Err(invalid(
                "store-dir",
                &store_dir,
                "use an absolute path such as /nix/store",
            ));
        }
        let views = match &self.config {
            Some(file) => view_config::read_views(file).map_err(ConfigError::Views)?,
            None => Vec::new(),
        };
        view_config::check_views(&views).map_err(ConfigError::Views)?;
        let public_url = match self.public_url {
            None => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(url) => {
                return Err(invalid(
                    "public-url",
                    url,
                    "use the URL clients use, starting with https:// or http://",
                ));
            }
        };
        let accel_redirect = match self.accel_redirect {
            None => None,
            Some(prefix) if self.cache_dir.is_none() => {
                return Err(invalid(
                    "accel-redirect",
                    prefix,
                    "set cache-dir too: only files of the compressed-NAR cache are handed to nginx",
                ));
            }
            Some(prefix) if plain_uri_prefix(&prefix) => Some(prefix),
            Some(prefix) => {
                return Err(invalid(
                    "accel-redirect",
                    prefix,
                    "use the URI prefix of nginx's internal locations: /, then segments of letters, digits, _ - . (not . or ..), each ending in /, at most 200 bytes, e.g. /_larder_cache/",
                ));
            }
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls-cert", "(set)", "also set tls-key")),
            (None, Some(_)) => return Err(invalid("tls-key", "(set)", "also set tls-cert")),
        };
        let signer = match self.signer_socket {
            None => None,
            Some(socket) => Some(SignerConfig {
                socket,
                timeout_ms: self.signer_timeout_ms,
                key_check_secs: self.signer_key_check_secs,
                when_down: self.signer_down,
                retry_after_secs: self.signer_retry_after_secs,
                cache_entries: std::num::NonZeroUsize::new(self.signature_cache_entries)
                    .ok_or_else(|| invalid("signature-cache-entries", 0, "use at least 1"))?,
            }),
        };
        if !(1..=1024).contains(&self.read_threads) {
            return Err(invalid(
                "read-threads",
                self.read_threads,
                "use 1 to 1024 threads",
            ));
        }
        if !(1..=256).contains(&self.db_threads) {
            return Err(invalid(
                "db-threads",
                self.db_threads,
                "use 1 to 256 threads",
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let or_cores = |n: usize| if n == 0 { cores } else { n };
        let mode = u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "socket-mode",
                    &self.socket_mode,
                    "use octal permission bits from 0000 to 0777, e.g. 0660",
                )
            })?;
        if self.socket_group.as_deref() == Some("") {
            return Err(invalid(
                "socket-group",
                "",
                "name a group or gid, or leave it unset",
            ));
        }
        Ok(Config {
            bind: Bind::parse(&self.bind)?,
            socket: SocketOptions {
                mode,
                group: self.socket_group,
            },
            store_root: self.store_root,
            store_dir: store_dir.trim_end_matches('/').to_owned(),
            priority: self.priority,
            compression: self.compression,
            zstd_level: self.zstd_level,
            zstd_threads: or_cores(self.zstd_threads as usize) as u32,
            workers: or_cores(self.workers),
            max_connections: self.max_connections,
            keep_alive_secs: self.keep_alive_secs,
            request_timeout_secs: self.request_timeout_secs,
            shutdown_timeout_secs: self.shutdown_timeout_secs,
            drain_delay_secs: self.drain_delay_secs,
            send_timeout_secs: self.send_timeout_secs,
            read_threads: self.read_threads,
            db_threads: self.db_threads,
            cache_dir: self.cache_dir,
            accel_redirect,
            cache_size_mib: self.cache_size_mib,
            path_info_ttl_ms: self.path_info_ttl_ms,
            narinfo_max_age_secs: self.narinfo_max_age_secs,
            tls,
            signer,
            public_url,
            views,
            log: self.log,
        })
    }
}

fn invalid(setting: &'static str, value: impl std::fmt::Display, fix: &'static str) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_string(),
        fix,
    }
}

/// Whether `prefix` is a URI prefix larder can put in `X-Accel-Redirect`
/// as it is: `/seg/…/seg/` with at least one segment of `[A-Za-z0-9_.-]`,
/// none empty (`//`), `.` or `..` (nginx would not match its location
/// with it, or match another), at most 200 bytes (a response header; nginx
/// reads them into a 64 KiB buffer in the recipe, 4 KiB by default). No
/// `%`, space, CR, LF or non-ASCII byte can reach the header.
fn plain_uri_prefix(prefix: &str) -> bool {
    let Some(inner) = prefix.strip_prefix('/').and_then(|p| p.strip_suffix('/')) else {
        return false;
    };
    prefix.len() <= 200
        && inner.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn settings(args: &[&str], file: Option<&Path>) -> Result<Config, String> {
        let args = std::iter::once("larder-server").chain(args.iter().copied());
        let parsed: Settings = larder_store::cli::try_parse_with_sections(
            &CONVENTION,
            SECTIONS,
            args,
            file.map(Path::to_owned),
        )
        .map_err(|e| e.to_string())?;
        parsed.resolve().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = settings(&[], None).unwrap();
        assert_eq!(c.bind, Bind::Tcp("127.0.0.1:5000".into()));
        assert_eq!(c.store_root, PathBuf::from("/"));
        assert_eq!(c.store_dir, "/nix/store");
        assert_eq!(c.priority, 30);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.zstd_level, 1);
    }

    #[test]
    fn the_example_file_states_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("larder-server.example.toml");
        let from_file = settings(&[], Some(&example)).unwrap();
        let defaults = settings(&[], None).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(
            &file,
            "priority = 50\ncompression = \"zstd\"\nbind = \"unix:/run/larder.sock\"\n",
        )
        .unwrap();
        let c = settings(&["--priority", "10"], Some(&file)).unwrap();
        assert_eq!(c.priority, 10);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.bind, Bind::Unix("/run/larder.sock".into()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("larder.toml");
        std::fs::write(&file, "priorty = 3\n").unwrap();
        let msg = settings(&[], Some(&file)).unwrap_err();
        assert!(
            msg.contains(&*file.to_string_lossy()) && msg.contains("priorty"),
            "{msg}"
        );
        let err = settings(&["--bind", "localhost"], None).unwrap_err();
        assert!(err.contains("setting bind"), "{err}");
        let err = settings(&["--socket-mode", "0999"], None).unwrap_err();
        assert!(err.contains("socket-mode"), "{err}");
        let c = settings(&["--socket-mode", "0604", "--socket-group", "www"], None).unwrap();
        assert_eq!(c.socket.mode, 0o604);
        assert_eq!(c.socket.group.as_deref(), Some("www"));
        assert_eq!(settings(&[], None).unwrap().socket.mode, 0o660);
        let err = settings(&["--zstd-level", "40"], None).unwrap_err();
        assert!(err.contains("zstd-level"), "{err}");
        let err = settings(
            &[
                "--signer-socket",
                "/run/s",
                "--signature-cache-entries",
                "0",
            ],
            None,
        )
        .unwrap_err();
        assert!(err.contains("signature-cache-entries"), "{err}");
    }

    #[test]
    fn accel_redirect_needs_the_cache_and_a_plain_prefix() {
        let err = settings(&["--accel-redirect", "/_larder_cache/"], None).unwrap_err();
        assert!(
            err.contains("accel-redirect") && err.contains("cache-dir"),
            "{err}"
        );
        for bad in [
            "_larder/",
            "/_larder",
            "/a b/",
            "/../",
            "/x\r\nSet-Cookie:/",
            "/é/",
            "/",
            "//",
            "/a//b/",
            "//_larder_cache/",
            "/./",
            "/a/./",
            "/a/../b/",
            "/%2e%2e/",
            "/_larder_cache/\t/",
            "/_larder_cache\0/",
            "",
            " /_larder_cache/",
            "/_larder_cache/ ",
            "/_larder_cache/\n",
            &format!("/{}/", "a".repeat(199)),
        ] {
            let err =
                settings(&["--cache-dir", "/tmp/c", "--accel-redirect", bad], None).unwrap_err();
            assert!(err.contains("accel-redirect"), "{bad}: {err}");
        }
        let c = settings(
            &[
                "--cache-dir",
                "/tmp/c",
                "--accel-redirect",
                "/_larder_cache/",
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.accel_redirect.as_deref(), Some("/_larder_cache/"));
        for good in ["/a/", "/_larder-cache.v2/file.d/", "/..a/", "/a../"] {
            assert!(super::plain_uri_prefix(good), "{good}");
        }
        // The same check from a config file, with the file named.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(
            &file,
            "cache-dir = \"/tmp/c\"\naccel-redirect = \"/_larder_cache//\"\n",
        )
        .unwrap();
        let err = settings(&[], Some(&file)).unwrap_err();
        assert!(err.contains("accel-redirect"), "{err}");
        assert_eq!(settings(&[], None).unwrap().accel_redirect, None);
    }

    #[test]
    fn absurd_numbers_are_refused_with_the_range_from_flags_env_and_file() {
        let err = settings(&["--workers", "3000000000"], None).unwrap_err();
        assert!(
            err.contains("--workers") && err.contains("0..=1024"),
            "{err}"
        );
        let err = settings(&["--request-timeout-secs", "0"], None).unwrap_err();
        assert!(err.contains("1..=3600"), "{err}");
        let err = settings(&["--signer-timeout-ms", "0"], None).unwrap_err();
        assert!(err.contains("signer-timeout-ms"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, "max-connections = 99999999999\n").unwrap();
        let err = settings(&[], Some(&file)).unwrap_err();
        assert!(err.contains("max-connections"), "{err}");
    }
}
