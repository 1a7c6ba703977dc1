//! SIGHUP does not kill larder-sync's long-running commands (found by the
//! hostile-input pass: issue 11 fixed it for larder-server and the signer,
//! but `receive` and `watch` still died with exit 129 and no log line).
//! They log that the hangup is ignored and keep working.

use larder_tests::TestStore;
use larder_tests::fixtures::file_uri;
use larder_tests::receive::{TOKEN, TestReceiver};
use larder_tests::sync::SyncSetup;

const IGNORED: &str = "SIGHUP ignored";

#[test]
fn receive_logs_and_ignores_a_hangup() {
    let store = TestStore::new();
    let mut receiver = TestReceiver::start(&store, &[]);
    for _ in 0..3 {
        receiver.signal("HUP");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !receiver.log().contains(IGNORED) {
        receiver.assert_alive();
        assert!(
            std::time::Instant::now() < deadline,
            "no log line for SIGHUP:\n{}",
            receiver.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    receiver.assert_alive();
    let reply = ureq::get(&format!("{}/nix-cache-info", receiver.url()))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("the receiver still answers");
    assert_eq!(reply.status(), 200);
}

#[test]
fn watch_logs_and_ignores_a_hangup() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let cache = tempfile::tempdir().unwrap();
    let mut watch = setup.watch(&["--to", &file_uri(cache.path())]);
    watch.wait_for_log("watching");
    watch.process.signal("HUP");
    watch.wait_for_log(IGNORED);
    watch.process.assert_alive();
    let alive = format!("watcher: alive (pid {})", watch.process.pid());
    setup.wait_for_status(&mut watch, |s| s.contains(&alive));
}
