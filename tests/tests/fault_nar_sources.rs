//! Faults under a download: the path garbage-collected, a file made
//! unreadable, a disk read error, and a full disk under the
//! compressed-NAR cache. In each, a client never gets a 200 that looks
//! complete but is short, nothing partial is cached, and the next request
//! gets a clean answer (404 once the path is gone).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::cached_nars;
use larder_tests::interrupted::{Download, get_interrupted};
use larder_tests::mounts::{FailingDisk, Tmpfs};
use larder_tests::process::binary;
use larder_tests::server::LarderServer;
use larder_tests::views::eventually;
use larder_tests::{TestStore, narinfo_url, run, shell_derivation};

const NOBODY: (u32, u32) = (65534, 65534);

/// A path of `files` random files of `kib` KiB each: big enough that the
/// server is still opening files when the test interferes.
fn many_files(store: &TestStore, name: &str, files: usize, kib: usize) -> String {
    let script = format!(
        "mkdir $out; i=0; while [ $i -lt {files} ]; do \
         head -c {} /dev/urandom > $out/f$i; i=$((i+1)); done",
        kib * 1024
    );
    store.build_expr(&shell_derivation(name, &script)).remove(0)
}

/// The narinfo's NAR URL (`/nar/….nar.zst?hash=…` with narinfo-level
/// zstd) and its identity twin (`/nar/….nar?hash=…`).
fn nar_urls(server: &LarderServer, path: &str) -> (String, String) {
    let info: NarInfo = server.get(&narinfo_url(path), &[]).text().parse().unwrap();
    let url = format!("/{}", info.url);
    let identity = url.replace(".nar.zst?", ".nar?");
    (url, identity)
}

fn dump(store: &TestStore, path: &str) -> Vec<u8> {
    run(store.nix("nix").args(["store", "dump-path"]).arg(path)).stdout
}

fn assert_cut(d: &Download, what: &str) {
    assert_eq!(d.status, 200, "{what}: {}", d.head);
    assert!(
        !d.complete,
        "{what}: a body that looks complete after the fault ({} bytes)\n{}",
        d.body.len(),
        d.head
    );
}

fn cache_entries(dir: &Path) -> (Vec<String>, usize) {
    let names = cached_nars(dir);
    let tmp = std::fs::read_dir(dir.join("tmp")).map_or(0, |d| d.count());
    (names, tmp)
}

/// Delete `path` from the store once the client has its first bytes; the
/// client's body must then be cut (a compressor may have read the whole
/// NAR before the delete: then the body must be whole and right, and the
/// test proves nothing, so its paths are large), and the path be absent
/// afterwards.
fn gc_during(store: &TestStore, server: &LarderServer, path: &str, target: &str, zstd: bool) {
    let headers: &[(&str, &str)] = if zstd {
        &[("Accept-Encoding", "zstd")]
    } else {
        &[]
    };
    let d = get_interrupted(server.url(), target, headers, 64 * 1024, || {
        run(store.nix("nix-store").arg("--delete").arg(path));
    });
    assert_cut(&d, target);
    assert_eq!(server.get(target, headers).status, 404, "{target}");
    eventually("the narinfo of a deleted path is 404", || {
        server.get(&narinfo_url(path), &[]).status == 404
    });
}

