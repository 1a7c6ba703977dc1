//! Replicas behind a load balancer: three cache hosts (chroot stores, each
//! with its own larder-server and larder-signer holding the same key) fed
//! the same closure, behind `contrib/nginx/larder-replicas.conf` with the
//! real nginx. One replica is killed in the middle of a client's `nix copy`
//! of a 22-path closure (require-sigs): the copy succeeds, every path
//! valid, and nothing failed for good.

use larder_tests::proxy::TestProxy;
use larder_tests::receive::NO_NARINFO_CACHE;
use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, nix_command, run, run_stdout};

/// A chain of `n` paths of 2 MiB of random bytes each, every one referring
/// to the one before, under one top: downloads long enough to be cut.
fn big_chain(store: &TestStore, n: usize) -> String {
    let expr = format!(
        r#"let
          mk = i: prev: derivation {{ name = "replica-${{toString i}}"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; inherit prev; args = ["-c" "mkdir $out; echo $prev > $out/prev; head -c 2097152 /dev/urandom > $out/data"]; }};
          chain = builtins.foldl' (acc: i: acc ++ [ (mk i (if acc == [] then "" else builtins.elemAt acc (i - 1))) ]) [] (builtins.genList (x: x) {n});
        in derivation {{ name = "replica-top"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; deps = chain; args = ["-c" "echo $deps > $out"]; }}"#
    );
    store.build_expr(&expr).remove(0)
}

#[test]
fn a_replica_killed_mid_copy_costs_the_client_nothing() {
    let builder = TestStore::new();
    let top = big_chain(&builder, 21);
    let closure = run_stdout(builder.nix("nix-store").args(["-qR", &top]));
    assert_eq!(closure.lines().count(), 22);

    // Three replicas with the same closure and the same signing key.
    let stores: Vec<TestStore> = (0..3).map(|_| TestStore::new()).collect();
    let mut signers: Vec<TestSigner> = Vec::new();
    let mut servers: Vec<LarderServer> = Vec::new();
    for store in &stores {
        run(nix_command("nix")
            .args(["copy", "--no-check-sigs", "--from"])
            .arg(builder.root())
            .arg("--to")
            .arg(store.root())
            .arg(&top));
        let mut signer = TestSigner::start(store, &[]);
        if let Some(first) = signers.first() {
            signer.key_file = first.key_file.clone();
            signer.public_key = first.public_key.clone();
            signer.restart();
        }
        let server =
            LarderServer::start(store, &["--signer-socket", signer.socket.to_str().unwrap()]);
        signers.push(signer);
        servers.push(server);
    }
    let addrs: Vec<String> = servers
        .iter()
        .map(|s| s.url().trim_start_matches("http://").to_owned())
        .collect();
    let proxy = TestProxy::nginx_replicas([&addrs[0], &addrs[1], &addrs[2]]);
    let key = signers[0].public_key.clone();

    let fresh = tempfile::tempdir().unwrap();
    let mut client = nix_command("nix")
        .args(["copy", "--from", &proxy.url(), "--to"])
        .arg(fresh.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &key])
        .args(NO_NARINFO_CACHE)
        .arg(&top)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the narinfo lookups (one per path), into the NAR downloads:
    // kill the first replica, as a crash would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while proxy.requests_logged() < 22 + 4 {
        assert!(
            client.try_wait().unwrap().is_none(),
            "the copy ended before a replica could be killed"
        );
        assert!(std::time::Instant::now() < deadline, "the client is stuck");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(servers.remove(0));
    let out = client.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the copy failed after a replica died:\n{}\n--- nginx ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    let copied = run_stdout(
        nix_command("nix-store")
            .arg("--store")
            .arg(fresh.path())
            .args(["-qR", &top]),
    );
    assert_eq!(copied.lines().count(), 22);
    run(nix_command("nix-store")
        .arg("--store")
        .arg(fresh.path())
        .args(["--verify", "--check-contents"]));
    // nginx saw the dead replica and moved on.
    assert!(
        proxy.log().contains(&addrs[0]),
        "nginx never noticed the dead replica:\n{}",
        proxy.log()
    );
}
