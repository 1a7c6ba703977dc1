//! larder-server with larder-signer, as deployed: the server runs as an
//! unprivileged user that cannot read the key, the real Nix accepts what it
//! serves with `require-sigs`, and a signer crash means 503s with
//! `--signer-down unavailable` (never unsigned 200s) until it is back, with
//! no server restart.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use larder_tests::fixtures::{copy_with_sigs, three_path_closure};
use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, hash_part, shell_derivation};

/// `nobody:nogroup` on Debian.
const NOBODY: (u32, u32) = (65534, 65534);

/// Let `nobody` reach the store (files are world-readable already) and the
/// signer's socket; the key stays root's, mode 0600.
///
/// An unprivileged reader of a WAL-mode SQLite DB needs its `-shm` index to
/// exist (it cannot create it in root's DB dir). Here the signer, running
/// as root, keeps its DB connection open, which keeps `-shm` in place, as
/// Nix's own processes do while they run. See README "Running as an
/// unprivileged user".
fn open_up(store: &TestStore, signer: &TestSigner) {
    fs::set_permissions(store.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(signer.socket_dir(), fs::Permissions::from_mode(0o755)).unwrap();
}

fn start_signer(store: &TestStore) -> TestSigner {
    let signer = TestSigner::start(store, &["--socket-group", &NOBODY.1.to_string()]);
    open_up(store, &signer);
    signer
}

fn start_server(store: &TestStore, signer: &TestSigner, extra: &[&str]) -> LarderServer {
    let socket = signer.socket.to_str().unwrap();
    let mut flags = vec!["--signer-socket", socket, "--signer-retry-after-secs", "7"];
    flags.extend_from_slice(extra);
    LarderServer::start_as(store, &flags, &[], Some(NOBODY))
}

#[test]
fn nix_accepts_signed_paths_from_a_server_that_cannot_read_the_key() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = start_signer(&store);
    let server = start_server(&store, &signer, &[]);

    // The server runs as nobody, and nobody cannot read the key file.
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    let read_as_nobody = Command::new("cat")
        .arg(&signer.key_file)
        .uid(NOBODY.0)
        .gid(NOBODY.1)
        .output()
        .unwrap();
    assert!(
        !read_as_nobody.status.success(),
        "nobody could read the key"
    );
    // Nor has the server process the key open or mapped.
    let key = signer.key_file.to_str().unwrap();
    for entry in fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap() {
        let target = fs::read_link(entry.unwrap().path()).unwrap_or_default();
        assert_ne!(target.to_str(), Some(key), "the server holds the key open");
    }
    let maps = fs::read_to_string(format!("/proc/{}/maps", server.pid())).unwrap();
    assert!(!maps.contains(key), "the server maps the key");

    let narinfo = server.get(&format!("/{}.narinfo", hash_part(&top)), &[]);
    assert_eq!(narinfo.status, 200, "{}", server.log());
    assert!(
        narinfo.text().contains("Sig: larder-test-1:"),
        "{}",
        narinfo.text()
    );

    // Only the signer's key is trusted, signatures are required.
    let out = copy_with_sigs(server.url(), &top, &signer.public_key);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );

    // The landing page names the key, and /metrics carries the signer's.
    let landing = server.get("/", &[]).text();
    assert!(landing.contains(&signer.public_key), "{landing}");
    let metrics = server.get("/metrics", &[]).text();
    assert!(
        metrics.contains("larder_signer_signatures_total{key=\"larder-test-1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("larder_signature_cache_total{result=\"hit\"}"),
        "{metrics}"
    );
}

#[test]
fn signer_down_means_503_then_recovery_without_restart() {
    let store = TestStore::new();
    let before = store
        .build_expr(&shell_derivation("before", "echo 1 > $out"))
        .remove(0);
    let mut signer = start_signer(&store);
    let server = start_server(&store, &signer, &["--signer-down", "unavailable"]);
    let url = |p: &str| format!("/{}.narinfo", hash_part(p));
    assert_eq!(server.get(&url(&before), &[]).status, 200);

    signer.kill();
    // Registered while the signer is down: not signed ahead.
    let during = store
        .build_expr(&shell_derivation("during", "echo 2 > $out"))
        .remove(0);
    let down = server.get(&url(&during), &[]);
    assert_eq!(down.status, 503, "{}", down.text());
    assert_eq!(down.header("retry-after"), Some("7"));
    assert!(
        !down.text().contains("sock"),
        "no paths in error bodies: {}",
        down.text()
    );
    // A signature already cached is still served.
    assert_eq!(server.get(&url(&before), &[]).status, 200);

    signer.restart();
    open_up(&store, &signer);
    let back = server.get(&url(&during), &[]);
    assert_eq!(back.status, 200, "{}", server.log());
    assert!(back.text().contains("Sig: larder-test-1:"));
    let out = copy_with_sigs(server.url(), &during, &signer.public_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn signer_down_can_be_configured_to_serve_unsigned() {
    let store = TestStore::new();
    let mut signer = start_signer(&store);
    let server = start_server(&store, &signer, &["--signer-down", "unsigned"]);
    signer.kill();
    // Registered while the signer is down: not signed ahead.
    let path = store
        .build_expr(&shell_derivation("p", "echo 1 > $out"))
        .remove(0);
    let reply = server.get(&format!("/{}.narinfo", hash_part(&path)), &[]);
    assert_eq!(reply.status, 200);
    assert!(
        !reply.text().contains("Sig: larder-test-1:"),
        "{}",
        reply.text()
    );
}

#[test]
fn references_are_signed_ahead_of_their_narinfo_requests() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = start_signer(&store);
    let server = start_server(&store, &signer, &[]);
    let refs = larder_tests::run_stdout(store.nix("nix-store").args(["-q", "--references", &top]));
    let mid = refs.lines().next().expect("top refers to mid").to_owned();

    assert_eq!(
        server
            .get(&format!("/{}.narinfo", hash_part(&top)), &[])
            .status,
        200
    );
    let prefetch = r#"larder_signature_cache_total{result="prefetch"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.metric(prefetch) < 1.0 {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let hits = r#"larder_signature_cache_total{result="hit"}"#;
    let misses = r#"larder_signature_cache_total{result="miss"}"#;
    let (hits_before, misses_before) = (server.metric(hits), server.metric(misses));
    let reply = server.get(&format!("/{}.narinfo", hash_part(&mid)), &[]);
    assert!(
        reply.text().contains("Sig: larder-test-1:"),
        "{}",
        reply.text()
    );
    assert_eq!(
        server.metric(hits),
        hits_before + 1.0,
        "mid's signature was made ahead"
    );
    assert_eq!(server.metric(misses), misses_before);
}
