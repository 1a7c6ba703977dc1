//! larder's store DB reader against `nix path-info --json` on a store the
//! real Nix filled with every kind of path it registers.

use std::collections::BTreeSet;
use std::path::Path;

use larder_store::StoreLocation;
use larder_store::db::{PathInfo, StoreDb};
use larder_tests::{TestStore, nix_command, run, run_stdout};
use serde_json::Value;

const STORE_DIR: &str = "/nix/store";

/// Derivations depending on each other through string context: `b` has two
/// outputs (`dev` refers to `out`), `c` refers to itself and to both, and
/// `fod` is fixed-output (so its output has a deriver *and* a `ca`).
const EXPR: &str = r#"
let
  mk = attrs: derivation ({
    system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
  } // attrs);
  a = mk { name = "a"; args = ["-c" "echo a > $out"]; };
  b = mk { name = "b"; outputs = ["out" "dev"]; args = ["-c" "echo ${a} > $out; echo $out > $dev"]; };
  c = mk { name = "c"; args = ["-c" "mkdir $out; echo ${b.dev} ${a} $out > $out/refs; ln -s ${b} $out/b"]; };
  fod = mk {
    name = "fod"; outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "96cb2f272d519ff60e8963d1431afd3c4b78b42224e2c22cee01bf075cc7ec63";
    args = ["-c" "echo fod > $out"];
  };
in [ c fod ]
"#;

fn generate_key(dir: &Path, name: &str) -> std::path::PathBuf {
    let secret = run_stdout(
        nix_command("nix")
            .args(["key", "generate-secret", "--key-name"])
            .arg(name),
    );
    let file = dir.join(format!("{name}.sec"));
    std::fs::write(&file, secret).unwrap();
    file
}

fn sign(store: &TestStore, key: &Path, extra: &[&str], path: &str) {
    run(store
        .nix("nix")
        .args(["store", "sign", "--key-file"])
        .arg(key)
        .args(extra)
        .arg(path));
}

/// Fill `store` with built, added, signed and copied paths.
fn populate(store: &TestStore, scratch: &Path) {
    let built = store.build_expr(EXPR);
    let c = &built[0];

    let dir = scratch.join("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/file"), "x").unwrap();
    std::os::unix::fs::symlink("sub/file", dir.join("link")).unwrap();
    std::fs::write(scratch.join("flat"), "flat\n").unwrap();
    store.add([&dir]);
    run(store
        .nix("nix-store")
        .args(["--add-fixed", "sha256"])
        .arg(scratch.join("flat")));

    let key1 = generate_key(scratch, "test-1");
    let key2 = generate_key(scratch, "test-2");
    sign(store, &key1, &["-r"], c);
    sign(store, &key2, &[], c);

    // Copied paths keep their deriver and signatures but are not ultimate.
    let other = TestStore::new();
    let copied = other.build_expr(&larder_tests::shell_derivation(
        "copied",
        "echo copied > $out",
    ));
    sign(&other, &key1, &[], &copied[0]);
    run(nix_command("nix")
        .args(["copy", "--no-check-sigs", "--from"])
        .arg(other.root())
        .arg("--to")
        .arg(store.root())
        .arg(&copied[0]));
}

fn nix_path_info_all(store: &TestStore) -> String {
    run_stdout(store.nix("nix").args(["path-info", "--all", "--json"]))
}

/// The store must hold every kind of row the comparison is meant to cover.
fn assert_variety(infos: &[Value]) {
    let has = |pred: &dyn Fn(&Value) -> bool| infos.iter().any(pred);
    let ca = |v: &Value, prefix: &str| v["ca"].as_str().is_some_and(|c| c.starts_with(prefix));
    assert!(has(&|v| ca(v, "fixed:r:sha256:")), "no recursive CA path");
    assert!(has(
        &|v| ca(v, "fixed:sha256:") && v.get("deriver").is_some()
    ));
    assert!(has(&|v| ca(v, "text:sha256:")), "no .drv");
    assert!(has(&|v| v["signatures"]
        .as_array()
        .is_some_and(|s| s.len() == 2)));
    assert!(has(
        &|v| v.get("deriver").is_some() && v.get("ultimate").is_none()
    ));
    assert!(has(&|v| v["references"]
        .as_array()
        .unwrap()
        .contains(&v["path"])));
    assert!(has(&|v| v["references"].as_array().unwrap().len() >= 3));
}