#[test]
fn a_path_garbage_collected_during_its_download_is_cut_and_then_absent() {
    let store = TestStore::new();
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let server = LarderServer::start(&store, &["--compression", "zstd", "--cache-dir", cache_dir]);

    let identity = many_files(&store, "gc-identity", 48, 256);
    let (_, target) = nar_urls(&server, &identity);
    gc_during(&store, &server, &identity, &target, false);

    // zstd reads ahead of its output by its window and, multi-threaded, by
    // a few jobs of a few MiB: larger paths, so that the delete lands
    // before the compressor has read every file.
    // Content-Encoding: zstd, which also fills the compressed-NAR cache.
    let encoded = many_files(&store, "gc-encoded", 128, 256);
    let (_, target) = nar_urls(&server, &encoded);
    gc_during(&store, &server, &encoded, &target, true);

    // Narinfo-level zstd (`.nar.zst`), filling the cache too.
    let zst = many_files(&store, "gc-zst", 128, 256);
    let (target, _) = nar_urls(&server, &zst);
    gc_during(&store, &server, &zst, &target, false);

    eventually("aborted fills are removed", || {
        cache_entries(cache.path()) == (vec![], 0)
    });
    let aborted = r#"larder_aborted_streams_total{reason="error",route="/nar/{file}"}"#;
    assert_eq!(server.metric(aborted), 3.0);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_file_made_unreadable_mid_stream_cuts_the_download() {
    let store = TestStore::new();
    let path = many_files(&store, "unreadable", 48, 256);
    std::fs::set_permissions(store.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // As root, so that an unprivileged server finds the DB's WAL index.
    run(Command::new(binary("larder-server"))
        .arg("--check-config")
        .arg("--store-root")
        .arg(store.root()));
    // Root reads any file whatever its mode: the server runs as nobody.
    let server = LarderServer::start_as(&store, &[], &[], Some(NOBODY));
    let (_, target) = nar_urls(&server, &path);
    let real = store.real_path(&path);
    let chmod_all = |mode: u32| {
        for entry in std::fs::read_dir(&real).unwrap() {
            let file = entry.unwrap().path();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    let d = get_interrupted(server.url(), &target, &[], 64 * 1024, || chmod_all(0o000));
    assert_cut(&d, "chmod 000 mid-stream");

    // The next request never gets a complete-looking body either.
    let again = get_interrupted(server.url(), &target, &[], 0, || ());
    assert!(
        !(again.status == 200 && again.complete),
        "a 200 for unreadable files: {}",
        again.head
    );
    // Headers decided, then the first file fails to open: the connection
    // closes, before or after the head (both are errors to Nix, retried).
    assert!(matches!(again.status, 0 | 200 | 500..), "{}", again.head);

    // Readable again: served whole and right.
    chmod_all(0o444);
    let whole = get_interrupted(server.url(), &target, &[], 0, || ());
    assert!(whole.complete && whole.body == dump(&store, &path));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_disk_read_error_mid_stream_cuts_the_download() {
    let store = TestStore::new();
    let path = many_files(&store, "bad-disk", 48, 512);
    let server = LarderServer::start(&store, &[]);
    let (_, target) = nar_urls(&server, &path);
    let expected = dump(&store, &path);
    // 24 MiB of files on a 40 MiB ext4 image, mounted over the store path.
    let disk = FailingDisk::over(&store.real_path(&path), 40);
    let whole = get_interrupted(server.url(), &target, &[], 0, || ());
    assert!(
        whole.complete && whole.body == expected,
        "the copy on disk differs"
    );

    // A fresh mount, so reads go to the device; cut it mid-download. Which
    // files lie past the cut depends on ext4's placement and how far the
    // server has read ahead when the cut lands: a round whose download still
    // completes must be byte-exact (the fault missed), and one of a few
    // rounds must be cut.
    drop(disk);
    let mut cut = false;
    for round in 0..5 {
        let disk = FailingDisk::over(&store.real_path(&path), 40);
        let d = get_interrupted(server.url(), &target, &[], 64 * 1024, || disk.fail(12));
        assert_eq!(d.status, 200, "round {round}: {}", d.head);
        if d.complete {
            assert!(
                d.body == expected,
                "round {round}: a complete body that differs"
            );
            eprintln!("round {round}: the cut landed after the server had read everything");
            continue;
        }
        let again = get_interrupted(server.url(), &target, &[], 0, || ());
        assert!(
            !(again.status == 200 && again.complete),
            "a complete 200 from a failing disk: {}",
            again.head
        );
        cut = true;
        break;
    }
    assert!(
        cut,
        "no round of 5 cut the download: the fault never landed mid-stream"
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_full_cache_disk_never_costs_a_download_and_keeps_nothing_partial() {
    let store = TestStore::new();
    let path = many_files(&store, "full-disk", 16, 256);
    let expected = dump(&store, &path);
    let cache = tempfile::tempdir().unwrap();
    // 1 MiB for a 4 MiB NAR of random bytes (zstd cannot shrink it).
    let _tmpfs = Tmpfs::mount(cache.path(), "1m");
    let cache_dir = cache.path().to_str().unwrap();
    let server = LarderServer::start(&store, &["--compression", "zstd", "--cache-dir", cache_dir]);
    let (zst, identity) = nar_urls(&server, &path);

    for round in 0..2 {
        let d = get_interrupted(server.url(), &zst, &[], 0, || ());
        assert!(d.status == 200 && d.complete, "round {round}: {}", d.head);
        assert!(zstd::decode_all(&d.body[..]).unwrap() == expected);
        let d = get_interrupted(
            server.url(),
            &identity,
            &[("Accept-Encoding", "zstd")],
            0,
            || (),
        );
        assert!(d.status == 200 && d.complete, "round {round}: {}", d.head);
        assert_eq!(d.header("content-encoding"), Some("zstd"));
        assert!(zstd::decode_all(&d.body[..]).unwrap() == expected);
        // A range on an uncached `.nar.zst` fills the cache first: that
        // fails, and the whole body comes instead.
        let d = get_interrupted(server.url(), &zst, &[("Range", "bytes=100-")], 0, || ());
        assert!(d.status == 200 && d.complete, "round {round}: {}", d.head);
        assert!(zstd::decode_all(&d.body[..]).unwrap() == expected);
        eventually("failed fills are removed", || {
            cache_entries(cache.path()) == (vec![], 0)
        });
    }
    assert_eq!(server.metric("larder_nar_cache_hits_total"), 0.0);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
