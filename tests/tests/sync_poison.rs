//! One path the target refuses must not hold back the rest of its batch:
//! a `file://` cache with a directory where one path's narinfo would go
//! makes every `nix copy` (and `nix path-info`) naming that path fail,
//! while the cache itself still answers. The other paths of the batch
//! arrive; the refused one stays queued with its own error.

use std::time::Duration;

use larder_tests::TestStore;
use larder_tests::fixtures::file_uri;
use larder_tests::process::wait_until;
use larder_tests::run;
use larder_tests::sshd::free_port;
use larder_tests::sync::{SyncSetup, arrivals, build_many, narinfo_in, wait_for_arrival};

#[test]
fn a_refused_path_is_isolated_and_the_rest_of_its_batch_arrives() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let cache = tempfile::tempdir().unwrap();
    let paths = build_many(&store, "poison", 6);
    assert_eq!(paths.len(), 6);
    let bad = paths[2].clone();
    let good: Vec<String> = paths.iter().filter(|p| **p != bad).cloned().collect();
    std::fs::create_dir(narinfo_in(cache.path(), &bad)).unwrap();

    // All six queued before the watcher starts, so they form one batch.
    let mut enqueue: Vec<&str> = vec!["enqueue"];
    enqueue.extend(paths.iter().map(String::as_str));
    run(&mut setup.command(&enqueue));
    assert!(setup.status().contains("pending: 6"));

    let listen = format!("127.0.0.1:{}", free_port());
    let mut watcher = setup.watch(&[
        "--to",
        &file_uri(cache.path()),
        "--batch-size",
        "6",
        "--metrics-listen",
        &listen,
    ]);
    wait_for_arrival(cache.path(), &good, Duration::from_secs(60), &mut watcher);
    setup.wait_for_status(&mut watcher, |s| {
        s.contains("pending: 1") && s.contains(&bad)
    });
    let status = setup.status();
    assert!(
        status.contains("corrupt"),
        "the refused path's own error: {status}"
    );
    assert!(
        std::fs::metadata(narinfo_in(cache.path(), &bad))
            .unwrap()
            .is_dir(),
        "the refused path was not written"
    );
    assert_eq!(arrivals(cache.path(), &good).iter().flatten().count(), 5);

    let metrics = || {
        ureq::get(&format!("http://{listen}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    };
    // The metrics follow the queue at the end of the step.
    wait_until(&mut watcher.process, || {
        metrics().contains("larder_sync_pushed_total 5")
    });
    let metrics = metrics();
    assert!(metrics.contains("larder_sync_queue_depth 1"), "{metrics}");
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("larder_sync_push_failures_total "))
        .expect("push_failures metric")
        .parse()
        .unwrap();
    assert!(failures >= 1, "{metrics}");
}

#[test]
fn a_target_that_does_not_answer_fails_the_batch_whole_without_bisecting() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(&cache, "not a directory").unwrap();
    let paths = build_many(&store, "down", 4);
    let mut enqueue: Vec<&str> = vec!["enqueue"];
    enqueue.extend(paths.iter().map(String::as_str));
    run(&mut setup.command(&enqueue));

    // A target that goes away while watching (at start it would be refused).
    let mut watcher = setup.watch(&[
        "--to",
        &file_uri(&cache),
        "--batch-size",
        "4",
        "--no-target-check",
    ]);
    watcher.wait_for_log("target does not answer");
    watcher.wait_for_log("push failed");
    let status = setup.status();
    assert!(status.contains("pending: 4"), "{status}");
    let log = watcher.log();
    // A failure's fields follow Nix's multi-line stderr in its log record.
    assert_eq!(
        log.matches("push failed").count(),
        log.matches("count=4 first=").count(),
        "the batch was split although the target is down:\n{log}"
    );
}
