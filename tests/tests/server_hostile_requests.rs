//! larder-server under hostile requests (found by the hostile-input pass
//! over issue 11's areas): request smuggling with both
//! `Transfer-Encoding` and `Content-Length` (actix framed it by the first,
//! and answered the bytes a proxy sent as its body as a second request),
//! and `Range` headers with absurd numbers or several lines, on every NAR
//! form (identity, `.nar.zst` from `--cache-dir`). And names that end in
//! an endpoint's suffix (`.ls`, `.narinfo`) under `/serve` and `/log`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use larder_tests::server::LarderServer;
use larder_tests::{TestStore, hash_part, narinfo_url, shell_derivation};

/// Everything the server answers to `request` on a fresh connection,
/// until it closes (or 30 s pass).
fn raw(server: &LarderServer, request: &str) -> String {
    let addr = server.url().trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn store_with_file() -> (TestStore, String) {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let path = store.add([&file]).remove(0);
    (store, path)
}

fn nar_url(server: &LarderServer, path: &str) -> String {
    let text = server.get(&narinfo_url(path), &[]).text();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap_or_else(|| panic!("no URL in {text}"));
    format!("/{url}")
}

#[test]
fn transfer_encoding_with_content_length_is_refused_with_what_follows() {
    let (store, _) = store_with_file();
    let server = LarderServer::start(&store, &[]);
    // The chunked body ends at once; a proxy framing by Content-Length
    // sent the rest as this request's body.
    let smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let reply = raw(
        &server,
        &format!(
            "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        ),
    );
    // The request is refused, and so is whatever actix already parsed
    // behind it on that connection; then the connection closes.
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(
        reply.matches("HTTP/1.1 ").count(),
        reply.matches("HTTP/1.1 400").count(),
        "{reply}"
    );
    assert!(
        !reply.contains("\"status\""),
        "the smuggled request was answered: {reply}"
    );
    // Plain pipelining still works.
    let reply = raw(
        &server,
        "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(reply.matches("HTTP/1.1 200").count(), 2, "{reply}");
}

#[test]
fn absurd_and_repeated_ranges_on_every_nar_form() {
    let (store, path) = store_with_file();
    let cache = tempfile::tempdir().unwrap();
    let plain = LarderServer::start(&store, &[]);
    let zstd = LarderServer::start(
        &store,
        &[
            "--compression",
            "zstd",
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    for server in [&plain, &zstd] {
        let url = nar_url(server, &path);
        // Fill the cache (a .nar.zst is served with ranges from there).
        let whole = server.get(&url, &[]);
        assert_eq!(whole.status, 200);
        let size = whole.body.len();
        let get = |range: &str| server.get(&url, &[("Range", range)]);
        let huge = "99999999999999999999999";
        for (range, status, len) in [
            (format!("bytes={huge}-"), 416, None),
            (format!("bytes={huge}-{huge}"), 416, None),
            (format!("bytes=-{huge}"), 206, Some(size)),
            (format!("bytes=1-{huge}"), 206, Some(size - 1)),
            ("bytes=18446744073709551615-".to_owned(), 416, None),
            ("bytes=5-2".to_owned(), 400, None),
        ] {
            let reply = get(&range);
            assert_eq!(reply.status, status, "{url} {range}: {reply:?}");
            if let Some(len) = len {
                assert_eq!(reply.body.len(), len, "{url} {range}");
            }
            if status == 416 {
                assert_eq!(
                    reply.header("content-range"),
                    Some(format!("bytes */{size}").as_str())
                );
            }
        }
        // Two Range lines are ignored like two ranges: the whole body.
        let addr = server.url().trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {url} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nRange: bytes=5-9\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let head = String::from_utf8_lossy(&out[..out.len().min(300)]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{url}: {head}");
        assert!(out.len() > size, "{url}: {} bytes", out.len());
    }
}

/// The endpoints' patterns are tried in the router's order, each leaving
/// the path to the next when it does not match: a file or a log whose
/// name ends in `.ls` or `.narinfo` is still a `/serve` file or a log
/// (the hand-written matcher first answered them 404, and 404 instead of
/// 405 to other methods). A request a middleware refuses before any
/// endpoint runs is counted under its endpoint's route, as before.
#[test]
fn names_ending_in_an_endpoint_suffix_under_serve_and_log() {
    let store = TestStore::new();
    let script = "mkdir -p $out/sub; echo listing > $out/a.ls; echo info > $out/sub/b.narinfo";
    let out = store
        .build_expr(&shell_derivation("named.ls", script))
        .remove(0);
    let base = out.rsplit('/').next().unwrap();
    let logs = store.root().join("nix/var/log/nix/drvs").join(&base[..2]);
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join(&base[2..]), "a log\n").unwrap();
    let server = LarderServer::start(&store, &[]);
    let h = hash_part(&out);
    for (url, body) in [
        (format!("/serve/{h}/a.ls"), "listing\n"),
        (format!("/serve/{h}/sub/b.narinfo"), "info\n"),
        (format!("/log/{base}"), "a log\n"),
    ] {
        let reply = server.get(&url, &[]);
        assert_eq!((reply.status, reply.text().as_str()), (200, body), "{url}");
    }
    for target in [format!("/log/{base}"), format!("/serve/{h}/a.ls")] {
        let reply = raw(
            &server,
            &format!("DELETE {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 405"), "{target}: {reply}");
        assert!(
            reply.to_ascii_lowercase().contains("allow: get, head"),
            "{target}: {reply}"
        );
    }
    let reply = raw(
        &server,
        &format!(
            "GET /{h}.narinfo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
        ),
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    for (series, count) in [
        (
            r#"larder_requests_total{route="/serve/{hash}/{tail:.*}",status="200"}"#,
            2.0,
        ),
        (
            r#"larder_requests_total{route="/serve/{hash}/{tail:.*}",status="405"}"#,
            1.0,
        ),
        (
            r#"larder_requests_total{route="/log/{drv}",status="200"}"#,
            1.0,
        ),
        (
            r#"larder_requests_total{route="/log/{drv}",status="405"}"#,
            1.0,
        ),
        (
            r#"larder_requests_total{route="/{hash}.narinfo",status="400"}"#,
            1.0,
        ),
    ] {
        assert_eq!(server.metric(series), count, "{series}");
    }
}
