//! `larder-sync daemon --builders FILE`: pull each configured builder at its
//! interval. The whole file is checked at startup (URIs, keys, names); a
//! failing pull is logged and retried at the next interval.
//!
//! ```toml
//! gc_root_dir = "/nix/var/nix/gcroots/larder"
//! store_root = "/"               # optional: a chroot store's root
//!
//! [[builder]]
//! name = "builder1"              # optional: default is the URI's host
//! uri = "ssh-ng://builder1"
//! interval_secs = 300
//! trusted_keys = ["builder1:base64…"]
//! no_check_sigs = false
//! roots = ["/nix/var/nix/profiles/system"]
//! paths = []
//! keep_last = 5
//! max_age_secs = 2592000
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::error::{Result, SyncError};
use crate::gcroots::Retention;
use crate::nix::{LocalStore, SigCheck};
use crate::pull::{PullRequest, pull};
use crate::uri::{StoreUri, parse_keys, sanitize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    gc_root_dir: PathBuf,
    #[serde(default = "default_root")]
    store_root: PathBuf,
    #[serde(default)]
    builder: Vec<BuilderConfig>,
}

fn default_root() -> PathBuf {
    PathBuf::from("/")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuilderConfig {
    name: Option<String>,
    uri: String,
    interval_secs: u64,
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    no_check_sigs: bool,
    #[serde(default)]
    roots: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    keep_last: Option<usize>,
    max_age_secs: Option<u64>,
}

/// A checked configuration: one pull per builder and its interval.
#[derive(Debug)]
pub struct DaemonConfig {
    pub local: LocalStore,
    pub builders: Vec<(PullRequest, Duration)>,
}

impl DaemonConfig {
    pub fn load(path: &Path) -> Result<DaemonConfig> {
        let config_err = |detail: String| SyncError::Config {
            kind: "builders file",
            path: path.to_owned(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| config_err(e.to_string()))?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| config_err(e.to_string()))?;
        if file.builder.is_empty() {
            return Err(config_err(
                "no [[builder]] sections: nothing to pull".into(),
            ));
        }
        let builders: Vec<(PullRequest, Duration)> = file
            .builder
            .into_iter()
            .map(|b| request(&file.gc_root_dir, b).map_err(|e| config_err(e.to_string())))
            .collect::<Result<_>>()?;
        for (i, (a, _)) in builders.iter().enumerate() {
            if let Some((b, _)) = builders[..i].iter().find(|(b, _)| b.builder == a.builder) {
                return Err(config_err(format!(
                    "[[builder]] entries #{} ({}) and #{} ({}) both root under {:?} (names are derived from \
                     the URI's host when not given) and would delete each other's roots; give \
                     each a distinct `name`",
                    builders[..i]
                        .iter()
                        .position(|(x, _)| x.builder == b.builder)
                        .unwrap_or(0)
                        + 1,
                    b.source,
                    i + 1,
                    a.source,
                    a.builder
                )));
            }
        }
        Ok(DaemonConfig {
            local: LocalStore::new(file.store_root),
            builders,
        })
    }
}

fn request(gc_root_dir: &Path, b: BuilderConfig) -> Result<(PullRequest, Duration)> {
    let source: StoreUri = b.uri.parse()?;
    let sigs = if b.no_check_sigs {
        SigCheck::Skip
    } else {
        parse_keys(&b.trusted_keys)?;
        SigCheck::Require(b.trusted_keys)
    };
    if b.interval_secs == 0 {
        return Err(SyncError::Usage(format!(
            "builder {}: interval_secs must be at least 1",
            b.uri
        )));
    }
    if b.roots.is_empty() && b.paths.is_empty() {
        return Err(SyncError::Usage(format!(
            "builder {}: give roots or paths to pull",
            b.uri
        )));
    }
    let builder = b
        .name
        .as_deref()
        .map_or_else(|| source.builder_name(), sanitize);
    let req = PullRequest {
        sigs,
        gc_root_dir: gc_root_dir.to_owned(),
        name: builder.clone(),
        builder,
        paths: b.paths,
        roots: b.roots,
        retention: Retention {
            keep_last: b.keep_last,
            max_age: b.max_age_secs.map(Duration::from_secs),
        },
        source,
        reuse_unchanged: true,
    };
    Ok((req, Duration::from_secs(b.interval_secs)))
}

/// Pull every builder now, then each again after its interval, forever.
pub fn run(config: &DaemonConfig) -> ! {
    let mut next: Vec<Instant> = vec![Instant::now(); config.builders.len()];
    loop {
        let now = Instant::now();
        for (i, (req, interval)) in config.builders.iter().enumerate() {
            if next[i] > now {
                continue;
            }
            let mut req = req.clone();
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            req.name = format!("{}-{stamp}", req.name);
            match pull(&config.local, &req) {
                Ok(report) => {
                    tracing::info!(builder = %req.builder, paths = report.paths.len(), removed = report.removed.len(), "pulled")
                }
                Err(e) => {
                    tracing::error!(builder = %req.builder, "pull failed, retrying in {}s: {e}", interval.as_secs())
                }
            }
            next[i] = Instant::now() + *interval;
        }
        let wake = next.iter().min().copied().unwrap_or(now);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
}
