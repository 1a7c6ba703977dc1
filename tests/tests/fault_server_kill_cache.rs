//! kill -9 of larder-server while it fills the compressed-NAR cache (a
//! `.nar.zst` compressed on the fly, `Content-Encoding: zstd`, and a
//! `Range` that fills before serving), at random points: the client's
//! download is cut, and after a restart on the same `--cache-dir` every
//! answer is whole and byte-identical to `nix store dump-path`: nothing
//! partial is ever served. `LARDER_KILL_ROUNDS` sets the number of kills
//! (default 3; the long run in docs/reliability.md used 100).

use std::path::Path;
use std::process::Command;

use larder_store::narinfo::NarInfo;
use larder_tests::interrupted::get_interrupted;
use larder_tests::server::LarderServer;
use larder_tests::{TestStore, narinfo_url, run, shell_derivation};
use rand::Rng;

fn rounds() -> usize {
    std::env::var("LARDER_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn start(store: &TestStore, cache: &Path) -> LarderServer {
    LarderServer::start(
        store,
        &[
            "--compression",
            "zstd",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    )
}

/// Every way of getting the compressed NAR gives the whole, right bytes.
fn assert_served_whole(server: &LarderServer, path: &str, dump: &[u8]) {
    let info: NarInfo = server.get(&narinfo_url(path), &[]).text().parse().unwrap();
    let zst = format!("/{}", info.url);
    let identity = zst.replace(".nar.zst?", ".nar?");
    let whole = server.get(&zst, &[]);
    assert_eq!(whole.status, 200);
    assert!(zstd::decode_all(&whole.body[..]).unwrap() == dump, "{zst}");
    let encoded = server.get(&identity, &[("Accept-Encoding", "zstd")]);
    assert!(
        zstd::decode_all(&encoded.body[..]).unwrap() == dump,
        "{identity}"
    );
    let plain = server.get(&identity, &[]);
    assert!(plain.body == dump);
    let tail = server.get(&zst, &[("Range", "bytes=1000-")]);
    match tail.status {
        206 => assert!(tail.body == whole.body[1000..], "range of the cached file"),
        200 => assert!(tail.body == whole.body),
        s => panic!("range: {s}"),
    }
}

#[test]
fn kill_9_while_filling_the_cache_never_serves_a_partial_file() {
    let store = TestStore::new();
    let script = "mkdir $out; i=0; while [ $i -lt 64 ]; do \
                  head -c 262144 /dev/urandom > $out/f$i; i=$((i+1)); done";
    let path = store
        .build_expr(&shell_derivation("kill-fill", script))
        .remove(0);
    let dump = run(store.nix("nix").args(["store", "dump-path"]).arg(&path)).stdout;
    let cache = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    for round in 0..rounds() {
        let mut server = start(&store, cache.path());
        // A restart removed the leftovers of the last kill.
        let tmp = std::fs::read_dir(cache.path().join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "round {round}: fills left in tmp/");
        assert_served_whole(&server, &path, &dump);
        // Empty the cache so that the next request fills it again.
        drop(server);
        for e in std::fs::read_dir(cache.path()).unwrap() {
            let e = e.unwrap().path();
            if e.extension().is_some_and(|x| x == "zst") {
                std::fs::remove_file(e).unwrap();
            }
        }
        server = start(&store, cache.path());
        let info: NarInfo = server.get(&narinfo_url(&path), &[]).text().parse().unwrap();
        let zst = format!("/{}", info.url);
        let identity = zst.replace(".nar.zst?", ".nar?");
        let pid = server.pid().to_string();
        let kill = || {
            run(Command::new("kill").args(["-9", &pid]));
        };
        let first = rng.gen_range(0..dump.len() / 2);
        let d = match round % 3 {
            0 => get_interrupted(server.url(), &zst, &[], first, kill),
            1 => get_interrupted(
                server.url(),
                &identity,
                &[("Accept-Encoding", "zstd")],
                first,
                kill,
            ),
            _ => {
                // The range waits for a whole fill before its head: kill
                // while the fill runs.
                let url = server.url().to_owned();
                let zst = zst.clone();
                let client = std::thread::spawn(move || {
                    get_interrupted(&url, &zst, &[("Range", "bytes=0-99")], 0, || ())
                });
                std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(0..300)));
                kill();
                client.join().unwrap()
            }
        };
        assert!(
            !(d.status == 200
                && d.complete
                && zstd::decode_all(&d.body[..]).ok().as_deref() != Some(&dump[..])),
            "round {round}: a complete-looking wrong body"
        );
        if d.complete && d.status == 200 {
            eprintln!("round {round}: the kill came after the whole body");
        }
        assert!(server.wait_exit().code().is_none(), "killed by a signal");
    }
    let server = start(&store, cache.path());
    assert_served_whole(&server, &path, &dump);
}
