//! Range requests and NAR URLs as clients use them: a compressed download
//! cut mid-body and resumed by the real `nix copy` (Nix 2.8 resumes with
//! `Range` after a response that said `Accept-Ranges: bytes`), ranges on
//! cached `.nar.zst` files, what an on-the-fly `.nar.zst` says instead,
//! `Range` headers that are ignored (RFC 9110 §14.2), and every NAR URL
//! form nix-serve, nix-serve-ng and harmonia wrote into narinfos.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::{cached_nars, wait_for_cached_nars};
use larder_tests::server::{LarderServer, Reply};
use larder_tests::{TestStore, hash_part, nix_command, run, shell_derivation};

/// A store path with one 8 MB file of random bytes: zstd cannot shrink it,
/// so its `.nar.zst` is far from done after the first megabyte.
fn big_path(store: &TestStore) -> String {
    let script = "mkdir $out; head -c 8000000 /dev/urandom > $out/big; echo tail > $out/t";
    store.build_expr(&shell_derivation("big", script)).remove(0)
}

fn dump(store: &TestStore, path: &str) -> Vec<u8> {
    run(store.nix("nix").args(["store", "dump-path"]).arg(path)).stdout
}

fn narinfo(server: &LarderServer, path: &str) -> NarInfo {
    let reply = server.get(&format!("/{}.narinfo", hash_part(path)), &[]);
    assert_eq!(reply.status, 200, "{path}");
    reply.text().parse().unwrap()
}

