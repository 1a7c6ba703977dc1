//! One queue, one target, one pusher: a second process for another target
//! is refused naming both; a `watch-exec` next to a running `watch` for the
//! same target enqueues and waits while the running watcher pushes; and a
//! watcher checks its target before anything runs, so a wrong URL fails in
//! seconds.

use larder_tests::fixtures::file_uri;
use larder_tests::process::ClosedPort;
use larder_tests::server::LarderServer;
use larder_tests::sync::{SyncSetup, arrivals};
use larder_tests::{TestStore, shell_derivation};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_queue_refuses_a_second_target_and_has_one_pusher() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let cache = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let target = file_uri(cache.path());
    let mut watch = setup.watch(&["--to", &target]);
    let alive = format!("watcher: alive (pid {})", watch.process.pid());
    setup.wait_for_status(&mut watch, |s| s.contains(&alive));
    assert!(setup.status().contains(&format!("target: {target}")));

    // Another target on the same queue: refused before anything runs.
    let out = setup.output(&["watch", "--to", &file_uri(other.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&target) && err.contains(&file_uri(other.path())) && err.contains("--queue"),
        "{err}"
    );

    // watch-exec for the same target next to the running watch: it builds,
    // enqueues, and waits while the running watcher (the lock holder) pushes.
    let out = setup.output(&[
        "watch-exec",
        "--to",
        &target,
        "--poll-interval-ms",
        "100",
        "--drain-timeout-secs",
        "120",
        "--",
        "nix-build",
        "--store",
        store.root().to_str().unwrap(),
        "--no-out-link",
        "-E",
        &shell_derivation("beside", "echo beside > $out"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(arrivals(cache.path(), &[built]).iter().all(Option::is_some));
    let err = stderr(&out);
    assert!(
        err.contains("another larder-sync pushes this queue"),
        "{err}"
    );
    assert!(
        !err.contains("larder_sync::push: pushed"),
        "both pushed:\n{err}"
    );
    assert!(watch.log().contains("pushed"), "{}", watch.log());
}

#[test]
fn watch_exec_checks_the_target_before_running_the_command() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = ["--", "touch", marker.to_str().unwrap()];

    // Nothing listens there.
    let first = SyncSetup::new(&store);
    let setup = &first;
    let closed_port = ClosedPort::new();
    let closed = format!("http://127.0.0.1:{}", closed_port.port);
    let mut args = vec!["watch-exec", "--to", &closed];
    args.extend(touch);
    let out = setup.output(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not answer") && stderr(&out).contains("cannot reach"),
        "{}",
        stderr(&out)
    );
    assert!(
        !marker.exists(),
        "the command ran although the target is down"
    );

    // A server, but no binary cache at that path.
    let server = LarderServer::start(&store, &[]);
    let wrong = format!("{}/no/cache/here", server.url().trim_end_matches('/'));
    let setup = SyncSetup::new(&store);
    let mut args = vec!["watch-exec", "--to", &wrong];
    args.extend(touch);
    let out = setup.output(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 404"), "{}", stderr(&out));
    assert!(!marker.exists());

    // The right URL, on the queue the wrong one failed to claim: checked,
    // the command runs, nothing to push.
    let setup = &first;
    let mut args = vec!["watch-exec", "--to", server.url()];
    args.extend(touch);
    let out = setup.output(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists());
}

#[test]
fn concurrent_writers_never_see_database_is_locked() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    // A watcher whose pusher fails every path (the target is a file, not a
    // directory) writes failures while eight enqueue processes write too.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(&cache, "not a directory").unwrap();
    let built = store.build_expr(&shell_derivation("busy", "echo busy > $out"))[0].clone();
    run_enqueue(&setup, &[built.as_str()]);
    let mut watch = setup.watch(&["--to", &file_uri(&cache), "--no-target-check"]);
    watch.wait_for_log("push failed");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let paths: Vec<String> = (0..50)
                .map(|i| format!("/nix/store/{:0>32}-w{w}", w * 1000 + i))
                .collect();
            let mut cmd = setup.command(&["enqueue"]);
            cmd.args(&paths)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(!stderr(&out).contains("ERROR"), "{}", stderr(&out));
    }
    // (The pusher drops the made-up paths as gone from the local store, so
    // the count is not checked; status must still read the queue.)
    assert!(setup.status().contains("pending: "));
    watch.process.assert_alive();
    let log = watch.log();
    assert!(!log.contains("locked"), "{log}");
}

fn run_enqueue(setup: &SyncSetup, paths: &[&str]) {
    let mut args = vec!["enqueue"];
    args.extend(paths);
    let out = setup.output(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("ERROR"), "{}", stderr(&out));
}
