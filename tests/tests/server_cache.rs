//! The compressed-NAR cache: the first zstd download fills it, later ones
//! are served from it as static files, and an aborted download never
//! leaves a file behind that could be served.

use std::io::Read;

use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::{cached_nars, three_path_closure, wait_for_cached_nars};
use larder_tests::server::LarderServer;
use larder_tests::{TestStore, hash_part, nix_command, run, run_stdout, shell_derivation};

#[test]
fn second_download_comes_from_the_cache() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let server = LarderServer::start(&store, &["--compression", "zstd", "--cache-dir", cache_dir]);

    for round in 0..2 {
        let client = tempfile::tempdir().unwrap();
        run(nix_command("nix")
            .args(["copy", "--no-check-sigs", "--from", server.url(), "--to"])
            .arg(client.path())
            .arg(&top));
        let misses = server.metric("larder_nar_cache_misses_total");
        let hits = server.metric("larder_nar_cache_hits_total");
        assert_eq!((misses, hits), (3.0, 3.0 * round as f64), "round {round}");
        // A NAR is published after its body ended (the client does not
        // wait for the file's fsync): give the last one a moment.
        wait_for_cached_nars(cache.path(), 3);
    }
    assert_eq!(cached_nars(cache.path()).len(), 3);

    // A client sending Accept-Encoding: zstd gets the same cached bytes,
    // now with a Content-Length.
    let closure = run_stdout(store.nix("nix-store").args(["-qR"]).arg(&top));
    for path in closure.lines() {
        let narinfo: NarInfo = server
            .get(&format!("/{}.narinfo", hash_part(path)), &[])
            .text()
            .parse()
            .unwrap();
        let plain_url = format!("/{}", narinfo.url.replace(".nar.zst?", ".nar?"));
        let reply = server.get(&plain_url, &[("Accept-Encoding", "zstd")]);
        assert_eq!(reply.header("content-encoding"), Some("zstd"));
        let length = reply.body.len().to_string();
        assert_eq!(reply.header("content-length"), Some(length.as_str()));
        let dump = run(store.nix("nix").args(["store", "dump-path"]).arg(path)).stdout;
        assert!(zstd::decode_all(&reply.body[..]).unwrap() == dump, "{path}");
    }
    assert_eq!(server.metric("larder_nar_cache_hits_total"), 6.0);
}

#[test]
fn an_aborted_download_is_not_cached() {
    let store = TestStore::new();
    let script = "mkdir $out; head -c 60000000 /dev/urandom > $out/big";
    let path = store.build_expr(&shell_derivation("big", script)).remove(0);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let server = LarderServer::start(&store, &["--compression", "zstd", "--cache-dir", cache_dir]);
    let narinfo: NarInfo = server
        .get(&format!("/{}.narinfo", hash_part(&path)), &[])
        .text()
        .parse()
        .unwrap();
    let response = server
        .request("GET", &format!("/{}", narinfo.url))
        .call()
        .unwrap();
    let mut first = vec![0; 1 << 20];
    response.into_reader().read_exact(&mut first).unwrap();
    // The reader is dropped: the connection closes mid-body. Wait until the
    // server has cleaned up the partial fill.
    let tmp = cache.path().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&tmp).unwrap().count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "partial fill never removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(cached_nars(cache.path()).is_empty());

    // A complete download then fills the cache with the exact stream.
    let full = server.get(&format!("/{}", narinfo.url), &[]);
    let dump = run(store.nix("nix").args(["store", "dump-path"]).arg(&path)).stdout;
    assert!(zstd::decode_all(&full.body[..]).unwrap() == dump);
    let files = cached_nars(cache.path());
    assert_eq!(files.len(), 1);
    assert!(std::fs::read(cache.path().join(&files[0])).unwrap() == full.body);
}
