//! The `[[view]]` tables of the server's `--config` file: what each view
//! declares, read with unknown keys refused (naming the file, the view and
//! the key), and the checks that need no filesystem ([`check_views`]).
//!
//! ```toml
//! [[view]]
//! name = "team"              # letters, digits, `.`, `_`, `-`
//! prefix = "team"            # served at /team/…; optional
//! host = "team.cache.example"  # or selected by Host; optional
//! gc-root-dirs = ["/nix/var/nix/gcroots/larder"]
//! roots = ["/nix/var/nix/profiles/system"]  # symlinks or store paths
//! roots-file = "/etc/larder/team.roots"      # one absolute store path a line
//! # everything = true       # instead of roots: the whole store
//! include-drvs = false       # defaults: false with roots, true for everything
//! include-logs = false
//! serve = false
//! priority = 40              # default: the server's `priority`
//! keys = ["team-1"]          # signer key names; default: every key
//! tokens-file = "/run/keys/larder-team.tokens"  # makes the view private
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One `[[view]]` table as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ViewConfig {
    /// The view's name: metrics label, log field, realm.
    pub name: String,
    /// First URL path segment selecting the view (`/prefix/…`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `Host` header value selecting the view (port ignored).
    #[serde(default)]
    pub host: Option<String>,
    /// Serve the whole store (the plain server's behaviour).
    #[serde(default)]
    pub everything: bool,
    /// Roots: symlinks (profiles, `result` links, GC roots) or store paths.
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// A file listing one store path (or symlink to one) per line.
    #[serde(default)]
    pub roots_file: Option<PathBuf>,
    /// Directories searched recursively for symlinks into the store, as
    /// Nix's GC searches `gcroots/`.
    #[serde(default)]
    pub gc_root_dirs: Vec<PathBuf>,
    /// Serve `.drv` files (default: only for `everything`).
    #[serde(default)]
    pub include_drvs: Option<bool>,
    /// Serve build logs of the view's paths (default: only for `everything`).
    #[serde(default)]
    pub include_logs: Option<bool>,
    /// Serve files inside store paths at `/serve` (default: only for
    /// `everything`).
    #[serde(default)]
    pub serve: Option<bool>,
    /// `Priority` in nix-cache-info (default: the server's `priority`).
    #[serde(default)]
    pub priority: Option<u32>,
    /// Names of the signer keys that sign this view's narinfo (default:
    /// every key the signer holds).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Read tokens (`NAME TOKEN` a line); set = the view is private.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
}

impl ViewConfig {
    /// Whether the view has roots (not `everything`).
    pub fn rooted(&self) -> bool {
        !self.everything
    }
}

/// URL segments a prefix may not take: they are the routes themselves.
const RESERVED: &[&str] = &[
    "nar",
    "log",
    "serve",
    "health",
    "version",
    "metrics",
    "nix-cache-info",
    "nix.conf",
];