fn hash_of(loc: &StoreLocation, full: &str) -> larder_store::StorePathHash {
    *loc.parse_path(full).unwrap().hash()
}

#[test]
fn every_path_matches_nix_path_info_json() {
    let store = TestStore::new();
    let scratch = tempfile::tempdir().unwrap();
    populate(&store, scratch.path());
    let nix_json = nix_path_info_all(&store);
    let infos: Vec<Value> = serde_json::from_str(&nix_json).unwrap();
    assert_variety(&infos);

    let loc = store.location();
    let db = StoreDb::open(&loc).unwrap();
    let mut ours = Vec::new();
    for expected in &infos {
        let full = expected["path"].as_str().unwrap();
        let info = db.path_info_blocking(&hash_of(&loc, full)).unwrap();
        let info = info.unwrap_or_else(|| panic!("{full} not found by hash part"));
        let json = info.nix_json(STORE_DIR);
        assert_eq!(&serde_json::to_value(&json).unwrap(), expected, "{full}");
        assert_eq!(
            db.path_info_by_path_blocking(&info.path).unwrap(),
            Some(info.clone())
        );
        assert!(db.query_valid_blocking(&info.path).unwrap());
        ours.push(json);
    }
    // Same bytes too: key order, omissions and number formats.
    assert_eq!(serde_json::to_string(&ours).unwrap(), nix_json.trim_end());
}

#[test]
fn watcher_listing_covers_every_path_once_in_id_order() {
    let store = TestStore::new();
    let scratch = tempfile::tempdir().unwrap();
    populate(&store, scratch.path());
    let infos: Vec<Value> = serde_json::from_str(&nix_path_info_all(&store)).unwrap();
    let expected: BTreeSet<String> = infos
        .iter()
        .map(|v| v["path"].as_str().unwrap().to_owned())
        .collect();

    let db = StoreDb::open(&store.location()).unwrap();
    let (mut last, mut seen) = (0, Vec::new());
    loop {
        let page = db.paths_after_blocking(last, 3).unwrap();
        assert!(page.len() <= 3);
        let Some((id, _)) = page.last() else { break };
        assert!(page.iter().all(|(i, _)| *i > last));
        assert!(page.windows(2).all(|w| w[0].0 < w[1].0));
        last = *id;
        seen.extend(page.into_iter().map(|(_, p)| format!("{STORE_DIR}/{p}")));
    }
    assert_eq!(seen.len(), expected.len());
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(db.max_row_id_blocking().unwrap(), last);
}

/// Sign-ahead's pages (`path_infos_after`): every path once, in id order,
/// each the same path info a lookup by path gives (references included).
#[tokio::test]
async fn pages_of_path_infos_match_lookups_by_path() {
    let store = TestStore::new();
    let scratch = tempfile::tempdir().unwrap();
    populate(&store, scratch.path());
    let db = StoreDb::open(&store.location()).unwrap();
    let (mut last, mut seen) = (0, 0);
    loop {
        let page = db.path_infos_after(last, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(&(newest, _)) = page.last() else {
            break;
        };
        let page: Vec<PathInfo> = page
            .into_iter()
            .map(|(id, info)| {
                let info = info.unwrap();
                assert_eq!(info.id, id);
                info
            })
            .collect();
        assert!(page.iter().all(|info| info.id > last));
        assert!(page.windows(2).all(|w| w[0].id < w[1].id));
        last = newest;
        for info in &page {
            let by_path = db.path_info_by_path_blocking(&info.path).unwrap();
            assert_eq!(by_path.as_ref(), Some(info));
        }
        seen += page.len();
    }
    let all = db.paths_after_blocking(0, usize::MAX).unwrap();
    assert_eq!(seen, all.len());
    assert!(seen > 3, "the test store has several paths");
    assert!(db.path_infos_after(last, 5).await.unwrap().is_empty());
}
