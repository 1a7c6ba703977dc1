//! `larder-sync pull` from a builder: over `ssh-ng://` through a real sshd
//! on loopback to a second chroot store, and over `http://` from a
//! larder-server serving one. Signatures arrive and are checked, GC roots
//! are registered with the store, retention removes old ones, and
//! `daemon` pulls on its own.

use std::path::Path;
use std::process::Output;

use larder_tests::fixtures::keypair;
use larder_tests::fixtures::three_path_closure;
use larder_tests::server::LarderServer;
use larder_tests::sshd::Sshd;
use larder_tests::sync::SyncSetup;
use larder_tests::{TestStore, run, run_stdout};

/// A builder store holding a three-path closure signed by `builder-1`;
/// returns (store, top path, public key, key dir).
fn signed_builder() -> (TestStore, String, String, tempfile::TempDir) {
    let builder = TestStore::new();
    let top = three_path_closure(&builder);
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = keypair("builder-1", keys.path());
    run(builder
        .nix("nix")
        .args(["store", "sign", "-r", "--key-file"])
        .arg(&secret)
        .arg(&top));
    (builder, top, public, keys)
}

fn sigs_of(store: &TestStore, path: &str) -> String {
    run_stdout(
        store
            .nix("nix")
            .args(["path-info", "--json", "--sigs", path]),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pull(setup: &SyncSetup, sshd: Option<&Sshd>, args: &[&str]) -> Output {
    let mut cmd = setup.command(&["pull"]);
    cmd.args(args);
    if let Some(sshd) = sshd {
        cmd.env("NIX_SSHOPTS", sshd.nix_sshopts());
    }
    cmd.output().unwrap()
}

fn roots_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn pull_over_ssh_ng_checks_signatures_roots_and_retains() {
    let (builder, top, public, keys) = signed_builder();
    let sshd = Sshd::start();
    let uri = sshd.ssh_ng_uri(builder.root());
    let host = TestStore::new();
    let setup = SyncSetup::new(&host);
    let gc = setup.dir.path().join("gcroots");
    let gc_s = gc.to_str().unwrap();

    // A key that did not sign the paths: refused, nothing copied.
    let (_, other) = keypair("other-1", keys.path());
    let out = pull(
        &setup,
        Some(&sshd),
        &[
            "--from",
            &uri,
            "--trusted-key",
            &other,
            "--gc-root-dir",
            gc_s,
            "--name",
            "r0",
            &top,
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
    assert!(!host.real_path(&top).exists());

    for name in ["r1", "r2", "r3"] {
        let out = pull(
            &setup,
            Some(&sshd),
            &[
                "--from",
                &uri,
                "--trusted-key",
                &public,
                "--gc-root-dir",
                gc_s,
                "--name",
                name,
                "--keep-last",
                "2",
                &top,
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        sigs_of(&host, &top).contains("builder-1:"),
        "{}",
        sigs_of(&host, &top)
    );
    let dir = gc.join("127.0.0.1");
    // One closure: the older roots of the same path keep nothing more.
    assert_eq!(roots_in(&dir), ["r3"]);
    assert_eq!(
        std::fs::read_link(dir.join("r3")).unwrap().to_str(),
        Some(top.as_str())
    );
    // Registered with the store: its GC keeps the closure.
    let auto = host.root().join("nix/var/nix/gcroots/auto");
    let registered: Vec<_> = std::fs::read_dir(&auto)
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap())
        .collect();
    assert!(registered.contains(&dir.join("r3")), "{registered:?}");
    run(host.nix("nix-store").arg("--gc"));
    assert!(host.real_path(&top).exists(), "GC removed a rooted path");

    // A profile on the builder, resolved over ssh.
    let profiles = builder.root().join("nix/var/nix/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::os::unix::fs::symlink(&top, profiles.join("system-1-link")).unwrap();
    std::os::unix::fs::symlink("system-1-link", profiles.join("system")).unwrap();
    let out = pull(
        &setup,
        Some(&sshd),
        &[
            "--from",
            &uri,
            "--trusted-key",
            &public,
            "--gc-root-dir",
            gc_s,
            "--builder",
            "b1",
            "--name",
            "system",
            "--root",
            "/nix/var/nix/profiles/system",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_link(gc.join("b1/system")).unwrap().to_str(),
        Some(top.as_str())
    );

    // Retention by age: everything but the newest goes; the store's GC then reclaims.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = pull(
        &setup,
        Some(&sshd),
        &[
            "--from",
            &uri,
            "--no-check-sigs",
            "--gc-root-dir",
            gc_s,
            "--name",
            "r4",
            "--max-age-secs",
            "1",
            &top,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(roots_in(&dir), ["r4"]);
}

#[test]
fn pull_over_http_from_a_larder_server() {
    let (builder, top, public, _keys) = signed_builder();
    let server = LarderServer::start(&builder, &[]);
    let host = TestStore::new();
    let setup = SyncSetup::new(&host);
    let gc = setup.dir.path().join("gcroots");
    let out = pull(
        &setup,
        None,
        &[
            "--from",
            server.url(),
            "--trusted-key",
            &public,
            "--gc-root-dir",
            gc.to_str().unwrap(),
            "--builder",
            "web",
            "--name",
            "top",
            &top,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sigs_of(&host, &top).contains("builder-1:"));
    assert_eq!(
        std::fs::read_link(gc.join("web/top")).unwrap().to_str(),
        Some(top.as_str())
    );
    // The whole closure arrived.
    let closure = run_stdout(host.nix("nix-store").args(["-qR", &top]));
    assert_eq!(closure.lines().count(), 3, "{closure}");
}

#[test]
fn daemon_pulls_configured_builders_and_refuses_bad_config() {
    let (builder, top, public, _keys) = signed_builder();
    let server = LarderServer::start(&builder, &[]);
    let host = TestStore::new();
    let setup = SyncSetup::new(&host);
    let gc = setup.dir.path().join("gcroots");
    let config = setup.dir.path().join("daemon.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "gc_root_dir = \"{}\"\nstore_root = \"{}\"\n[[builder]]\nname = \"web\"\nuri = \"{}\"\ninterval_secs = 60\ntrusted_keys = [\"{public}\"]\npaths = [\"{top}\"]\nkeep_last = 3\n{extra}",
                gc.display(),
                host.root().display(),
                server.url()
            ),
        )
        .unwrap();
    };
    write("colour = \"blue\"\n");
    let out = setup.output(&["daemon", "--builders", config.to_str().unwrap()]);
    // A configuration error: exit 2, like a usage error.
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(config.to_str().unwrap()) && stderr(&out).contains("colour"),
        "{}",
        stderr(&out)
    );

    write("");
    let mut cmd = setup.command(&["daemon", "--builders", config.to_str().unwrap()]);
    let mut daemon = larder_tests::process::Running::spawn("larder-sync daemon", &mut cmd);
    larder_tests::process::wait_until(&mut daemon, || {
        gc.join("web")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    });
    let root = std::fs::read_dir(gc.join("web"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    larder_tests::process::wait_until(&mut daemon, || std::fs::read_link(&root).is_ok());
    assert_eq!(
        std::fs::read_link(&root).unwrap().to_str(),
        Some(top.as_str())
    );
    assert!(host.real_path(&top).exists());
}

/// The store path each root of `dir` points to, sorted.
fn root_targets(dir: &Path) -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    targets
}

#[test]
fn daemon_keep_last_counts_distinct_closures_and_names_are_unique() {
    let builder = TestStore::new();
    let gen1 = three_path_closure(&builder);
    let gen2 = builder.build_expr(&larder_tests::shell_derivation(
        "system-2",
        "echo generation two > $out",
    ))[0]
        .clone();
    let profiles = builder.root().join("nix/var/nix/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::os::unix::fs::symlink(&gen1, profiles.join("system-1-link")).unwrap();
    std::os::unix::fs::symlink("system-1-link", profiles.join("system")).unwrap();
    let sshd = Sshd::start();
    let uri = sshd.ssh_ng_uri(builder.root());
    let host = TestStore::new();
    let setup = SyncSetup::new(&host);
    let gc = setup.dir.path().join("gcroots");
    let config = setup.dir.path().join("daemon.toml");
    let entry = |name: &str, uri: &str| {
        format!(
            "[[builder]]\n{name}uri = \"{uri}\"\ninterval_secs = 1\nno_check_sigs = true\nroots = [\"/nix/var/nix/profiles/system\"]\nkeep_last = 2\n"
        )
    };
    let head = format!(
        "gc_root_dir = \"{}\"\nstore_root = \"{}\"\n",
        gc.display(),
        host.root().display()
    );

    // Two entries whose derived names are equal: refused, naming both.
    let other = sshd.ssh_ng_uri(host.root());
    std::fs::write(
        &config,
        format!("{head}{}{}", entry("", &uri), entry("", &other)),
    )
    .unwrap();
    let out = setup.output(&["daemon", "--builders", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&uri) && stderr(&out).contains(&other),
        "{}",
        stderr(&out)
    );

    std::fs::write(&config, format!("{head}{}", entry("name = \"b1\"\n", &uri))).unwrap();
    let sshopts = sshd.nix_sshopts();
    let mut daemon = setup.spawn(
        &["daemon", "--builders", config.to_str().unwrap()],
        &[("NIX_SSHOPTS", sshopts.as_str())],
    );
    let dir = gc.join("b1");
    let wait = |daemon: &mut larder_tests::sync::SyncProcess, ready: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ready() {
            daemon.process.assert_alive();
            assert!(std::time::Instant::now() < deadline, "{}", daemon.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait(&mut daemon, &|| root_targets(&dir) == [gen1.clone()]);
    // Deploy generation 2, then leave the profile unchanged for 5 intervals.
    std::os::unix::fs::symlink(&gen2, profiles.join("system-2-link")).unwrap();
    std::os::unix::fs::symlink("system-2-link", profiles.join("system.tmp")).unwrap();
    std::fs::rename(profiles.join("system.tmp"), profiles.join("system")).unwrap();
    wait(&mut daemon, &|| root_targets(&dir).contains(&gen2));
    let pulls = daemon.log().matches("daemon: pulled").count();
    let log = daemon.log_path().to_owned();
    wait(&mut daemon, &|| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        log.matches("daemon: pulled").count() >= pulls + 5
    });
    let mut expected = vec![gen1.clone(), gen2.clone()];
    expected.sort();
    assert_eq!(root_targets(&dir), expected, "{}", daemon.log());
    run(host.nix("nix-store").arg("--gc"));
    assert!(
        host.real_path(&gen1).exists(),
        "the previous generation was collected"
    );
}
