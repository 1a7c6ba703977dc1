//! Configuration: one typed struct, three sources.
//!
//! [`Settings`] is what the user said, every field optional, read from flags
//! (clap), environment variables (`LARDER_*`, named in `--help`) and a TOML
//! file (`--config`, same keys as the long flags, unknown keys refused).
//! Flags and environment win over the file. [`Settings::resolve`] fills in
//! the defaults, which live in [`Config::default`] and nowhere else, and
//! checks every value, naming the setting and the fix when one is wrong.
//! `server/larder-server.example.toml` lists every key with its default
//! (a test keeps it true).

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path}: cannot read it: {source}; check --config / LARDER_CONFIG")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("setting {setting} = {value:?}: {fix}")]
    Invalid {
        setting: &'static str,
        value: String,
        fix: &'static str,
    },
}

/// How narinfo files advertise NARs (independent of HTTP `Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// What the user said. Flags override environment variables, which override
/// the `--config` file.
#[derive(Debug, Default, Parser, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(
    name = "larder-server",
    version,
    about = "Serve a Nix store as a binary cache"
)]
pub struct Settings {
    /// TOML file whose keys are the long flags below (`store-root = "/"`); unknown keys are refused.
    #[arg(long, env = "LARDER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Check the settings and open the store DB, then exit: 0 if the server would start. Run as root (systemd's ExecStartPre=+), it also creates the DB's WAL index that an unprivileged server needs.
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,
    /// Where to listen: ADDRESS:PORT, unix:/path, or `systemd` (socket activation). [default: 127.0.0.1:5000]
    #[arg(long, env = "LARDER_BIND")]
    pub bind: Option<String>,
    /// Directory under which the store really is (`/` for the host store, or a chroot store's root). [default: /]
    #[arg(long, env = "LARDER_STORE_ROOT")]
    pub store_root: Option<PathBuf>,
    /// The store dir clients see; must equal theirs. [default: /nix/store]
    #[arg(long, env = "LARDER_STORE_DIR")]
    pub store_dir: Option<String>,
    /// Priority announced in /nix-cache-info (lower is preferred; cache.nixos.org is 40). [default: 30]
    #[arg(long, env = "LARDER_PRIORITY")]
    pub priority: Option<u32>,
    /// narinfo-level compression: `zstd` gives old clients (Nix < 2.14) compressed NARs. [default: none]
    #[arg(long, env = "LARDER_COMPRESSION")]
    pub compression: Option<Compression>,
    /// zstd level for both kinds of compression, 1 (fastest) to 19. [default: 1]
    #[arg(long, env = "LARDER_ZSTD_LEVEL")]
    pub zstd_level: Option<i32>,
    /// zstd worker threads for one large NAR; 0 = one per core. [default: 0]
    #[arg(long, env = "LARDER_ZSTD_THREADS")]
    pub zstd_threads: Option<u32>,
    /// HTTP worker threads; 0 = one per core. [default: 0]
    #[arg(long, env = "LARDER_WORKERS")]
    pub workers: Option<usize>,
    /// Maximum concurrent connections per worker. [default: 25000]
    #[arg(long, env = "LARDER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds an idle keep-alive connection stays open. [default: 75]
    #[arg(long, env = "LARDER_KEEP_ALIVE_SECS")]
    pub keep_alive_secs: Option<u64>,
    /// Seconds a client has to send its request headers. [default: 10]
    #[arg(long, env = "LARDER_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Seconds running downloads get to finish on shutdown. [default: 30]
    #[arg(long, env = "LARDER_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Directory of the compressed-NAR cache (zstd NARs kept for the next download); none if unset.
    #[arg(long, env = "LARDER_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size limit of the compressed-NAR cache in MiB; least recently used files go first. [default: 10240]
    #[arg(long, env = "LARDER_CACHE_SIZE_MIB")]
    pub cache_size_mib: Option<u64>,
    /// Milliseconds a narinfo lookup (hit or miss) is remembered; 0 = always ask the DB. [default: 1000]
    #[arg(long, env = "LARDER_PATH_INFO_TTL_MS")]
    pub path_info_ttl_ms: Option<u64>,
    /// TLS certificate chain (PEM); serve HTTPS with --tls-key.
    #[arg(long, env = "LARDER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM, not readable by other users).
    #[arg(long, env = "LARDER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Unix socket of larder-signer; narinfo then carries its signatures too. None if unset.
    #[arg(long, env = "LARDER_SIGNER_SOCKET")]
    pub signer_socket: Option<PathBuf>,
    /// Milliseconds to wait for larder-signer before treating it as down. [default: 2000]
    #[arg(long, env = "LARDER_SIGNER_TIMEOUT_MS")]
    pub signer_timeout_ms: Option<u64>,
    /// While the signer is down: `unavailable` answers narinfo with 503 and Retry-After; `unsigned` serves without its signature. [default: unavailable]
    #[arg(long, env = "LARDER_SIGNER_DOWN")]
    pub signer_down: Option<SignerDown>,
    /// Retry-After seconds sent with a 503 while the signer is down. [default: 5]
    #[arg(long, env = "LARDER_SIGNER_RETRY_AFTER_SECS")]
    pub signer_retry_after_secs: Option<u64>,
    /// Signatures remembered per fingerprint (least recently used go first). [default: 100000]
    #[arg(long, env = "LARDER_SIGNATURE_CACHE_ENTRIES")]
    pub signature_cache_entries: Option<usize>,
    /// Log filter (tracing-subscriber EnvFilter syntax). [default: info]
    #[arg(long, env = "LARDER_LOG")]
    pub log: Option<String>,
}