/// A TCP proxy in front of the server that cuts the first connection
/// carrying a NAR request `cut_after` bytes into its response, as a broken
/// network would; it records every request it forwards.
struct CuttingProxy {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    cut: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(upstream: &str, cut_after: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = upstream.strip_prefix("http://").unwrap().to_owned();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(AtomicBool::new(false));
        let (log, claimed) = (requests.clone(), cut.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(&upstream).unwrap();
                let (log, claimed) = (log.clone(), claimed.clone());
                std::thread::spawn(move || relay(client, server, cut_after, log, claimed));
            }
        });
        CuttingProxy {
            port,
            requests,
            cut,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Forward one connection both ways; if this connection is the first to
/// ask for a NAR, close it `cut_after` bytes into the response.
fn relay(
    client: TcpStream,
    server: TcpStream,
    cut_after: usize,
    log: Arc<Mutex<Vec<String>>>,
    claimed: Arc<AtomicBool>,
) {
    let cutting = Arc::new(AtomicBool::new(false));
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let marker = cutting.clone();
    std::thread::spawn(move || {
        let mut buf = [0; 16 * 1024];
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.contains("GET /nar/") && !claimed.swap(true, Ordering::SeqCst) {
                // Set before the request goes on: its response is next.
                marker.store(true, Ordering::SeqCst);
            }
            log.lock().unwrap().push(text);
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let mut buf = [0; 16 * 1024];
    let mut sent_since_mark = 0;
    loop {
        let n = match from_server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n;
        if cutting.load(Ordering::SeqCst) {
            if sent_since_mark + n >= cut_after {
                n = cut_after - sent_since_mark;
                let _ = to_client.write_all(&buf[..n]);
                let _ = to_client.shutdown(Shutdown::Both);
                let _ = from_server.shutdown(Shutdown::Both);
                return;
            }
            sent_since_mark += n;
        }
        if to_client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Write);
}

#[test]
fn nix_copy_resumes_a_cut_compressed_download() {
    let store = TestStore::new();
    let path = big_path(&store);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let server = LarderServer::start(&store, &["--compression", "zstd", "--cache-dir", cache_dir]);
    let info = narinfo(&server, &path);
    assert_eq!(info.compression, "zstd");
    // A first download compresses on the fly and fills the cache; from then
    // on the .nar.zst is a complete file, served with ranges.
    let first = server.get(&format!("/{}", info.url), &[]);
    assert_eq!(first.header("accept-ranges"), Some("none"));
    wait_for_cached_nars(cache.path(), 1);

    let proxy = CuttingProxy::start(server.url(), 1 << 20);
    let client = tempfile::tempdir().unwrap();
    let copy = run(nix_command("nix")
        .args(["copy", "--no-check-sigs", "--from"])
        .arg(proxy.url())
        .arg("--to")
        .arg(client.path())
        .arg(&path));
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy never cut");
    let requests = proxy.requests.lock().unwrap().join("");
    let resumed = requests
        .split("GET ")
        .filter(|r| r.starts_with("/nar/") && r.contains(".nar.zst"))
        .filter(|r| r.to_ascii_lowercase().contains("\r\nrange: bytes="))
        .count();
    assert_eq!(
        resumed,
        1,
        "nix copy did not resume with Range:\n{requests}\n{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let copied = run(nix_command("nix")
        .args(["store", "dump-path", "--store"])
        .arg(client.path())
        .arg(&path))
    .stdout;
    assert!(copied == dump(&store, &path), "resumed copy differs");
    let metrics = server.get("/metrics", &[]).text();
    assert!(
        metrics.contains("larder_requests_total{route=\"/nar/{file}\",status=\"206\"} 1"),
        "{metrics}"
    );
}

fn status_and_range(reply: &Reply) -> (u16, Option<&str>) {
    (reply.status, reply.header("content-range"))
}

#[test]
fn cached_nar_zst_honours_ranges() {
    let store = TestStore::new();
    let path = big_path(&store);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let server = LarderServer::start(&store, &["--compression", "zstd", "--cache-dir", cache_dir]);
    let url = format!("/{}", narinfo(&server, &path).url);

    // Cold, with a range: the whole NAR is compressed into the cache first,
    // and the range comes from that file.
    let cold = server.get(&url, &[("Range", "bytes=100-")]);
    assert_eq!(cold.status, 206);
    assert_eq!(cold.header("accept-ranges"), Some("bytes"));
    assert_eq!(cached_nars(cache.path()).len(), 1);

    let whole = server.get(&url, &[]);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    let len = whole.body.len();
    assert_eq!(
        whole.header("content-length"),
        Some(len.to_string().as_str())
    );
    assert!(zstd::decode_all(&whole.body[..]).unwrap() == dump(&store, &path));
    assert!(cold.body == whole.body[100..]);
    let content_range = format!("bytes 100-{}/{len}", len - 1);
    assert_eq!(cold.header("content-range"), Some(content_range.as_str()));

    let mid = server.get(&url, &[("Range", "bytes=1000-1999")]);
    let expected = format!("bytes 1000-1999/{len}");
    assert_eq!(status_and_range(&mid), (206, Some(expected.as_str())));
    assert!(mid.body == whole.body[1000..2000]);
    let suffix = server.get(&url, &[("Range", "bytes=-10")]);
    assert_eq!(suffix.status, 206);
    assert!(suffix.body == whole.body[len - 10..]);
    let past = server.get(&url, &[("Range", &format!("bytes={len}-"))]);
    let star = format!("bytes */{len}");
    assert_eq!(status_and_range(&past), (416, Some(star.as_str())));

    // Ranges larder does not serve as one range are ignored: 200, all of it.
    for ignored in ["bytes=0-1,5-6", "pages=1-2", "bytes=0-0, -1"] {
        let reply = server.get(&url, &[("Range", ignored)]);
        assert_eq!(status_and_range(&reply), (200, None), "{ignored}");
        assert!(reply.body == whole.body, "{ignored}");
    }
    let head = server
        .request("HEAD", &url)
        .set("Range", "bytes=0-9")
        .call()
        .unwrap();
    assert_eq!(head.status(), 206);
    assert_eq!(head.header("content-length"), Some("10"));
}

#[test]
fn on_the_fly_nar_zst_says_it_takes_no_ranges() {
    let store = TestStore::new();
    let path = big_path(&store);
    let server = LarderServer::start(&store, &["--compression", "zstd"]);
    let url = format!("/{}", narinfo(&server, &path).url);
    let nar = dump(&store, &path);
    for range in [None, Some("bytes=100-"), Some("bytes=0-1,5-6")] {
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("Range", *r)).collect();
        let reply = server.get(&url, &headers);
        assert_eq!(status_and_range(&reply), (200, None), "{range:?}");
        assert_eq!(reply.header("accept-ranges"), Some("none"), "{range:?}");
        assert!(
            zstd::decode_all(&reply.body[..]).unwrap() == nar,
            "{range:?}"
        );
    }
}

#[test]
fn identity_nars_ignore_ranges_they_cannot_serve_as_one() {
    let store = TestStore::new();
    let path = big_path(&store);
    let server = LarderServer::start(&store, &[]);
    let url = format!("/{}", narinfo(&server, &path).url);
    let nar = dump(&store, &path);
    for ignored in ["bytes=0-1,5-6", "pages=1-2", "bytes=-5,0-1"] {
        let reply = server.get(&url, &[("Range", ignored)]);
        assert_eq!(status_and_range(&reply), (200, None), "{ignored}");
        assert!(reply.body == nar, "{ignored}");
    }
    let reply = server.get(&url, &[("Range", "bytes=9-3")]);
    assert_eq!(reply.status, 400);
}

#[test]
fn every_nar_url_form_of_nix_serve_and_harmonia() {
    let store = TestStore::new();
    let path = big_path(&store);
    let server = LarderServer::start(&store, &["--compression", "zstd"]);
    let info = narinfo(&server, &path);
    let nar = dump(&store, &path);
    let hash = hash_part(&path);
    let nar_hash = info.nar_hash.to_nix32();
    let identity = [
        format!("/nar/{nar_hash}.nar?hash={hash}"),
        format!("/nar/{hash}-{nar_hash}.nar"),
        format!("/nar/{hash}.nar"),
    ];
    for url in &identity {
        let reply = server.get(url, &[]);
        assert_eq!(reply.status, 200, "{url}");
        assert!(reply.body == nar, "{url}");
        let zst = url.replace(".nar", ".nar.zst");
        let reply = server.get(&zst, &[]);
        assert_eq!(reply.status, 200, "{zst}");
        assert!(zstd::decode_all(&reply.body[..]).unwrap() == nar, "{zst}");
    }
    let wrong = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";
    for miss in [
        format!("/nar/{wrong}.nar?hash={hash}"),
        format!("/nar/{hash}-{wrong}.nar"),
        "/nar/00000000000000000000000000000000.nar".to_owned(),
        format!("/nar/{nar_hash}.nar"),
    ] {
        assert_eq!(server.get(&miss, &[]).status, 404, "{miss}");
    }
}
