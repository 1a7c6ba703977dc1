//! CI without ssh: a runner's `larder-sync watch-exec --to http://…`
//! around a build pushes every path it builds through `larder-sync
//! receive`, with the token in Nix's own `netrc-file` (given by
//! `NIX_CONFIG`, which larder-sync hands down to `nix copy`); a wrong token
//! fails the target check before the command runs, naming the netrc file.

use std::path::Path;

use larder_store::db::StoreDb;
use larder_tests::receive::{PUSHER, TOKEN, TestReceiver, chain_closure, chain_expr};
use larder_tests::sync::SyncSetup;
use larder_tests::{NIX_CONFIG, TestStore};

/// The test's Nix settings plus a netrc file, as a runner would set them.
fn nix_config_with(netrc: &Path) -> String {
    format!("{NIX_CONFIG}\nnetrc-file = {}\n", netrc.display())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn watch_exec_pushes_a_build_over_http_with_a_netrc_token() {
    let runner = TestStore::new();
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let netrc = receiver.netrc(PUSHER, TOKEN);
    let setup = SyncSetup::new(&runner);
    let expr = chain_expr("ci-built", 20);

    let out = setup
        .command(&[
            "watch-exec",
            "--to",
            &receiver.url(),
            "--",
            "nix-build",
            "--store",
        ])
        .arg(runner.root())
        .args(["--no-out-link", "--quiet", "-E", &expr])
        .env("NIX_CONFIG", nix_config_with(&netrc))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n--- receiver ---\n{}",
        stderr(&out),
        receiver.log()
    );
    // The same expression again: already built, the same paths.
    let paths = chain_closure(&runner, "ci-built", 20);
    assert!(paths.len() >= 21);
    let db = StoreDb::open(&host.location()).unwrap();
    for p in &paths {
        let sp = host.location().parse_path(p).unwrap();
        assert!(db.query_valid_blocking(&sp).unwrap(), "{p} did not arrive");
        let link = receiver
            .pusher_roots()
            .join(p.trim_start_matches("/nix/store/"));
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(p));
    }
    assert!(!stderr(&out).contains(TOKEN) && !receiver.log().contains(TOKEN));
}

#[test]
fn a_wrong_token_fails_watch_exec_before_the_command_runs() {
    let runner = TestStore::new();
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let netrc = receiver.netrc(PUSHER, "not-the-token");
    let setup = SyncSetup::new(&runner);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");

    let out = setup
        .command(&["watch-exec", "--to", &receiver.url(), "--", "touch"])
        .arg(&marker)
        .env("NIX_CONFIG", nix_config_with(&netrc))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("HTTP 401") && err.contains(netrc.to_str().unwrap()) && err.contains("netrc"),
        "{err}"
    );
    assert!(!err.contains("not-the-token"), "{err}");
    assert!(
        !marker.exists(),
        "the command ran although the token is wrong"
    );
    assert!(receiver.pusher_roots().read_dir().is_err());
}
