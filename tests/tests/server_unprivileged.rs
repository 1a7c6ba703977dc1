//! An unprivileged larder-server on a store whose DB nobody holds open: the
//! WAL index (`db.sqlite-shm`) is missing and `nobody` may not create it in
//! root's DB dir. Without help the server refuses to start with a message
//! that says the fix; after `larder-server --check-config` as root (what the
//! systemd units run in ExecStartPre=+) it starts, and keeps reading while
//! Nix adds paths, because its open connections keep the index in place.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use larder_tests::process::{binary, binary_for_any_user};
use larder_tests::server::LarderServer;
use larder_tests::{TestStore, narinfo_url, run, shell_derivation};

const NOBODY: (u32, u32) = (65534, 65534);

#[test]
fn check_config_as_root_lets_an_unprivileged_server_read_the_db() {
    let store = TestStore::new();
    let first = store
        .build_expr(&shell_derivation("first", "echo 1 > $out"))
        .remove(0);
    fs::set_permissions(store.root(), fs::Permissions::from_mode(0o755)).unwrap();
    let shm = store.root().join("nix/var/nix/db/db.sqlite-shm");
    assert!(
        !shm.exists(),
        "Nix left its WAL index behind; the test needs an idle DB"
    );

    let refused = Command::new(binary_for_any_user("larder-server"))
        .args(["--bind", "127.0.0.1:0", "--store-root"])
        .arg(store.root())
        .uid(NOBODY.0)
        .gid(NOBODY.1)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "started without a WAL index: {err}"
    );
    assert!(
        err.contains("db.sqlite-shm") && err.contains("--check-config"),
        "{err}"
    );

    let checked = run(Command::new(binary("larder-server"))
        .arg("--check-config")
        .arg("--store-root")
        .arg(store.root()));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("configuration OK"));
    assert!(shm.exists(), "--check-config as root creates the WAL index");

    let server = LarderServer::start_as(&store, &[], &[], Some(NOBODY));
    assert_eq!(server.get(&narinfo_url(&first), &[]).status, 200);

    // Nix opens and closes the DB; the server's connections keep the index.
    let later = store
        .build_expr(&shell_derivation("later", "echo 2 > $out"))
        .remove(0);
    assert!(shm.exists());
    let reply = server.get(&narinfo_url(&later), &[]);
    assert_eq!(reply.status, 200, "{}", server.log());
}

#[test]
fn signer_check_reports_keys_and_store() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = larder_tests::signer::generate_key(dir.path(), "check-1");
    let out = run(Command::new(binary("larder-signer"))
        .arg("check")
        .arg("--key-file")
        .arg(&key)
        .arg("--store-root")
        .arg(store.root()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("check-1") && text.contains("store DB readable"),
        "{text}"
    );
}
