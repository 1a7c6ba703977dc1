//! `larder-sync roots` over the per-path layout `receive` writes
//! (`<gcroots>/larder/receive-<token>/<basename>` → the path): roots are
//! grouped into closures by the store's references, so `keep_last` counts
//! closures, not links; `--max-age-days` keeps what arrived recently; the
//! store's own `nix-store --gc` keeps what is listed as kept and frees the
//! rest after `--prune`. And `larder-sync keep --once` roots copied
//! arrivals only: not local builds, not what another source already keeps.

use std::path::Path;
use std::process::Command;

use larder_tests::fixtures::three_path_closure;
use larder_tests::sync::SyncSetup;
use larder_tests::{TestStore, run, run_stdout, shell_derivation};

/// Root every path of `top`'s closure under `dir` by its basename, with
/// an mtime of `age` ago (as `receive` would have when they arrived).
fn root_closure(store: &TestStore, dir: &Path, top: &str, age: &str) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let closure = run_stdout(store.nix("nix-store").args(["-qR", top]));
    let paths: Vec<String> = closure.lines().map(str::to_owned).collect();
    for p in &paths {
        let link = dir.join(p.trim_start_matches("/nix/store/"));
        std::os::unix::fs::symlink(p, &link).unwrap();
        run(Command::new("touch").args(["-h", "-d", age]).arg(&link));
    }
    paths
}

