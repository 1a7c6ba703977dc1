//! `larder-sync` as Nix and CI call it: `enqueue` from a real
//! `post-build-hook`, `watch-exec` around a build, `status`, and bad input
//! (unknown URI scheme, corrupt queue file, malformed key, unreachable
//! builder) giving clear errors with the queue left intact.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use larder_tests::fixtures::file_uri;
use larder_tests::sync::{SyncSetup, arrivals, build_many};
use larder_tests::{TestStore, run, shell_derivation};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn post_build_hook_enqueues_and_watch_exec_pushes_them() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let hook = setup.dir.path().join("hook.sh");
    let enqueue = setup.command(&["enqueue"]);
    let args: Vec<String> = enqueue
        .get_args()
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec '{}' {}\n",
            enqueue.get_program().to_string_lossy(),
            args.join(" ")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let out = run(store
        .nix("nix-build")
        .args(["--no-out-link", "--option", "post-build-hook"])
        .arg(&hook)
        .arg("-E")
        .arg(shell_derivation("hooked", "echo hooked > $out")));
    let built = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let status = setup.status();
    assert!(status.contains("pending: 1"), "{status}");
    assert!(status.contains(&built), "{status}");

    // A later watcher (here watch-exec around a no-op) pushes what the hook enqueued.
    let cache = tempfile::tempdir().unwrap();
    run(&mut setup.command(&["watch-exec", "--to", &file_uri(cache.path()), "--", "true"]));
    assert!(arrivals(cache.path(), &[built]).iter().all(Option::is_some));
    assert!(setup.status().contains("pending: 0"));
}

#[test]
fn watch_exec_returns_the_command_status_and_pushes_its_outputs() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let cache = tempfile::tempdir().unwrap();
    let outputs = setup.dir.path().join("outputs");
    let expr = setup.dir.path().join("ci.nix");
    std::fs::write(&expr, shell_derivation("ci-output", "echo ci > $out")).unwrap();
    let script = format!(
        "nix-build --store '{}' --no-out-link '{}' > '{}' && exit 3",
        store.root().display(),
        expr.display(),
        outputs.display()
    );
    let out = setup.output(&[
        "watch-exec",
        "--to",
        &file_uri(cache.path()),
        "--poll-interval-ms",
        "100",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let built: Vec<String> = std::fs::read_to_string(&outputs)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(built.len(), 1);
    assert!(
        arrivals(cache.path(), &built).iter().all(Option::is_some),
        "{}",
        stderr(&out)
    );
}

#[test]
fn enqueue_never_fails_a_build() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    std::fs::create_dir_all(setup.queue.parent().unwrap()).unwrap();
    std::fs::write(&setup.queue, b"garbage, not SQLite".repeat(64)).unwrap();
    let out = setup
        .command(&[
            "enqueue",
            "/nix/store/00000000000000000000000000000000-x",
            "not-a-path",
        ])
        .env("OUT_PATHS", "/nix/store/11111111111111111111111111111111-y")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ERROR") && err.contains("not-a-path"), "{err}");
    assert!(err.contains(&setup.queue.display().to_string()), "{err}");
    assert_eq!(
        std::fs::read(&setup.queue).unwrap(),
        b"garbage, not SQLite".repeat(64)
    );
}

#[test]
fn bad_input_is_a_clear_error_and_the_queue_stays() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let pending = build_many(&store, "pending", 2);
    let mut args = vec!["enqueue"];
    args.extend(pending.iter().map(String::as_str));
    run(&mut setup.command(&args));
    let before = setup.status();
    assert!(before.contains("pending: 2"), "{before}");

    let out = setup.output(&["watch", "--to", "ftp://example.org/cache"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown store URI scheme in \"ftp://example.org/cache\""),
        "{}",
        stderr(&out)
    );

    let gc = setup.dir.path().join("gc");
    let gc = gc.to_str().unwrap();
    let out = setup.output(&[
        "pull",
        "--from",
        "file:///nonexistent",
        "--trusted-key",
        "cache-1:not-base64!",
        "--gc-root-dir",
        gc,
        "--name",
        "n",
        &pending[0],
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("malformed trusted key \"cache-1:not-base64!\""),
        "{}",
        stderr(&out)
    );

    let out = setup
        .command(&[
            "pull",
            "--from",
            "ssh-ng://root@127.0.0.1",
            "--no-check-sigs",
            "--gc-root-dir",
            gc,
            "--name",
            "n",
            &pending[0],
        ])
        .env("NIX_SSHOPTS", "-p 1 -o ConnectTimeout=5 -o BatchMode=yes")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("nix copy --from ssh-ng://root@127.0.0.1") && err.contains("failed"),
        "{err}"
    );

    let out = setup.output(&[
        "pull",
        "--from",
        "http://127.0.0.1:1",
        "--no-check-sigs",
        "--gc-root-dir",
        gc,
        "--name",
        "n",
        &pending[0],
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("http://127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    assert!(!std::path::Path::new(gc).join("127.0.0.1").exists());

    assert_eq!(setup.status().lines().nth(1), before.lines().nth(1));

    // A corrupt queue file: named, with what to do, and not touched.
    let garbage = b"SQLite format 3\0 but then nothing sensible".repeat(200);
    std::fs::write(&setup.queue, &garbage).unwrap();
    for args in [vec!["status"], vec!["watch", "--to", "file:///tmp/x"]] {
        let out = setup.output(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&setup.queue.display().to_string()) && err.contains("Move it aside"),
            "{err}"
        );
    }
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(std::fs::read(&setup.queue).unwrap(), garbage);
}
