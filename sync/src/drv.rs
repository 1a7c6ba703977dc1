//! The output paths of a `.drv` file, for `post-build-hook` under Nix
//! 2.8.0, which runs the hook with `DRV_PATH` set but `OUT_PATHS` empty
//! (NixOS/nix#6446). A derivation's ATerm starts with its outputs:
//! `Derive([("out","/nix/store/…-name","",""),…],…)`.

use std::path::Path;

use larder_store::StoreLocation;

use crate::error::{Result, SyncError};
use crate::uri::store_path_arg;

/// Output paths listed in a derivation's text (empty paths, i.e. content
/// addressed outputs not known before the build, are left out).
pub fn outputs(text: &str) -> Option<Vec<String>> {
    let mut rest = text.strip_prefix("Derive([")?;
    let mut paths = Vec::new();
    while let Some(tuple) = rest.strip_prefix("(\"") {
        let (_name, after) = tuple.split_once("\",\"")?;
        let (path, after) = after.split_once('"')?;
        if !path.is_empty() {
            paths.push(path.to_owned());
        }
        let (_, after) = after.split_once(')')?;
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    rest.starts_with(']').then_some(paths)
}

/// The outputs of the derivation `drv_path` (a store path) in the store at `location`.
pub fn outputs_of(location: &StoreLocation, drv_path: &str) -> Result<Vec<String>> {
    let logical = store_path_arg(location, drv_path)?;
    let parsed = location
        .parse_path(&logical)
        .map_err(|source| SyncError::BadPath {
            arg: drv_path.to_owned(),
            store_dir: location.store_dir().to_owned(),
            source,
        })?;
    let real = location.real_path(&parsed);
    let text = std::fs::read_to_string(&real).map_err(|e| unreadable(&real, &e.to_string()))?;
    outputs(&text).ok_or_else(|| unreadable(&real, "not a derivation (no Derive([…]) outputs)"))
}

fn unreadable(path: &Path, detail: &str) -> SyncError {
    SyncError::Usage(format!(
        "cannot read the outputs of {}: {detail}",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::outputs;

    #[test]
    fn lists_the_outputs() {
        let drv = r#"Derive([("dev","/nix/store/aaa-x-dev","",""),("out","/nix/store/bbb-x","","")],[],[],"x86_64-linux","/bin/sh",[],[])"#;
        assert_eq!(
            outputs(drv).unwrap(),
            ["/nix/store/aaa-x-dev", "/nix/store/bbb-x"]
        );
        let ca = r#"Derive([("out","","r:sha256","")],[],[])"#;
        assert_eq!(outputs(ca).unwrap(), Vec::<String>::new());
        assert_eq!(outputs("garbage"), None);
        assert_eq!(outputs(r#"Derive([("out","/nix/store/x"#), None);
    }
}