fn valid(store: &TestStore, path: &str) -> bool {
    store
        .nix("nix-store")
        .args(["--check-validity", path])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn keep_last_counts_closures_and_gc_follows_retention() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let dir = store.root().join("nix/var/nix/gcroots/larder/receive-ci");
    // Three pushes: an old single path, a 3-path closure two days ago, and
    // a 2-path closure now.
    let oldest = store.build_expr(&shell_derivation("lonely", "echo lonely > $out"))[0].clone();
    let a = three_path_closure(&store);
    let dep = shell_derivation("b-dep", "echo b > $out");
    let b = store.build_expr(&format!(
        r#"derivation {{ name = "b-top"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; dep = {dep}; args = ["-c" "echo $dep > $out"]; }}"#
    ))[0]
        .clone();
    let old = root_closure(&store, &dir, &oldest, "5 days ago");
    let a_paths = root_closure(&store, &dir, &a, "2 days ago");
    let b_paths = root_closure(&store, &dir, &b, "1 minute ago");
    assert_eq!((old.len(), a_paths.len(), b_paths.len()), (1, 3, 2));

    // By default `roots` counts a receive source as the receiver does
    // (`--settle-secs` 3600): b's minute-old closure may be a push still in
    // progress, so it is neither ranked nor removed, and a stays the newest.
    let list = run_stdout(&mut setup.command(&["roots", "--keep-last", "1"]));
    assert_eq!(list.matches("kept while settling").count(), 2, "{list}");
    assert_eq!(
        list.matches("kept as the newest closure").count(),
        3,
        "{list}"
    );
    assert_eq!(list.matches("expired").count(), 1, "{list}");
    // Without a policy nothing goes, so nothing is "settling" either.
    let list = run_stdout(&mut setup.command(&["roots"]));
    assert!(list.contains("(no policy: everything kept)"), "{list}");
    assert!(!list.contains("settling"), "{list}");
    // Nobody reads the listing (`… | head -0`): the pruning still finishes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let pruned = setup
        .command(&["roots", "--keep-last", "1", "--prune"])
        .stdout(writer)
        .output()
        .unwrap();
    assert!(
        pruned.status.success(),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    for link in old.iter().chain(&a_paths).chain(&b_paths) {
        let kept =
            std::fs::symlink_metadata(dir.join(link.trim_start_matches("/nix/store/"))).is_ok();
        assert_eq!(kept, !old.contains(link), "{link}");
    }
    root_closure(&store, &dir, &oldest, "5 days ago");

    // Listing: grouped by closure; with last:1 and nothing settling only
    // b's closure is kept.
    let list = run_stdout(&mut setup.command(&["roots", "--keep-last", "1", "--settle-secs", "0"]));
    assert!(
        list.contains("source receive-ci (last 1 closures)"),
        "{list}"
    );
    assert!(list.contains(&format!("[in closure of {a}]")), "{list}");
    // Ranked order: the newest closure first, each top path first.
    let line_of = |p: &str| {
        list.lines()
            .position(|l| l.contains(&format!("-> {p} ")))
            .unwrap_or_else(|| panic!("{p} not listed:\n{list}"))
    };
    let b_dep = b_paths.iter().find(|p| **p != b).unwrap();
    assert!(line_of(&b) < line_of(b_dep), "{list}");
    assert!(line_of(b_dep) < line_of(&a), "{list}");
    assert!(line_of(&a) < line_of(&oldest), "{list}");
    assert_eq!(
        list.matches("kept as the newest closure").count(),
        2,
        "{list}"
    );
    assert_eq!(list.matches("expired").count(), 4, "{list}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        6,
        "listing must not remove anything"
    );

    // last:2 per source: six links are three closures; the oldest goes.
    let out = run_stdout(&mut setup.command(&[
        "roots",
        "--policy",
        "receive-ci=last:2",
        "--settle-secs",
        "0",
        "--prune",
    ]));
    assert!(out.contains("removed (outside retention)"), "{out}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 5);
    run(store.nix("nix-store").arg("--gc"));
    assert!(
        !valid(&store, &oldest),
        "outside retention but not collected"
    );
    for p in a_paths.iter().chain(&b_paths) {
        assert!(valid(&store, p), "{p} collected inside retention");
    }

    // By age: a day; a's closure (two days old) goes, b's stays.
    run(&mut setup.command(&[
        "roots",
        "--max-age-days",
        "1",
        "--settle-secs",
        "0",
        "--prune",
    ]));
    run(store.nix("nix-store").arg("--gc"));
    for p in &a_paths {
        assert!(!valid(&store, p), "{p} outside retention but not collected");
    }
    for p in &b_paths {
        assert!(valid(&store, p), "{p} collected inside retention");
    }
    let list =
        run_stdout(&mut setup.command(&["roots", "--max-age-days", "1", "--settle-secs", "0"]));
    assert!(list.contains("by age until"), "{list}");
}

#[test]
fn bad_policies_are_refused() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let out = setup.output(&["roots", "--policy", "receive-ci=weeks:2"]);
    // A usage error: exit 2.
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SOURCE=last:N,days:D"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keep_roots_copied_arrivals_only_once_each() {
    let host = TestStore::new();
    let builder = TestStore::new();
    let setup = SyncSetup::new(&host);
    let keep = |extra: &[&str]| {
        let mut args = vec!["keep", "--once", "--settle-secs", "0"];
        args.extend(extra);
        let out = setup.output(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    keep(&[]); // the first start: from now on
    let gc = host.root().join("nix/var/nix/gcroots/larder");
    let copied = builder.build_expr(&shell_derivation("copied", "echo c > $out"))[0].clone();
    let received = builder.build_expr(&shell_derivation("received", "echo r > $out"))[0].clone();
    for p in [&copied, &received] {
        run(builder
            .nix("nix")
            .args(["copy", "--no-check-sigs", "--to"])
            .arg(host.root())
            .arg(p));
    }
    // `received` is already kept by another source (as receive would).
    let receive_dir = gc.join("receive-ci");
    std::fs::create_dir_all(&receive_dir).unwrap();
    std::os::unix::fs::symlink(
        &received,
        receive_dir.join(received.trim_start_matches("/nix/store/")),
    )
    .unwrap();
    // Built on the host itself (with its .drv): not an arrival.
    let local = host.build_expr(&shell_derivation("local", "echo l > $out"))[0].clone();
    keep(&[]);
    keep(&[]); // a second pass roots nothing twice
    let rooted: Vec<String> = std::fs::read_dir(gc.join("ssh"))
        .unwrap()
        .map(|e| {
            std::fs::read_link(e.unwrap().path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        rooted,
        std::slice::from_ref(&copied),
        "local build: {local}"
    );
    run(host.nix("nix-store").arg("--gc"));
    assert!(valid(&host, &copied) && valid(&host, &received));
    assert!(
        !valid(&host, &local),
        "an unrooted local build survived the GC"
    );
}
