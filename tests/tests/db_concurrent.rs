//! Reading the store DB while the real Nix writes to it (WAL mode): every
//! lookup either misses a path not yet added or returns exactly what Nix
//! registered, and a watcher sees each new row once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use larder_store::db::StoreDb;
use larder_store::{StorePath, StorePathHash};
use larder_tests::{TestStore, run_stdout};
use serde_json::Value;

const PATHS: usize = 100;

/// `nix path-info --json` of each path, keyed by full path, without the
/// registration time (which differs between stores).
fn expected_infos(store: &TestStore, paths: &[String]) -> BTreeMap<String, Value> {
    let out = run_stdout(store.nix("nix").args(["path-info", "--json"]).args(paths));
    let infos: Vec<Value> = serde_json::from_str(&out).unwrap();
    infos
        .into_iter()
        .map(|v| (v["path"].as_str().unwrap().to_owned(), without_time(v)))
        .collect()
}

fn without_time(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("registrationTime");
    v
}

/// The state of one round of lookups, checked against the expected infos.
struct Round {
    found: usize,
}

async fn lookup_round(
    db: &StoreDb,
    hashes: &[(StorePathHash, String)],
    expected: &BTreeMap<String, Value>,
    added_before: usize,
) -> Round {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (hash, full)) in hashes.iter().enumerate() {
        let (db, hash, full) = (db.clone(), *hash, full.clone());
        tasks.spawn(async move { (i, full, db.path_info(&hash).await) });
    }
    let mut found = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, full, result) = joined.unwrap();
        match result.unwrap_or_else(|e| panic!("lookup of {full} failed: {e}")) {
            Some(info) => {
                let ours = without_time(serde_json::to_value(info.nix_json("/nix/store")).unwrap());
                assert_eq!(&ours, &expected[&full], "{full}");
                found += 1;
            }
            None => assert!(i >= added_before, "{full} was added but not found"),
        }
    }
    Round { found }
}

/// Poll the watcher API from `last`; return the new last id.
async fn watch(db: &StoreDb, last: i64, seen: &mut Vec<StorePath>) -> i64 {
    let page = db.paths_after(last, 7).await.unwrap();
    assert!(page.windows(2).all(|w| w[0].0 < w[1].0));
    let new_last = page.last().map_or(last, |(id, _)| *id);
    assert!(page.first().is_none_or(|(id, _)| *id > last));
    seen.extend(page.into_iter().map(|(_, p)| p));
    new_last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_stay_right_while_nix_adds_paths() {
    let files = tempfile::tempdir().unwrap();
    let names: Vec<_> = (0..PATHS)
        .map(|i| {
            let file = files.path().join(format!("f{i:03}"));
            std::fs::write(&file, format!("content {i}\n")).unwrap();
            file
        })
        .collect();
    // Learn the paths and their infos from a scratch store first.
    let scratch = TestStore::new();
    let paths = scratch.add(&names);
    let expected = expected_infos(&scratch, &paths);
    let loc = scratch.location();
    let hashes: Vec<_> = paths
        .iter()
        .map(|p| (*loc.parse_path(p).unwrap().hash(), p.clone()))
        .collect();

    let store = Arc::new(TestStore::new());
    let db = StoreDb::open(&store.location()).unwrap();
    let added = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (store, added) = (store.clone(), added.clone());
        std::thread::spawn(move || {
            for (i, name) in names.iter().enumerate() {
                store.add([name]);
                added.store(i + 1, Ordering::SeqCst);
            }
        })
    };

    let (mut last, mut seen, mut rounds, mut partial_rounds) = (0, Vec::new(), 0, 0);
    loop {
        let added_before = added.load(Ordering::SeqCst);
        let round = lookup_round(&db, &hashes, &expected, added_before).await;
        last = watch(&db, last, &mut seen).await;
        rounds += 1;
        if round.found > 0 && round.found < PATHS {
            partial_rounds += 1;
        }
        if added_before == PATHS {
            assert_eq!(round.found, PATHS);
            break;
        }
    }
    writer.join().unwrap();
    // Drain what the watcher has not seen yet, then compare.
    loop {
        let next = watch(&db, last, &mut seen).await;
        if next == last {
            break;
        }
        last = next;
    }
    assert_eq!(db.max_row_id().await.unwrap(), last);
    eprintln!("{rounds} rounds of {PATHS} lookups, {partial_rounds} while Nix was adding");
    assert!(partial_rounds > 0, "no lookup round overlapped the writes");
    assert_eq!(
        seen.len(),
        PATHS,
        "the watcher saw a row twice or missed one"
    );
    let seen: BTreeSet<String> = seen.iter().map(|p| format!("/nix/store/{p}")).collect();
    assert_eq!(seen, expected.keys().cloned().collect());
}
