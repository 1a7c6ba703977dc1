//! `larder-sync watch` against a real chroot store and a `file://` cache:
//! 200 built paths all arrive; kill -9 mid-push and a restart lose nothing;
//! an unusable target gets the paths once it is back. The 200-path test
//! prints the median registration→arrival time and the idle CPU use.

use std::time::Duration;

use larder_tests::TestStore;
use larder_tests::fixtures::file_uri;
use larder_tests::process::wait_until;
use larder_tests::sshd::free_port;
use larder_tests::sync::{
    RegistrationClock, SyncProcess, SyncSetup, arrivals, build_many, cpu_ticks, wait_for_arrival,
};

fn start_watch(setup: &SyncSetup, args: &[&str]) -> SyncProcess {
    let mut watcher = setup.watch(args);
    watcher.wait_for_log("watching");
    watcher
}

#[test]
fn two_hundred_built_paths_reach_the_target() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let cache = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut watcher = start_watch(
        &setup,
        &["--to", &file_uri(cache.path()), "--metrics-listen", &listen],
    );
    let clock = RegistrationClock::start(&store);

    let paths = build_many(&store, "watched", 200);
    assert_eq!(paths.len(), 200);
    wait_for_arrival(cache.path(), &paths, Duration::from_secs(120), &mut watcher);

    let mut latencies: Vec<Duration> = paths
        .iter()
        .zip(arrivals(cache.path(), &paths))
        .map(|(p, arrived)| {
            let registered = clock
                .registered_at(p)
                .unwrap_or_else(|| panic!("{p} never seen in the DB"));
            arrived
                .unwrap()
                .duration_since(registered)
                .unwrap_or_default()
        })
        .collect();
    latencies.sort();
    eprintln!(
        "registration -> arrival over 200 paths: median {:?}, p90 {:?}, max {:?}",
        latencies[100], latencies[180], latencies[199]
    );
    // The .drv files were not pushed.
    let drvs = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".narinfo")
        })
        .count();
    assert_eq!(drvs, 200, "only the 200 outputs, no .drv files");
    setup.wait_for_status(&mut watcher, |s| s.contains("pending: 0"));

    let metrics = ureq::get(&format!("http://{listen}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("larder_sync_pushed_total 200"),
        "{metrics}"
    );
    assert!(metrics.contains("larder_sync_queue_depth 0"), "{metrics}");
    assert!(
        metrics.contains("larder_sync_push_failures_total 0"),
        "{metrics}"
    );

    // Idle CPU over 10 s with nothing to do.
    let pid = watcher.process.pid();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let ticks = cpu_ticks(pid) - before;
    eprintln!(
        "watcher idle CPU: {ticks} ticks (1/100 s) in 10 s = {:.2}% of a core",
        ticks as f64 / 10.0
    );
    watcher.process.assert_alive();
}

#[test]
fn kill_9_mid_push_and_restart_loses_nothing() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let cache = tempfile::tempdir().unwrap();
    let to = file_uri(cache.path());
    let mut watcher = start_watch(&setup, &["--to", &to, "--batch-size", "2"]);

    let paths = std::thread::scope(|s| {
        let builder = s.spawn(|| build_many(&store, "killed", 200));
        // Kill the watcher once some, not all, paths are pushed.
        let pushed_some = || {
            std::fs::read_dir(cache.path())
                .map(|d| {
                    d.filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .ends_with(".narinfo")
                    })
                    .count()
                })
                .unwrap_or(0)
                >= 10
        };
        wait_until(&mut watcher.process, pushed_some);
        watcher.process.kill();
        builder.join().unwrap()
    });
    let arrived_before = arrivals(cache.path(), &paths)
        .iter()
        .filter(|a| a.is_some())
        .count();
    assert!(
        arrived_before < 200,
        "all paths arrived before the kill; the test proves nothing"
    );
    eprintln!("{arrived_before} of 200 paths had arrived when the watcher was killed");

    let mut restarted = start_watch(&setup, &["--to", &to]);
    wait_for_arrival(
        cache.path(),
        &paths,
        Duration::from_secs(120),
        &mut restarted,
    );
    setup.wait_for_status(&mut restarted, |s| s.contains("pending: 0"));
}

#[test]
fn paths_built_while_the_target_is_down_arrive_once_it_is_back() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let mut watcher = start_watch(&setup, &["--to", &file_uri(&cache)]);
    let first = build_many(&store, "up", 3);
    wait_for_arrival(&cache, &first, Duration::from_secs(60), &mut watcher);

    // Down: the cache directory is replaced by a plain file.
    let away = dir.path().join("cache.away");
    std::fs::rename(&cache, &away).unwrap();
    std::fs::write(&cache, "not a directory").unwrap();
    let during = build_many(&store, "down", 20);
    setup.wait_for_status(&mut watcher, |status| {
        status.contains("pending: 20") && !status.contains("last error: -")
    });
    assert!(arrivals(&away, &during).iter().all(Option::is_none));

    // Back: the paths arrive with no restart.
    std::fs::remove_file(&cache).unwrap();
    std::fs::rename(&away, &cache).unwrap();
    wait_for_arrival(&cache, &during, Duration::from_secs(60), &mut watcher);
    setup.wait_for_status(&mut watcher, |s| s.contains("pending: 0"));
}

#[test]
fn first_start_pushes_from_now_on_and_from_start_pushes_the_rest() {
    let store = TestStore::new();
    let setup = SyncSetup::new(&store);
    let cache = tempfile::tempdir().unwrap();
    let to = file_uri(cache.path());
    let old = build_many(&store, "old", 3);
    let mut watcher = start_watch(&setup, &["--to", &to]);
    let new = build_many(&store, "new", 2);
    wait_for_arrival(cache.path(), &new, Duration::from_secs(60), &mut watcher);
    assert!(arrivals(cache.path(), &old).iter().all(Option::is_none));
    watcher.process.kill();

    let out = setup.output(&["watch-exec", "--to", &to, "--from-start", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(arrivals(cache.path(), &old).iter().all(Option::is_some));
    // The three old ones were copied; the two already there were skipped.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("pushed count=3"), "{log}");
    assert!(!log.contains("pushed count=5"), "{log}");
}
