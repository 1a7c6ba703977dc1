//! What the store DB knows about one valid path, and its rendering as
//! `nix path-info --json` prints it.

use serde::Serialize;

use crate::fingerprint::fingerprint;
use crate::hash::Sha256Hash;
use crate::path::StorePath;

/// One row of `ValidPaths` with its references, parsed and checked: what
/// Nix's `ValidPathInfo` (`src/libstore/path-info.hh`) holds for a path of
/// a local store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The row id in `ValidPaths`; grows with every registration.
    pub id: i64,
    /// The valid path itself.
    pub path: StorePath,
    /// SHA-256 of its NAR serialisation (the DB's `hash`, `sha256:<base16>`).
    pub nar_hash: Sha256Hash,
    /// Length of its NAR serialisation, in bytes.
    pub nar_size: u64,
    /// Sorted by basename, as Nix sorts them (and as narinfo lists them).
    pub references: Vec<StorePath>,
    /// The derivation that built it, when known (`.drv` path).
    pub deriver: Option<StorePath>,
    /// Sorted and without duplicates, as Nix keeps them (a set).
    pub sigs: Vec<String>,
    /// The content-address assertion (`fixed:r:sha256:…`, `text:sha256:…`).
    pub ca: Option<String>,
    /// When it was registered, in seconds since the epoch.
    pub registration_time: i64,
    /// Built locally rather than substituted.
    pub ultimate: bool,
}

/// A [`PathInfo`] shaped like one element of `nix path-info --json` (Nix
/// 2.8): same keys, same order, same omissions. Serialize it with serde.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NixPathInfoJson {
    /// The full store path.
    pub path: String,
    /// SRI: `sha256-<base64>`.
    pub nar_hash: String,
    /// NAR length, in bytes.
    pub nar_size: u64,
    /// Full paths, sorted.
    pub references: Vec<String>,
    /// The content-address assertion; left out when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The deriver's full path; left out when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deriver: Option<String>,
    /// Seconds since the epoch; Nix leaves it out when it is 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub registration_time: i64,
    /// Built locally; left out when false.
    #[serde(skip_serializing_if = "is_false")]
    pub ultimate: bool,
    /// `name:base64` signatures, as the key `signatures`; left out when none.
    #[serde(rename = "signatures", skip_serializing_if = "Vec::is_empty")]
    pub sigs: Vec<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl PathInfo {
    /// The text a signature of this path covers, with paths under
    /// `store_dir` (the logical store dir, e.g. `/nix/store`); see
    /// [`crate::fingerprint`]. Mirrors `ValidPathInfo::fingerprint`
    /// (`src/libstore/path-info.cc`).
    pub fn fingerprint(&self, store_dir: &str) -> String {
        fingerprint(
            store_dir,
            &self.path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// The `nix path-info --json` shape, with paths under `store_dir`
    /// (the logical store dir, e.g. `/nix/store`).
    pub fn nix_json(&self, store_dir: &str) -> NixPathInfoJson {
        let full = |p: &StorePath| format!("{store_dir}/{p}");
        NixPathInfoJson {
            path: full(&self.path),
            nar_hash: self.nar_hash.to_sri(),
            nar_size: self.nar_size,
            references: self.references.iter().map(full).collect(),
            ca: self.ca.clone(),
            deriver: self.deriver.as_ref().map(full),
            registration_time: self.registration_time,
            ultimate: self.ultimate,
            sigs: self.sigs.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PathInfo {
        PathInfo {
            id: 8,
            path: "l5qk8w4kgzhgypdzszbqk4jv4mlky3k6-fod".parse().unwrap(),
            nar_hash: "sha256:5c6ec7cfcc015a03fb9850a7f5082677cf6aaa09ab43189c258ac5c54f688150"
                .parse()
                .unwrap(),
            nar_size: 120,
            references: vec![],
            deriver: Some("3wsjswm0wgbzcxbspk08cb6i1ni82dif-fod.drv".parse().unwrap()),
            sigs: vec!["test-1:c2ln".into(), "test-2:c2ln".into()],
            ca: Some("fixed:sha256:0qzcqxf0ggq1xqnc5qi44as7hjrwzld47lb3i47gd7si5lkjzjwn".into()),
            registration_time: 1795630174,
            ultimate: true,
        }
    }

    #[test]
    fn json_has_nix_key_order_and_omissions() {
        // Key order as `nix path-info --json` (2.8) printed it for this path.
        let json = serde_json::to_string(&info().nix_json("/nix/store")).unwrap();
        assert_eq!(
            json,
            r#"{"path":"/nix/store/l5qk8w4kgzhgypdzszbqk4jv4mlky3k6-fod","narHash":"sha256-XG7Hz8wBWgP7mFCn9Qgmd89qqgmrQxicJYrFxU9ogVA=","narSize":120,"references":[],"ca":"fixed:sha256:0qzcqxf0ggq1xqnc5qi44as7hjrwzld47lb3i47gd7si5lkjzjwn","deriver":"/nix/store/3wsjswm0wgbzcxbspk08cb6i1ni82dif-fod.drv","registrationTime":1795630174,"ultimate":true,"signatures":["test-1:c2ln","test-2:c2ln"]}"#
        );
        let bare = PathInfo {
            deriver: None,
            sigs: vec![],
            ca: None,
            registration_time: 0,
            ultimate: false,
            ..info()
        };
        let json = serde_json::to_value(bare.nix_json("/nix/store")).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["narHash", "narSize", "path", "references"]);
    }
}
