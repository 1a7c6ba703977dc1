//! kill -9 of `larder-sync watch` at random points while paths are built
//! and pushed to `larder-sync receive` (the deployment the README
//! describes): after each kill the watcher restarts, and in the end every
//! built path is valid in the cache host's store, verified (`nix-store
//! --verify-path`), with the builder's NAR hash and references: no path
//! lost, none imported half. `LARDER_WATCH_KILLS` sets the number of kills
//! (default 3; the long run in docs/reliability.md used 100).

use std::time::{Duration, Instant};

use larder_tests::receive::{PUSHER, TOKEN, TestReceiver};
use larder_tests::sync::{SyncProcess, SyncSetup, build_many};
use larder_tests::{TestStore, larder_nix_config, run, run_stdout};
use rand::Rng;
use serde_json::Value;

fn kills() -> usize {
    std::env::var("LARDER_WATCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn invalid_on(store: &TestStore, paths: &[String]) -> usize {
    let out = store
        .nix("nix-store")
        .args(["--check-validity", "--print-invalid"])
        .args(paths)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `nix path-info --json` of `paths`, by path: NAR hash, size, references.
fn infos(store: &TestStore, paths: &[String]) -> Vec<(String, Value, Value, Value)> {
    let json: Value = serde_json::from_str(&run_stdout(
        store.nix("nix").args(["path-info", "--json"]).args(paths),
    ))
    .unwrap();
    let mut rows: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_owned(),
                i["narHash"].clone(),
                i["narSize"].clone(),
                i["references"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[test]
fn kill_9_of_the_watcher_at_random_points_loses_nothing() {
    let builder = TestStore::new();
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let netrc = receiver.netrc(PUSHER, TOKEN);
    let nix_config = format!("{}netrc-file = {}\n", larder_nix_config(), netrc.display());
    let setup = SyncSetup::new(&builder);
    let to = receiver.url();
    // Later starts resume from the durable queue's checkpoint.
    let start = || -> SyncProcess {
        let args = ["--to", &to, "--batch-size", "3"];
        let mut watcher = setup.watch_with_env(&args, &[("NIX_CONFIG", &nix_config)]);
        watcher.wait_for_log("watching");
        watcher
    };
    let mut rng = rand::thread_rng();
    let mut watcher = start();
    let mut built = Vec::new();
    for round in 0..kills() {
        let delay = Duration::from_millis(rng.gen_range(0..2000));
        let batch = std::thread::scope(|s| {
            let b = s.spawn(|| build_many(&builder, &format!("kill{round}"), 12));
            std::thread::sleep(delay);
            watcher.process.kill();
            b.join().unwrap()
        });
        built.extend(batch);
        let missing = invalid_on(&host, &built);
        eprintln!(
            "round {round}: killed after {delay:?}, {missing} of {} not yet on the host",
            built.len()
        );
        watcher = start();
    }
    let deadline = Instant::now() + Duration::from_secs(180 + built.len() as u64);
    while invalid_on(&host, &built) > 0 {
        watcher.process.assert_alive();
        assert!(
            Instant::now() < deadline,
            "{} of {} paths never arrived\n{}",
            invalid_on(&host, &built),
            built.len(),
            watcher.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in &built {
        run(host.nix("nix-store").args(["--verify-path", path]));
    }
    assert_eq!(infos(&host, &built), infos(&builder, &built));
    assert!(!receiver.log().contains("panicked"));
}