/// The resolved configuration, every value checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: Bind,
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
    pub cache_dir: Option<PathBuf>,
    pub cache_size_mib: u64,
    pub path_info_ttl_ms: u64,
    /// Certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub signer: Option<SignerConfig>,
    pub log: String,
}

/// What to do with narinfo requests while larder-signer cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignerDown {
    /// 503 with Retry-After: clients retry, then use their next substituter.
    Unavailable,
    /// Serve the narinfo with only the store's own signatures.
    Unsigned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerConfig {
    pub socket: PathBuf,
    pub timeout_ms: u64,
    pub when_down: SignerDown,
    pub retry_after_secs: u64,
    pub cache_entries: std::num::NonZeroUsize,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Config {
            bind: Bind::Tcp("127.0.0.1:5000".to_owned()),
            store_root: PathBuf::from("/"),
            store_dir: larder_store::StoreLocation::DEFAULT_STORE_DIR.to_owned(),
            priority: 30,
            compression: Compression::None,
            zstd_level: 1,
            zstd_threads: cores as u32,
            workers: cores,
            max_connections: 25_000,
            keep_alive_secs: 75,
            request_timeout_secs: 10,
            shutdown_timeout_secs: 30,
            cache_dir: None,
            cache_size_mib: 10_240,
            path_info_ttl_ms: 1000,
            tls: None,
            signer: None,
            log: "info".to_owned(),
        }
    }
}

impl Settings {
    /// Read `--config` (if any) underneath these settings.
    pub fn with_file(self) -> Result<Settings, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: Settings = Settings::from_toml(&text, &path)?;
        self.over(file)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// `self`'s values where set, `lower`'s elsewhere.
    fn over(self, lower: Settings) -> Result<Settings, ConfigError> {
        // Both sides serialise to TOML tables with unset fields left out, so
        // one table extend layers every field without listing them again.
        let table = |s: &Settings| match toml::Value::try_from(s) {
            Ok(toml::Value::Table(t)) => Ok(t),
            _ => Err(invalid(
                "(a path)",
                "non-UTF-8",
                "use UTF-8 paths in settings",
            )),
        };
        let mut merged = table(&lower)?;
        merged.extend(table(&self)?);
        let mut out: Settings = toml::Value::Table(merged)
            .try_into()
            .map_err(|_| invalid("(merged settings)", "", "report this as a bug"))?;
        out.config = self.config;
        out.check_config = self.check_config;
        Ok(out)
    }

