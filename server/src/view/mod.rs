//! Views: what one server shows of the store, and to whom.
//!
//! A [`View`] is either the whole store (`everything`, what a plain
//! `larder-server` without `[[view]]` tables serves) or the closure of a
//! set of roots ([`members`], kept current from the roots on disk,
//! [`roots`]). Anything outside a view is answered exactly as an absent
//! path: [`View::admits_hash`] is asked before the DB (so both cost the
//! same), [`View::admits`] after it (a `.drv` in a view without drvs).
//! Several views share one server ([`Views`]), chosen by the first URL path
//! segment (`/team/…`) and/or the `Host` header ([`Views::select`]; the
//! middleware in `placement.rs` does it, and checks a private view's
//! tokens, [`tokens`], before any route runs). Their configuration is the `[[view]]` tables of the `--config`
//! file ([`config`]).

pub mod config;
pub mod members;
pub mod roots;
pub mod tokens;

use std::sync::Arc;

use larder_store::db::StoreDb;
use larder_store::{StoreLocation, StorePath, StorePathHash};

use self::config::ViewConfig;
use self::members::{Members, is_drv};
use self::roots::RootSpec;
use self::tokens::Tokens;

/// One view, ready to answer.
#[derive(Clone)]
pub struct View {
    pub name: String,
    /// Selected by `/<prefix>/…`.
    pub prefix: Option<String>,
    /// Selected by this `Host` (lower case, no port).
    pub host: Option<String>,
    pub priority: u32,
    /// Signer key names; `None`: every key the signer holds.
    pub keys: Option<Vec<String>>,
    pub include_drvs: bool,
    pub include_logs: bool,
    pub serve: bool,
    /// `Some`: private, a request must carry one of these tokens.
    pub tokens: Option<Tokens>,
    /// `None`: the whole store.
    pub members: Option<Arc<Members>>,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("host", &self.host)
            .field("private", &self.tokens.is_some())
            .finish_non_exhaustive()
    }
}

impl View {
    /// The implicit view of a server without `[[view]]` tables: the whole
    /// store, drvs, logs and `/serve` included, public, every key.
    pub fn everything(priority: u32) -> View {
        View {
            name: "default".to_owned(),
            prefix: None,
            host: None,
            priority,
            keys: None,
            include_drvs: true,
            include_logs: true,
            serve: true,
            tokens: None,
            members: None,
        }
    }

    /// Build a configured view: load its tokens and compute its first
    /// closure (blocking); [`Members::watch`] keeps it current.
    pub fn from_config(
        c: &ViewConfig,
        default_priority: u32,
        location: &StoreLocation,
        db: &StoreDb,
    ) -> Result<View, String> {
        config::check_paths(c)?;
        let tokens = match &c.tokens_file {
            Some(f) => Some(Tokens::load(f).map_err(|e| format!("[[view]] {:?}: {e}", c.name))?),
            None => None,
        };
        let rooted = c.rooted();
        let include_drvs = c.include_drvs.unwrap_or(!rooted);
        let members = if rooted {
            let spec = RootSpec {
                location: location.clone(),
                roots: c.roots.clone(),
                roots_file: c.roots_file.clone(),
                gc_root_dirs: c.gc_root_dirs.clone(),
            };
            Some(Members::new(&c.name, spec, include_drvs, db)?)
        } else {
            None
        };
        let view = View {
            name: c.name.clone(),
            prefix: c.prefix.clone(),
            host: c.host.as_deref().map(str::to_ascii_lowercase),
            priority: c.priority.unwrap_or(default_priority),
            keys: (!c.keys.is_empty()).then(|| c.keys.clone()),
            include_drvs,
            include_logs: c.include_logs.unwrap_or(!rooted),
            serve: c.serve.unwrap_or(!rooted),
            tokens,
            members,
        };
        Ok(view)
    }

    /// Whether a path with this hash part may be in the view: asked before
    /// the DB, one `HashSet` lookup.
    pub fn admits_hash(&self, hash: &StorePathHash) -> bool {
        match &self.members {
            None => true,
            Some(m) => m.current().paths.contains(hash),
        }
    }

    /// Whether the view serves `path` (its hash is admitted, and it is not
    /// a `.drv` the view leaves out).
    pub fn admits(&self, path: &StorePath) -> bool {
        (self.include_drvs || !is_drv(path)) && self.admits_hash(path.hash())
    }

    /// Whether the view serves the build log of `drv`: logs are on, and
    /// `drv` is in the view or the deriver of a path in it.
    pub fn admits_log(&self, drv: &StorePath) -> bool {
        if !self.include_logs {
            return false;
        }
        match &self.members {
            None => true,
            Some(m) => {
                let c = m.current();
                c.paths.contains(drv.hash()) || c.derivers.contains(drv.hash())
            }
        }
    }

    /// The number of paths the view holds now; `None` for everything.
    pub fn size(&self) -> Option<usize> {
        self.members.as_ref().map(|m| m.current().paths.len())
    }

    /// The URL path under which the view is served: `""` or `/prefix`.
    pub fn base_path(&self) -> String {
        self.prefix
            .as_deref()
            .map(|p| format!("/{p}"))
            .unwrap_or_default()
    }
}

