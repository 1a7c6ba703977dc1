//! Downloads from larder-server by the real Nix and by HTTP clients: every
//! NAR must be byte-identical to `nix-store --dump`, whichever way it is
//! compressed or resumed, and a failure mid-stream must be a failure.

use std::io::Read;

use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::three_path_closure;
use larder_tests::server::LarderServer;
use larder_tests::{TestStore, hash_part, nix_command, run, run_stdout};

fn closure(store: &TestStore, path: &str) -> Vec<String> {
    let out = run_stdout(store.nix("nix-store").args(["-qR"]).arg(path));
    out.lines().map(str::to_owned).collect()
}

fn dump(store: &TestStore, path: &str) -> Vec<u8> {
    run(store.nix("nix").args(["store", "dump-path"]).arg(path)).stdout
}

fn narinfo(server: &LarderServer, path: &str) -> NarInfo {
    let reply = server.get(&format!("/{}.narinfo", hash_part(path)), &[]);
    assert_eq!(reply.status, 200, "{path}");
    reply.text().parse().unwrap()
}

/// `nix copy --from` the server into a fresh chroot store; every path of
/// the closure must arrive with the source's exact NAR.
fn copy_closure_through(flags: &[&str], expected_compression: &str) {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, flags);
    let paths = closure(&store, &top);
    assert_eq!(paths.len(), 3);
    for path in &paths {
        assert_eq!(narinfo(&server, path).compression, expected_compression);
    }
    let client = tempfile::tempdir().unwrap();
    run(nix_command("nix")
        .args([
            "copy",
            "--no-check-sigs",
            "--option",
            "require-sigs",
            "false",
        ])
        .args(["--from", server.url(), "--to"])
        .arg(client.path())
        .arg(&top));
    for path in &paths {
        let copied = run(nix_command("nix")
            .args(["store", "dump-path", "--store"])
            .arg(client.path())
            .arg(path))
        .stdout;
        assert!(
            copied == dump(&store, path),
            "{path} differs after nix copy"
        );
    }
}

#[test]
fn nix_copy_with_identity_nars() {
    copy_closure_through(&[], "none");
}

#[test]
fn nix_copy_with_narinfo_level_zstd() {
    copy_closure_through(&["--compression", "zstd"], "zstd");
}

#[test]
fn content_encoding_zstd_for_clients_that_accept_it() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, &[]);
    for path in closure(&store, &top) {
        let url = format!("/{}", narinfo(&server, &path).url);
        let reply = server.get(&url, &[("Accept-Encoding", "gzip, zstd")]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), Some("zstd"));
        assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
        let nar = zstd::decode_all(&reply.body[..]).unwrap();
        assert!(nar == dump(&store, &path), "{path}");
        // Without zstd in Accept-Encoding: identity, with its length.
        let plain = server.get(&url, &[("Accept-Encoding", "gzip")]);
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
        assert!(plain.body == nar);
    }
}

/// A store path with one large file, so that a download is far from done
/// when the client has read its first megabyte.
fn big_path(store: &TestStore) -> String {
    let script = "mkdir $out; head -c 100000000 /dev/urandom > $out/big; echo tail > $out/t";
    store
        .build_expr(&larder_tests::shell_derivation("big", script))
        .remove(0)
}

#[test]
fn a_cut_download_resumed_with_range_is_the_nar() {
    let store = TestStore::new();
    let path = big_path(&store);
    let server = LarderServer::start(&store, &[]);
    let info = narinfo(&server, &path);
    let url = format!("/{}", info.url);
    let expected = dump(&store, &path);

    // Read half, then drop the connection.
    let response = server.request("GET", &url).call().unwrap();
    assert_eq!(response.header("accept-ranges"), Some("bytes"));
    let half = (info.nar_size / 2) as usize;
    let mut got = vec![0; half];
    response.into_reader().read_exact(&mut got).unwrap();

    let rest = server.get(&url, &[("Range", &format!("bytes={half}-"))]);
    assert_eq!(rest.status, 206);
    let content_range = format!("bytes {half}-{}/{}", info.nar_size - 1, info.nar_size);
    assert_eq!(rest.header("content-range"), Some(content_range.as_str()));
    got.extend_from_slice(&rest.body);
    assert!(got == expected, "resumed download differs from the NAR");

    // HEAD gives the length and reads nothing.
    let head = server.request("HEAD", &url).call().unwrap();
    let size = info.nar_size.to_string();
    assert_eq!(head.header("content-length"), Some(size.as_str()));

    // The whole NAR through multithreaded zstd.
    let zstd = server.get(&url, &[("Accept-Encoding", "zstd")]);
    assert_eq!(zstd.header("content-encoding"), Some("zstd"));
    assert!(zstd::decode_all(&zstd.body[..]).unwrap() == expected);

    // A middle slice and a suffix.
    let mid = server.get(&url, &[("Range", "bytes=1000-1999")]);
    assert_eq!(mid.status, 206);
    assert!(mid.body == expected[1000..2000]);
    let suffix = server.get(&url, &[("Range", "bytes=-10")]);
    assert!(suffix.body == expected[expected.len() - 10..]);

    // Several ranges, or another unit, are ignored (200, the whole NAR):
    // `server_ranges.rs`.
    for (range, status) in [
        (format!("bytes={}-", info.nar_size), 416),
        ("bytes=9-3".to_owned(), 400),
    ] {
        let reply = server.get(&url, &[("Range", &range)]);
        assert_eq!(reply.status, status, "{range}");
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{range}");
    }
    let unsatisfiable = server.get(&url, &[("Range", "bytes=999999999-")]);
    let star = format!("bytes */{}", info.nar_size);
    assert_eq!(unsatisfiable.header("content-range"), Some(star.as_str()));
}

#[test]
fn a_file_changing_mid_stream_aborts_the_download() {
    let store = TestStore::new();
    let path = big_path(&store);
    let server = LarderServer::start(&store, &[]);
    let info = narinfo(&server, &path);
    let big = store.real_path(&path).join("big");
    let original = std::fs::read(&big).unwrap();

    for accept in ["identity", "zstd"] {
        let response = server
            .request("GET", &format!("/{}", info.url))
            .set("Accept-Encoding", accept)
            .call()
            .unwrap();
        let mut reader = response.into_reader();
        let mut first = vec![0; 1 << 20];
        reader.read_exact(&mut first).unwrap();
        // Shrink the big file under the running dump (as a GC or a broken
        // disk might), then read on: the client must see an error.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(1000)
            .unwrap();
        let mut rest = Vec::new();
        let result = reader.read_to_end(&mut rest);
        assert!(
            result.is_err(),
            "{accept}: a truncated body must not end cleanly (got {} more bytes)",
            rest.len()
        );
        // Restore the file for the next round.
        std::fs::write(&big, &original).unwrap();
    }
    let metrics = server.get("/metrics", &[]).text();
    assert!(
        metrics.contains("larder_aborted_streams_total{reason=\"error\",route=\"/nar/{file}\"} 2"),
        "{metrics}"
    );
}