    pub fn resolve(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let zstd_level = self.zstd_level.unwrap_or(d.zstd_level);
        if !(1..=19).contains(&zstd_level) {
            return Err(invalid(
                "zstd-level",
                zstd_level,
                "use a level from 1 to 19",
            ));
        }
        let store_dir = self.store_dir.unwrap_or(d.store_dir);
        if !store_dir.starts_with('/') || store_dir.len() < 2 {
            return Err(invalid(
                "store-dir",
                &store_dir,
                "use an absolute path such as /nix/store",
            ));
        }
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
                timeout_ms: self.signer_timeout_ms.unwrap_or(2000).max(1),
                when_down: self.signer_down.unwrap_or(SignerDown::Unavailable),
                retry_after_secs: self.signer_retry_after_secs.unwrap_or(5),
                cache_entries: std::num::NonZeroUsize::new(
                    self.signature_cache_entries.unwrap_or(100_000),
                )
                .ok_or_else(|| invalid("signature-cache-entries", 0, "use at least 1"))?,
            }),
        };
        let or_cores = |n: usize| if n == 0 { d.workers } else { n };
        Ok(Config {
            bind: self
                .bind
                .as_deref()
                .map(Bind::parse)
                .transpose()?
                .unwrap_or(d.bind),
            store_root: self.store_root.unwrap_or(d.store_root),
            store_dir: store_dir.trim_end_matches('/').to_owned(),
            priority: self.priority.unwrap_or(d.priority),
            compression: self.compression.unwrap_or(d.compression),
            zstd_level,
            zstd_threads: or_cores(self.zstd_threads.unwrap_or(0) as usize) as u32,
            workers: or_cores(self.workers.unwrap_or(0)),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            keep_alive_secs: self.keep_alive_secs.unwrap_or(d.keep_alive_secs),
            request_timeout_secs: self.request_timeout_secs.unwrap_or(d.request_timeout_secs),
            shutdown_timeout_secs: self
                .shutdown_timeout_secs
                .unwrap_or(d.shutdown_timeout_secs),
            cache_dir: self.cache_dir,
            cache_size_mib: self.cache_size_mib.unwrap_or(d.cache_size_mib),
            path_info_ttl_ms: self.path_info_ttl_ms.unwrap_or(d.path_info_ttl_ms),
            tls,
            signer,
            log: self.log.unwrap_or(d.log),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        Settings::try_parse_from(std::iter::once("larder-server").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Settings::default().resolve().unwrap();
        assert_eq!(c.bind, Bind::Tcp("127.0.0.1:5000".into()));
        assert_eq!(c.store_root, PathBuf::from("/"));
        assert_eq!(c.store_dir, "/nix/store");
        assert_eq!(c.priority, 30);
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.zstd_level, 1);
    }

    #[test]
    fn the_example_file_states_the_defaults() {
        let text = include_str!("../larder-server.example.toml");
        let file = Settings::from_toml(text, Path::new("example")).unwrap();
        let (example, defaults) = (file.resolve().unwrap(), Config::default());
        assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = Settings::from_toml(
            "priority = 50\ncompression = \"zstd\"\nbind = \"unix:/run/larder.sock\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let c = settings(&["--priority", "10"])
            .over(file)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(c.priority, 10);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.bind, Bind::Unix("/run/larder.sock".into()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Settings::from_toml("priorty = 3\n", Path::new("/etc/larder.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/etc/larder.toml") && msg.contains("priorty"),
            "{msg}"
        );
        let err = settings(&["--bind", "localhost"]).resolve().unwrap_err();
        assert!(err.to_string().contains("setting bind"), "{err}");
        let err = settings(&["--zstd-level", "40"]).resolve().unwrap_err();
        assert!(err.to_string().contains("zstd-level"), "{err}");
        let err = settings(&[
            "--signer-socket",
            "/run/s",
            "--signature-cache-entries",
            "0",
        ])
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("signature-cache-entries"), "{err}");
    }
}