/// Every view of one server.
#[derive(Debug)]
pub struct Views {
    pub views: Vec<Arc<View>>,
}

impl Views {
    /// The view a request for raw `path` on `host` (lower case, no port)
    /// selects, and the path the routes should see when a prefix is
    /// stripped. The most specific match wins: prefix and host, then
    /// prefix, then host, then the view with neither.
    pub fn select(&self, host: Option<&str>, path: &str) -> Option<(Arc<View>, Option<String>)> {
        let segment = path.strip_prefix('/')?.split('/').next().unwrap_or("");
        let mut best: Option<(u8, &Arc<View>)> = None;
        for v in &self.views {
            if v.host.as_deref().is_some_and(|h| Some(h) != host) {
                continue;
            }
            if v.prefix.as_deref().is_some_and(|p| p != segment) {
                continue;
            }
            let score = 2 * u8::from(v.prefix.is_some()) + u8::from(v.host.is_some());
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, v));
            }
        }
        let (_, view) = best?;
        let rest = view.prefix.as_deref().map(|p| {
            let rest = &path[1 + p.len()..];
            if rest.is_empty() {
                "/".to_owned()
            } else {
                rest.to_owned()
            }
        });
        Some((view.clone(), rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(name: &str, prefix: Option<&str>, host: Option<&str>) -> Arc<View> {
        let mut v = View::everything(30);
        v.name = name.to_owned();
        v.prefix = prefix.map(str::to_owned);
        v.host = host.map(str::to_owned);
        Arc::new(v)
    }

    #[test]
    fn the_most_specific_view_wins_and_encoded_prefixes_do_not_match() {
        let views = Views {
            views: vec![
                view("root", None, None),
                view("a", Some("a"), None),
                view("h", None, Some("h.example")),
                view("ha", Some("a"), Some("h.example")),
            ],
        };
        let pick = |host: Option<&str>, path: &str| {
            views
                .select(host, path)
                .map(|(v, rest)| (v.name.clone(), rest))
        };
        assert_eq!(pick(None, "/x.narinfo"), Some(("root".into(), None)));
        assert_eq!(
            pick(None, "/a/x.narinfo"),
            Some(("a".into(), Some("/x.narinfo".into())))
        );
        assert_eq!(pick(None, "/a"), Some(("a".into(), Some("/".into()))));
        assert_eq!(pick(Some("h.example"), "/"), Some(("h".into(), None)));
        assert_eq!(
            pick(Some("h.example"), "/a/"),
            Some(("ha".into(), Some("/".into())))
        );
        for sneaky in ["/a%2fx.narinfo", "/A/x.narinfo", "/a..", "/%61/x"] {
            assert_eq!(pick(None, sneaky).unwrap().0, "root", "{sneaky}");
        }
        let only_prefixed = Views {
            views: vec![view("a", Some("a"), None)],
        };
        assert!(only_prefixed.select(None, "/b/x.narinfo").is_none());
        assert!(only_prefixed.select(None, "/").is_none());
    }

    fn views() -> impl Strategy<Value = Vec<Arc<View>>> {
        let prefix = prop::option::of(prop::sample::select(vec!["a", "ab", "pub", "A"]));
        let host = prop::option::of(prop::sample::select(vec!["h.example", "i.example"]));
        prop::collection::vec((prefix, host), 0..5).prop_map(|vs| {
            vs.into_iter()
                .enumerate()
                .map(|(i, (p, h))| view(&i.to_string(), p, h))
                .collect()
        })
    }

    proptest! {
        /// The view a request selects admits it (its prefix is exactly the
        /// first raw segment, its host the request's), no admitting view is
        /// more specific, and the path the routes see is what follows the
        /// prefix.
        #[test]
        fn the_router_picks_the_most_specific_admitting_view(
            views in views(),
            host in prop::option::of(prop::sample::select(vec!["h.example", "i.example", "H.example"])),
            path in "(/(a|ab|pub|A|%61|\\.\\.|%2e|%2f|a%2f|x\\.narinfo|)){0,4}",
        ) {
            let all = Views { views };
            let segment = path.strip_prefix('/').map(|p| p.split('/').next().unwrap_or(""));
            let admits = |v: &View| {
                v.host.as_deref().is_none_or(|h| Some(h) == host)
                    && v.prefix.as_deref().is_none_or(|p| Some(p) == segment)
            };
            let score = |v: &View| 2 * u8::from(v.prefix.is_some()) + u8::from(v.host.is_some());
            let best = all.views.iter().filter(|v| admits(v)).map(|v| score(v)).max();
            match all.select(host, &path) {
                None => prop_assert!(best.is_none() || segment.is_none()),
                Some((v, rest)) => {
                    prop_assert!(admits(&v));
                    prop_assert_eq!(Some(score(&v)), best);
                    match (&v.prefix, rest) {
                        (None, None) => {}
                        (Some(p), Some(rest)) => {
                            prop_assert!(rest.starts_with('/'));
                            let tail = &path[1 + p.len()..];
                            prop_assert!(rest == tail || (tail.is_empty() && rest == "/"));
                        }
                        (p, r) => prop_assert!(false, "prefix {:?} gave {:?}", p, r),
                    }
                }
            }
        }
    }
}
