//! `larder-sync watch --to ssh-ng://` through a real sshd into a "cache
//! host" store whose nix.conf requires signatures: refused with a hint
//! naming the fix, accepted once the builder signs with a key the host
//! trusts (and the restart retries at once), or with `--no-check-sigs` as a
//! trusted user; `larder-sync keep` on the host roots what arrived, so the
//! host's `nix-store --gc` keeps it while inside retention and frees it
//! after.

use std::time::{Duration, Instant};

use larder_tests::fixtures::keypair;
use larder_tests::fixtures::three_path_closure;
use larder_tests::sshd::Sshd;
use larder_tests::sync::{SyncProcess, SyncSetup, build_many};
use larder_tests::{TestStore, run, run_stdout};

fn wait_for(what: &str, process: &mut SyncProcess, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        process.process.assert_alive();
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn valid_on(store: &TestStore, path: &str) -> bool {
    larder_tests::nix_command("nix-store")
        .arg("--store")
        .arg(store.root())
        .args(["--check-validity", path])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn ssh_ng_push_needs_a_trust_setup_and_arrivals_are_kept_by_retention() {
    let keys = tempfile::tempdir().unwrap();
    let (secret, public) = keypair("builder-1", keys.path());
    // The cache host's own nix.conf, as sessions through this sshd see it.
    let conf = keys.path().join("host-conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        format!(
            "build-users-group =\nsandbox = false\nsubstituters =\nrequire-sigs = true\ntrusted-public-keys = {public}\n"
        ),
    )
    .unwrap();
    let sshd = Sshd::start_with_env(&[("NIX_CONF_DIR", conf.to_str().unwrap())]);
    let sshopts = sshd.nix_sshopts();
    let ssh_env = [("NIX_SSHOPTS", sshopts.as_str())];
    let host = TestStore::new();
    let uri = sshd.ssh_ng_uri(host.root());
    let builder = TestStore::new();
    let setup = SyncSetup::new(&builder);
    let host_setup = SyncSetup::new(&host);

    // The host follows its store from now on, keeping arrivals for a day.
    let mut keep = host_setup.spawn(
        &[
            "keep",
            "--settle-secs",
            "0",
            "--poll-interval-ms",
            "200",
            "--max-age-days",
            "1",
            "--prune-interval-secs",
            "1",
        ],
        &[],
    );
    let gc_dir = host.root().join("nix/var/nix/gcroots/larder");
    wait_for("keep's checkpoint", &mut keep, || {
        gc_dir.join(".ssh.checkpoint").exists()
    });

    // No trust setup: every path is refused, and the error names the fix.
    let first = three_path_closure(&builder);
    let mut watch = setup.spawn(
        &[
            "watch",
            "--to",
            &uri,
            "--from-start",
            "--poll-interval-ms",
            "100",
            "--retry-base-ms",
            "600000",
        ],
        &ssh_env,
    );
    setup.wait_for_status(&mut watch, |s| s.contains("lacks a valid signature"));
    let status = setup.status();
    assert!(
        status.contains("--sign-key") && status.contains("--no-check-sigs"),
        "{status}"
    );
    assert!(status.contains(&format!("target: {uri}")), "{status}");
    assert!(
        status.contains(&format!("watcher: alive (pid {})", watch.process.pid())),
        "{status}"
    );
    assert!(status.contains("failed  /nix/store/"), "{status}");
    assert!(watch.log().contains("--sign-key"), "{}", watch.log());
    assert!(!valid_on(&host, &first));
    drop(watch);

    // The builder signs with its key, which the host trusts: the restart
    // retries at once although the stored backoff is ten minutes.
    let mut watch = setup.spawn(
        &[
            "watch",
            "--to",
            &uri,
            "--poll-interval-ms",
            "100",
            "--retry-base-ms",
            "600000",
            "--sign-key",
            secret.to_str().unwrap(),
        ],
        &ssh_env,
    );
    wait_for("the signed push", &mut watch, || valid_on(&host, &first));
    setup.wait_for_status(&mut watch, |s| s.contains("pending: 0"));
    let sigs = run_stdout(host.nix("nix").args(["path-info", "--sigs", &first]));
    assert!(sigs.contains("builder-1:"), "{sigs}");
    drop(watch);

    // Option (b): a trusted user (root over ssh here) with --no-check-sigs.
    let trusted = SyncSetup::new(&builder);
    let second = build_many(&builder, "trusted", 1).remove(0);
    let mut watch = trusted.spawn(
        &[
            "watch",
            "--to",
            &uri,
            "--no-check-sigs",
            "--poll-interval-ms",
            "100",
        ],
        &ssh_env,
    );
    run(&mut trusted.command(&["enqueue", &second]));
    wait_for("the unsigned push", &mut watch, || valid_on(&host, &second));
    drop(watch);

    // keep rooted every arrival under ssh/, and the host's GC keeps them.
    let ssh_dir = gc_dir.join("ssh");
    let closure = run_stdout(host.nix("nix-store").args(["-qR", &first]));
    let mut expected: Vec<&str> = closure.lines().collect();
    expected.push(&second);
    wait_for("keep to root every arrival", &mut keep, || {
        expected.iter().all(|p| {
            ssh_dir
                .join(p.trim_start_matches("/nix/store/"))
                .symlink_metadata()
                .is_ok()
        })
    });
    run(host.nix("nix-store").arg("--gc"));
    for p in &expected {
        assert!(valid_on(&host, p), "{p} was collected inside retention");
    }
    let listing = run_stdout(&mut host_setup.command(&["roots", "--max-age-days", "1"]));
    assert!(listing.contains("source ssh (last 1 days)"), "{listing}");
    assert!(
        listing.contains(&format!("[in closure of {first}]")),
        "{listing}"
    );

    // Three days later (backdated), the first closure is outside retention:
    // keep unroots it and the host's GC frees it; the newer one stays.
    for p in closure.lines() {
        run(std::process::Command::new("touch")
            .args(["-h", "-d", "3 days ago"])
            .arg(ssh_dir.join(p.trim_start_matches("/nix/store/"))));
    }
    wait_for("keep to unroot the old closure", &mut keep, || {
        std::fs::read_dir(&ssh_dir).unwrap().count() == 1
    });
    run(host.nix("nix-store").arg("--gc"));
    assert!(!valid_on(&host, &first), "collected after retention");
    assert!(valid_on(&host, &second), "the newest closure stays");
    assert!(keep.log().contains("removed GC root"), "{}", keep.log());
}