/// The `[[view]]` tables of the TOML file `path`, or none. Errors name the
/// file, the view and the key.
pub fn read_views(path: &Path) -> Result<Vec<ViewConfig>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config file {}: cannot read it: {e}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
    let Some(value) = table.remove("view") else {
        return Ok(Vec::new());
    };
    let toml::Value::Array(items) = value else {
        return Err(format!(
            "config file {}: `view` must be an array of tables: write each view as [[view]]",
            path.display()
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            item.try_into::<ViewConfig>().map_err(|e| {
                format!(
                    "config file {}: [[view]] number {}: {}",
                    path.display(),
                    i + 1,
                    e.message()
                )
            })
        })
        .collect()
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Checks that need no filesystem: names and prefixes well-formed and
/// unique, one way of choosing roots, key names well-formed, at most one
/// view per (host, prefix).
pub fn check_views(views: &[ViewConfig]) -> Result<(), String> {
    for (i, v) in views.iter().enumerate() {
        let at = format!("[[view]] {:?}", v.name);
        if !valid_segment(&v.name) {
            return Err(format!(
                "[[view]] number {}: name {:?} must be 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.`",
                i + 1,
                v.name
            ));
        }
        if views[..i].iter().any(|o| o.name == v.name) {
            return Err(format!("{at}: the name is used by two views"));
        }
        if let Some(p) = &v.prefix {
            if !valid_segment(p) || RESERVED.contains(&p.as_str()) {
                return Err(format!(
                    "{at}: prefix {p:?} must be one path segment of letters, digits, `.`, `_` or `-` (not starting with `.`), and not one of {RESERVED:?}"
                ));
            }
        }
        if let Some(h) = &v.host {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b));
            if !ok {
                return Err(format!(
                    "{at}: host {h:?} must be a DNS name (letters, digits, `.`, `-`), without a port"
                ));
            }
        }
        let host = v.host.as_deref().map(str::to_ascii_lowercase);
        if let Some(o) = views[..i].iter().find(|o| {
            o.prefix == v.prefix && o.host.as_deref().map(str::to_ascii_lowercase) == host
        }) {
            return Err(format!(
                "{at}: view {:?} has the same prefix and host; give each view its own",
                o.name
            ));
        }
        let has_roots = !v.roots.is_empty() || v.roots_file.is_some() || !v.gc_root_dirs.is_empty();
        match (v.everything, has_roots) {
            (true, true) => {
                return Err(format!(
                    "{at}: `everything = true` and roots exclude each other; drop one"
                ));
            }
            (false, false) => {
                return Err(format!(
                    "{at}: no roots: set gc-root-dirs, roots or roots-file (or everything = true for the whole store)"
                ));
            }
            _ => {}
        }
        for dir in v.gc_root_dirs.iter().chain(&v.roots) {
            if !dir.is_absolute() {
                return Err(format!("{at}: {} is not an absolute path", dir.display()));
            }
        }
        if let Some(k) = v.keys.iter().find(|k| k.is_empty() || k.contains(':')) {
            return Err(format!(
                "{at}: key name {k:?}: use the part of the key before the `:`"
            ));
        }
    }
    Ok(())
}

/// Checks against the filesystem, for `--check-config` and startup: root
/// directories exist and the roots file is a readable regular file.
pub fn check_paths(view: &ViewConfig) -> Result<(), String> {
    let at = format!("[[view]] {:?}", view.name);
    for dir in &view.gc_root_dirs {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{at}: gc-root-dirs {}: not a directory",
                    dir.display()
                ));
            }
            Err(e) => return Err(format!("{at}: gc-root-dirs {}: {e}", dir.display())),
        }
    }
    if let Some(file) = &view.roots_file {
        super::roots::read_roots_file(file)
            .map_err(|e| format!("{at}: roots-file {}: {e}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(text: &str) -> Result<Vec<ViewConfig>, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("server.toml");
        std::fs::write(&file, text).unwrap();
        let v = read_views(&file)?;
        check_views(&v)?;
        Ok(v)
    }

    #[test]
    fn views_parse_and_unknown_keys_are_named() {
        let v = views(
            "priority = 3\n[[view]]\nname = \"a\"\nprefix = \"a\"\nroots = [\"/nix/store/x\"]\n[[view]]\nname = \"b\"\neverything = true\nkeys = [\"k1\"]\n",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].keys, ["k1"]);
        let err = views("[[view]]\nname = \"a\"\nrots = []\n").unwrap_err();
        assert!(err.contains("rots") && err.contains("server.toml"), "{err}");
    }

    #[test]
    fn bad_views_are_refused() {
        for (text, needle) in [
            (
                "[[view]]\nname = \"a\"\neverything = true\n[[view]]\nname = \"a\"\nprefix = \"b\"\neverything = true\n",
                "two views",
            ),
            (
                "[[view]]\nname = \"a\"\nprefix = \"x\"\neverything = true\n[[view]]\nname = \"b\"\nprefix = \"x\"\neverything = true\n",
                "same prefix",
            ),
            (
                "[[view]]\nname = \"a\"\nprefix = \"..\"\neverything = true\n",
                "prefix",
            ),
            (
                "[[view]]\nname = \"a\"\nprefix = \"a/b\"\neverything = true\n",
                "prefix",
            ),
            (
                "[[view]]\nname = \"a\"\nprefix = \"nar\"\neverything = true\n",
                "prefix",
            ),
            ("[[view]]\nname = \"a\"\n", "no roots"),
            ("[[view]]\nname = \"a b\"\neverything = true\n", "name"),
            (
                "[[view]]\nname = \"a\"\neverything = true\nkeys = [\"k:abc\"]\n",
                "key name",
            ),
            ("[[view]]\nname = \"a\"\nroots = [\"rel\"]\n", "absolute"),
            ("view = 3\n", "[[view]]"),
        ] {
            let err = views(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
