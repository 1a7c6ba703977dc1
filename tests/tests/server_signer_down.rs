//! What the real Nix 2.8 does with each `--signer-down` answer, larder
//! being its only substituter and the signer down: the reasons for the
//! default (`absent`, see README "larder-server" and `config::SignerDown`).
//!
//! - `absent` (404): the client builds locally; it caches the miss for
//!   `narinfo-cache-negative-ttl` only, so it substitutes again once the
//!   signer is back (shown here with that TTL at 0).
//! - `unavailable` (503): the client's build fails.
//! - `unsigned`: the client ignores the unsigned substitute and builds
//!   locally, but caches the unsigned narinfo (`narinfo-cache-positive-ttl`,
//!   30 days by default), so it keeps building locally after the signer is
//!   back.

use std::path::Path;
use std::process::Output;

use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, nix_command, shell_derivation};

const EXPR_NAME: &str = "signer-down-demo";

/// `nix-build` the demo derivation into a fresh store, with `url` as the
/// only substituter, signatures required, and `cache` as Nix's narinfo
/// disk cache.
fn client_build(url: &str, key: &str, cache: &Path) -> Output {
    let store = tempfile::tempdir().unwrap();
    nix_command("nix-build")
        .env("XDG_CACHE_HOME", cache)
        .arg("--store")
        .arg(store.path())
        .args(["--no-out-link", "-E"])
        .arg(shell_derivation(EXPR_NAME, "echo demo > $out"))
        .args(["--option", "substituters", url])
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", key])
        .args(["--option", "narinfo-cache-negative-ttl", "0"])
        .output()
        .unwrap()
}

fn built_locally(out: &Output) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stderr).contains("building '")
}

fn substituted(out: &Output) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stderr).contains("copying path")
}

fn show(out: &Output) -> String {
    format!("{}\n{}", out.status, String::from_utf8_lossy(&out.stderr))
}

/// The cache store holding the demo path, a signer, and a server with
/// `--signer-down mode`; the signer is killed (before the path is built).
fn setup(mode: &str) -> (TestStore, TestSigner, LarderServer) {
    let store = TestStore::new();
    let mut signer = TestSigner::start(&store, &[]);
    let socket = signer.socket.to_str().unwrap().to_owned();
    let server = LarderServer::start(
        &store,
        &[
            "--signer-socket",
            &socket,
            "--signer-down",
            mode,
            "--signer-retry-after-secs",
            "1",
            "--signer-key-check-secs",
            "1",
        ],
    );
    signer.kill();
    // Registered while the signer is down, so not signed ahead.
    store.build_expr(&shell_derivation(EXPR_NAME, "echo demo > $out"));
    (store, signer, server)
}

#[test]
fn absent_lets_the_client_build_then_substitute_when_the_signer_is_back() {
    let (_store, mut signer, server) = setup("absent");
    let cache = tempfile::tempdir().unwrap();
    let out = client_build(server.url(), &signer.public_key, cache.path());
    assert!(built_locally(&out), "{}", show(&out));
    signer.restart();
    let out = client_build(server.url(), &signer.public_key, cache.path());
    assert!(substituted(&out), "{}", show(&out));
}

#[test]
fn unavailable_fails_the_clients_build() {
    let (_store, signer, server) = setup("unavailable");
    let cache = tempfile::tempdir().unwrap();
    let out = client_build(server.url(), &signer.public_key, cache.path());
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        show(&out)
    );
}

#[test]
fn unsigned_builds_locally_and_the_client_remembers_the_unsigned_narinfo() {
    let (_store, mut signer, server) = setup("unsigned");
    let cache = tempfile::tempdir().unwrap();
    let out = client_build(server.url(), &signer.public_key, cache.path());
    assert!(built_locally(&out), "{}", show(&out));
    signer.restart();
    // Signed again on the server, but the client still has its cached,
    // unsigned narinfo.
    let out = client_build(server.url(), &signer.public_key, cache.path());
    assert!(built_locally(&out), "{}", show(&out));
    // A client without that cache substitutes.
    let fresh = tempfile::tempdir().unwrap();
    let out = client_build(server.url(), &signer.public_key, fresh.path());
    assert!(substituted(&out), "{}", show(&out));
}
