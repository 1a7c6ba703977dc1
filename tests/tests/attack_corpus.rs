//! The attack corpus of issue 15: hundreds of hostile requests, sent as raw
//! bytes over TCP (no client library to normalise them), against every
//! route of larder-server (the root view, a prefixed private view, a
//! host-selected private view, tokens) and of `larder-sync receive`, each
//! with the answer expected written beside it.
//!
//! For every request: the expected status (or statuses, for pipelined
//! requests), no 5xx, and nothing from outside what the request may see in
//! the answer: not a file beside the store, not `/etc/passwd`, not a store
//! path outside the view, not a private view's contents without its token.
//! Afterwards: no "panicked" in either process's log, both still answer,
//! and receive left nothing staged or imported from the hostile uploads.
//! The count per category and the total are printed (`--nocapture`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use larder_store::Sha256Hash;
use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::{export_file_cache, read_narinfos};
use larder_tests::receive::{PUSHER, TOKEN, TestReceiver, base64_basic, file_nar};
use larder_tests::server::LarderServer;
use larder_tests::views::{TOKEN_A, ViewFiles};
use larder_tests::{TestStore, hash_part, shell_derivation};

/// In a file beside the store (in the store root, outside `nix/store`).
const BESIDE_STORE: &str = "MARKER-BESIDE-THE-STORE-5f1c";
/// In a store path no view serves.
const OUTSIDE_VIEW: &str = "MARKER-OUTSIDE-EVERY-VIEW-9a2e";
/// In the private views' path: only with token A.
const PRIVATE: &str = "MARKER-PRIVATE-VIEW-77d0";
/// A line of `/etc/passwd`.
const PASSWD: &str = "root:x:0:0";

/// One hostile request and what it must get.
struct Case {
    category: &'static str,
    /// The raw bytes sent.
    request: Vec<u8>,
    /// The status of each response, in order (several when pipelined).
    expect: Vec<u16>,
    /// Whether the private views' contents may be in the answer.
    private_ok: bool,
    /// Close our sending half after the request (a body that ends early).
    half_close: bool,
    /// Another answer as good as `expect`: for a refused request with
    /// another behind it on the connection, whether the second was parsed
    /// (and refused too) before the connection closed depends on timing.
    or: Option<Vec<u16>>,
}

fn case(category: &'static str, request: impl Into<Vec<u8>>, expect: u16) -> Case {
    Case {
        category,
        request: request.into(),
        expect: vec![expect],
        private_ok: false,
        half_close: false,
        or: None,
    }
}

/// `GET target` on its own connection, with `headers` (each ending `\r\n`).
fn get(category: &'static str, target: &str, headers: &str, expect: u16) -> Case {
    case(
        category,
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n"),
        expect,
    )
}

/// Statuses of every response in `bytes` (pipelined answers follow each
/// other on one connection).
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&bytes[i..], b"HTTP/1.") {
        let at = i + pos;
        let line_start = at == 0 || bytes[at - 1] == b'\n';
        let code = bytes
            .get(at + 9..at + 12)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok());
        if let (true, Some(code)) = (line_start, code) {
            out.push(code);
        }
        i = at + 7;
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends every case to `addr`; returns the failures (one line each) and
/// the count per category.
fn run(addr: &str, cases: &[Case], who: &str) -> (Vec<String>, BTreeMap<&'static str, usize>) {
    let mut failures = Vec::new();
    let mut counts = BTreeMap::new();
    for c in cases {
        *counts.entry(c.category).or_default() += 1;
        let answer = send(addr, &c.request, c.half_close);
        let got = statuses(&answer);
        let text = String::from_utf8_lossy(&answer);
        let first_line = String::from_utf8_lossy(&c.request[..c.request.len().min(160)])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        let mut leaks: Vec<&str> = vec![BESIDE_STORE, OUTSIDE_VIEW, PASSWD];
        if !c.private_ok {
            leaks.push(PRIVATE);
        }
        let what = format!("{who} [{}] {first_line:?}", c.category);
        if got != c.expect && Some(&got) != c.or.as_ref() {
            failures.push(format!("{what}: expected {:?}, got {got:?}", c.expect));
        }
        if got.iter().any(|s| *s >= 500) {
            failures.push(format!("{what}: 5xx {got:?}"));
        }
        for leak in leaks {
            if text.contains(leak) {
                failures.push(format!("{what}: ESCAPE, the answer holds {leak}"));
            }
        }
    }
    (failures, counts)
}

/// Everything answered to `request` until the peer closes (or 20 s pass).
fn send(addr: &str, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A peer that answers and closes before reading all of a huge request
    // resets the connection: what it answered is still read below.
    let _ = s.write_all(request);
    if half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

fn build(store: &TestStore, name: &str, script: &str) -> String {
    store.build_expr(&shell_derivation(name, script)).remove(0)
}

/// A field of a narinfo the server answers.
fn field(server: &LarderServer, url: &str, name: &str, auth: &[(&str, &str)]) -> String {
    let text = server.get(url, auth).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {url}: {text}"))
        .to_owned()
}

/// The ways of writing `../` a client may try (and `/`, NUL, overlong
/// UTF-8), each with what `/serve/<path>/<it>x` answers: `..` decoded
/// once is refused (400); a name that only looks like one is absent (404).
const CLIMBS: &[(&str, u16)] = &[
    ("../", 400),
    ("%2e%2e/", 400),
    ("%2E%2E%2F", 400),
    (".%2e/", 400),
    ("%2e./", 400),
    ("..%2f", 400),
    ("..%2F", 400),
    ("%252e%252e%252f", 404),
    ("..%5c", 404),
    ("..\\", 404),
    ("%c0%ae%c0%ae/", 404),
    ("..%c0%af", 404),
    ("%e0%80%ae%e0%80%ae/", 404),
    ("%00", 400),
    ("..%00/", 400),
    ("%2f%2f", 404),
];

fn server_cases(
    inside: &str,
    outside: &str,
    private: &str,
    nar: &str,
    drv: &str,
    ls_ok: bool,
) -> Vec<Case> {
    let (h, o, p) = (hash_part(inside), hash_part(outside), hash_part(private));
    let mut c = Vec::new();
    let bearer = format!("Authorization: Bearer {TOKEN_A}\r\n");

    // Traversal in every encoding, on every route that takes a name.
    for (climb, serve) in CLIMBS {
        let up = climb.repeat(6);
        c.push(get(
            "traversal",
            &format!("/serve/{h}/{up}escape"),
            "",
            *serve,
        ));
        c.push(get(
            "traversal",
            &format!("/serve/{h}/{up}{o}/data"),
            "",
            *serve,
        ));
        c.push(get("traversal", &format!("/log/{up}escape"), "", 404));
        c.push(get("traversal", &format!("/nar/{up}{nar}.nar"), "", 404));
        c.push(get("traversal", &format!("/{up}{h}.narinfo"), "", 404));
        c.push(get("traversal", &format!("/priv/{up}{p}.narinfo"), "", 401));
        c.push(get("traversal", &format!("/{up}priv/{p}.narinfo"), "", 404));
    }

    // Store path names and hash parts of every wrong shape.
    let long = "a".repeat(5000);
    for (hash, narinfo) in [
        (&h[..31], 404),
        (&format!("{h}0")[..], 404),
        ("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", 404),
        ("oooooooooooooooooooooooooooooooo", 404),
        ("uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu", 404),
        ("tttttttttttttttttttttttttttttttt", 404),
        (&h.to_uppercase()[..], 404),
        ("ééééééééééééééé", 400),
        ("%e9%e9%e9%e9%e9%e9%e9%e9%e9%e9%e9%e9%e9%e9%e9%e9", 404),
        ("", 404),
        (&long[..], 404),
        (&format!("{h}-name")[..], 404),
        (&format!("{h}%00")[..], 404),
    ] {
        // Raw UTF-8 in a request target is refused by the HTTP parser.
        let other = if narinfo == 400 { 400 } else { 404 };
        c.push(get("names", &format!("/{hash}.narinfo"), "", narinfo));
        c.push(get("names", &format!("/{hash}.ls"), "", other));
        c.push(get("names", &format!("/nar/{hash}.nar"), "", other));
        c.push(get("names", &format!("/serve/{hash}/"), "", other));
        c.push(get("names", &format!("/log/{hash}-x.drv"), "", other));
    }
    for (name, status) in [
        (format!("{h}-{}", "a".repeat(212)), 404),
        (format!("{h}-.hidden.drv"), 404),
        // A space ends the request target: the request line is malformed.
        (format!("{h}-bad name.drv"), 400),
        (format!("{h}-bad!name.drv"), 404),
        (format!("{h}-"), 404),
        (h.to_owned(), 404),
        // Longer than actix's request head buffer.
        ("x".repeat(70_000), 400),
    ] {
        c.push(get("names", &format!("/log/{name}"), "", status));
    }
    for (file, status) in [
        (format!("{nar}.nar.bz2"), 404),
        (format!("{}.nar", &nar[..51]), 404),
        (format!("{nar}0.nar"), 404),
        (
            format!("{}.nar", nar.replace(|ch: char| ch.is_ascii_digit(), "e")),
            404,
        ),
        (format!("{h}-{nar}.nar.zst.zst"), 404),
        (format!("{o}-{nar}.nar"), 404),
        (format!("{p}-{nar}.nar"), 404),
        (format!("{nar}.nar?hash={o}"), 404),
        (format!("{nar}.nar?hash=../../etc"), 404),
        (format!("{nar}.nar?hash=%00"), 404),
        (format!("{nar}.nar?hash={h}&hash={o}"), 200),
    ] {
        c.push(get("names", &format!("/nar/{file}"), "", status));
    }

    // Huge and repeated headers, and absurd request lines.
    let big = "x".repeat(100_000);
    // A 100 kB value fits actix's 128 KiB head buffer; 96 headers do not fit
    // its header table.
    c.push(get(
        "headers",
        "/nix-cache-info",
        &format!("X-Big: {big}\r\n"),
        200,
    ));
    c.push(get(
        "headers",
        "/nix-cache-info",
        &"X-Many: 1\r\n".repeat(200),
        431,
    ));
    c.push(get(
        "headers",
        "/nix-cache-info",
        &"X-Many: 1\r\n".repeat(90),
        200,
    ));
    c.push(get("headers", "/nix-cache-info", "X-Nul: a\0b\r\n", 400));
    c.push(get("headers", "/nix-cache-info", "No colon here\r\n", 400));
    c.push(get("headers", "/nix-cache-info", ": empty name\r\n", 400));
    c.push(get(
        "headers",
        "/nix-cache-info",
        "X-Bin: \u{80}\u{ff}\r\n",
        200,
    ));
    c.push(get("headers", &format!("/{big}"), "", 400));
    c.push(get("headers", &format!("/{}", "a".repeat(7000)), "", 404));
    c.push(get("headers", &format!("/nix-cache-info?{big}"), "", 400));
    c.push(case(
        "headers",
        "GET /nix-cache-info HTTP/1.1\nHost: x\nConnection: close\n\n",
        200,
    ));
    c.push(case(
        "headers",
        "GET  /nix-cache-info  HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ));
    // Methods are case-sensitive: `get` is another method.
    c.push(case(
        "headers",
        "get /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        405,
    ));
    // Empty lines before a request line are skipped (RFC 9112 §2.2).
    c.push(case(
        "headers",
        "\r\n\r\nGET /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        200,
    ));
    c.push(case("headers", "GET /nix-cache-info\r\n\r\n", 400));
    c.push(case("headers", vec![0xffu8; 200], 400));

    // Absurd Range values, on both NAR forms and a route without ranges.
    let nar_url = format!("/nar/{h}-{nar}.nar");
    let zst_url = format!("/nar/{h}-{nar}.nar.zst");
    let huge = "9".repeat(400);
    for (range, identity, zst) in [
        ("bytes=0-0", 206, 200),
        ("bytes=-0", 416, 200),
        (&format!("bytes={huge}-")[..], 416, 200),
        (&format!("bytes=-{huge}"), 206, 200),
        (&format!("bytes=0-{huge}"), 206, 200),
        ("bytes=18446744073709551615-18446744073709551615", 416, 200),
        ("bytes=18446744073709551616-", 416, 200),
        ("bytes=5-2", 400, 200),
        ("bytes=-", 400, 200),
        ("bytes=a-b", 400, 200),
        ("bytes=--1", 400, 200),
        ("bytes=1-2,3-4", 200, 200),
        (&format!("bytes={}", "0-1,".repeat(2000))[..], 200, 200),
        ("bytes=0-1\0", 400, 400),
        ("bytes=\u{663}-\u{664}", 400, 400),
        ("pages=0-1", 200, 200),
        ("bytes 0-1", 200, 200),
        ("=", 200, 200),
        ("", 200, 200),
    ] {
        let header = format!("Range: {range}\r\n");
        c.push(get("range", &nar_url, &header, identity));
        // The `.nar.zst` is in the cache (filled before the corpus), which
        // serves ranges of it like the identity NAR's.
        c.push(get("range", &zst_url, &header, zst.max(identity)));
    }
    c.push(get("range", "/nix-cache-info", "Range: bytes=0-1\r\n", 200));
    c.push(get(
        "range",
        &format!("/{h}.narinfo"),
        "Range: bytes=99-1\r\n",
        200,
    ));
    c.push(get(
        "range",
        &nar_url,
        "Range: bytes=0-1\r\nRange: bytes=2-3\r\n",
        200,
    ));
    c.push(get(
        "range",
        &nar_url,
        "Range: bytes=0-1\r\nIf-Range: \"nope\"\r\n",
        200,
    ));

    // Absurd Accept-Encoding values.
    for value in [
        "zstd;q=0".to_owned(),
        "*;q=0".to_owned(),
        "identity;q=0, *;q=0".to_owned(),
        "ZSTD".to_owned(),
        "zstd;q=abc".to_owned(),
        "zstd;q=999999999999999999999".to_owned(),
        "zstd, ".repeat(3000),
        "gzip, br, deflate".to_owned(),
        ";;;,,,".to_owned(),
        "zst\u{e9}d".to_owned(),
    ] {
        c.push(get(
            "accept-encoding",
            &nar_url,
            &format!("Accept-Encoding: {value}\r\n"),
            200,
        ));
        c.push(get(
            "accept-encoding",
            &format!("/{h}.narinfo"),
            &format!("Accept-Encoding: {value}\r\n"),
            200,
        ));
    }

    // Host tricks: only `priv.example` (with token A) selects view hpriv.
    let narinfo_p = format!("/{p}.narinfo");
    let host_cases: Vec<(String, &str, u16)> = vec![
        (narinfo_p.clone(), "Host: priv.example\r\n", 401),
        (narinfo_p.clone(), "Host: PRIV.EXAMPLE\r\n", 401),
        (narinfo_p.clone(), "Host: priv.example:1\r\n", 401),
        (narinfo_p.clone(), "Host: priv.example.\r\n", 401),
        (narinfo_p.clone(), "Host: other.example\r\n", 404),
        (
            narinfo_p.clone(),
            "Host: other.example\r\nX-Forwarded-Host: priv.example\r\n",
            404,
        ),
        (
            narinfo_p.clone(),
            "Host: other.example\r\nForwarded: host=priv.example\r\n",
            404,
        ),
        (
            narinfo_p.clone(),
            "Host: priv.example@other.example\r\n",
            404,
        ),
        (
            narinfo_p.clone(),
            "Host: other.example\r\nHost: priv.example\r\n",
            400,
        ),
        (narinfo_p.clone(), "Host: \r\n", 404),
        (narinfo_p.clone(), "Host: priv.example\0\r\n", 400),
        (narinfo_p.clone(), "Host: priv.example/../\r\n", 404),
        // Absolute-form targets are refused outright.
        (
            format!("http://priv.example{narinfo_p}"),
            "Host: other.example\r\n",
            400,
        ),
        (
            format!("http://other.example{narinfo_p}"),
            "Host: priv.example\r\n",
            400,
        ),
        (narinfo_p.clone(), "Host: priv%2eexample\r\n", 404),
    ];
    for (target, host, status) in host_cases {
        c.push(case(
            "host",
            format!("GET {target} HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
            status,
        ));
    }
    c.push(Case {
        private_ok: true,
        ..case(
            "host",
            format!("GET {narinfo_p} HTTP/1.1\r\nHost: priv.example\r\n{bearer}Connection: close\r\n\r\n"),
            200,
        )
    });

    // Tokens: only token A, only for its views.
    for (auth, status) in [
        (String::new(), 401),
        ("Authorization: Bearer \r\n".to_owned(), 401),
        ("Authorization: Bearer wrong-token\r\n".to_owned(), 401),
        (format!("Authorization: Bearer {TOKEN_A}x\r\n"), 401),
        (
            format!(
                "Authorization: Bearer {}\r\n",
                &TOKEN_A[..TOKEN_A.len() - 1]
            ),
            401,
        ),
        (format!("Authorization: bearer {TOKEN_A}\r\n"), 200),
        // RFC 9110 §11.4: one or more spaces after the scheme.
        (format!("Authorization: Bearer  {TOKEN_A}\r\n"), 200),
        (
            format!("Authorization: Basic {}\r\n", base64_basic("x", TOKEN_A)),
            200,
        ),
        (
            format!("Authorization: Basic {}\r\n", base64_basic("x", "nope")),
            401,
        ),
        ("Authorization: Basic !!!notbase64!!!\r\n".to_owned(), 401),
        (
            format!("Authorization: Basic {}\r\n", "QUFB".repeat(5000)),
            401,
        ),
        (
            format!("Authorization: Bearer {}\r\n", "t".repeat(50_000)),
            401,
        ),
        (format!("Authorization: Bearer wrong\r\n{bearer}"), 401),
        (format!("{bearer}Authorization: Bearer wrong\r\n"), 401),
        (format!("Authorization: Digest {TOKEN_A}\r\n"), 401),
        (format!("Cookie: token={TOKEN_A}\r\n"), 401),
    ] {
        let private_ok = status == 200;
        c.push(Case {
            private_ok,
            ..get("tokens", &format!("/priv/{p}.narinfo"), &auth, status)
        });
    }
    c.push(get(
        "tokens",
        &format!("/priv/{p}.narinfo?token={TOKEN_A}"),
        "",
        401,
    ));
    c.push(get("tokens", &format!("/priv/{h}.narinfo"), &bearer, 404));
    c.push(get("tokens", &format!("/{p}.narinfo"), &bearer, 404));
    c.push(get("tokens", &format!("/serve/{p}/data"), &bearer, 404));

    // HTTP/1.0, other versions, and pipelining.
    c.push(case(
        "http-versions",
        "GET /nix-cache-info HTTP/1.0\r\n\r\n",
        200,
    ));
    c.push(case(
        "http-versions",
        format!("GET /{h}.narinfo HTTP/1.0\r\n\r\n"),
        200,
    ));
    c.push(case(
        "http-versions",
        format!("HEAD {nar_url} HTTP/1.0\r\n\r\n"),
        200,
    ));
    c.push(Case {
        expect: vec![200, 200],
        ..case("http-versions", "GET /nix-cache-info HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n", 0)
    });
    c.push(case(
        "http-versions",
        "GET /nix-cache-info HTTP/1.1\r\nConnection: close\r\n\r\n",
        200,
    ));
    c.push(case(
        "http-versions",
        "GET /nix-cache-info HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n",
        400,
    ));
    c.push(case(
        "http-versions",
        "GET /nix-cache-info HTTP/2.0\r\nHost: x\r\n\r\n",
        400,
    ));
    c.push(case(
        "http-versions",
        "GET /nix-cache-info HTTP/0.9\r\n\r\n",
        400,
    ));
    c.push(case(
        "http-versions",
        "GET /nix-cache-info HTTP/9\r\n\r\n",
        400,
    ));
    c.push(case(
        "http-versions",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        400,
    ));
    let pipelined = |reqs: &[&str]| -> String { reqs.concat() };
    let keep = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let last =
        |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    for (reqs, expect) in [
        (
            vec![
                keep("/nix-cache-info"),
                keep(&format!("/{h}.narinfo")),
                last("/health"),
            ],
            vec![200, 200, 200],
        ),
        (
            vec![
                keep("/nix-cache-info"),
                keep(&format!("/{o}.narinfo")),
                last("/health"),
            ],
            vec![200, 404, 200],
        ),
        (
            vec![
                keep(&format!("/{h}.narinfo")),
                keep(&format!("/priv/{p}.narinfo")),
                last("/health"),
            ],
            vec![200, 401, 200],
        ),
        (
            vec![keep(&format!("/{h}.narinfo")), last(&format!("/{h}.ls"))],
            vec![200, u16::from(ls_ok) * 200 + u16::from(!ls_ok) * 404],
        ),
        (
            vec![
                keep("/nix-cache-info"),
                "GARBAGE\r\n\r\n".to_owned(),
                last("/health"),
            ],
            vec![200, 400],
        ),
        (
            vec![keep("/nix-cache-info"); 50]
                .into_iter()
                .chain([last("/health")])
                .collect(),
            vec![200; 51],
        ),
    ] {
        let refs: Vec<&str> = reqs.iter().map(String::as_str).collect();
        c.push(Case {
            expect,
            ..case("pipelining", pipelined(&refs), 0)
        });
    }

    // Request smuggling shapes.
    let smuggled = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for (headers, body, expect) in [
        (
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                5 + smuggled.len()
            ),
            format!("0\r\n\r\n{smuggled}"),
            vec![400],
        ),
        (
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                5 + smuggled.len()
            ),
            format!("0\r\n\r\n{smuggled}"),
            vec![400],
        ),
        // Refused, and so is the request behind it on the connection.
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".to_owned(),
            format!("0\r\n\r\n{smuggled}"),
            vec![400, 400],
        ),
        (
            "Transfer-Encoding: chunked, chunked\r\n".to_owned(),
            format!("0\r\n\r\n{smuggled}"),
            vec![400, 400],
        ),
        (
            "Transfer-Encoding: xchunked\r\n".to_owned(),
            format!("0\r\n\r\n{smuggled}"),
            vec![400],
        ),
        (
            "Transfer-Encoding: chunked\r\n".to_owned(),
            format!("0\r\n\r\n{smuggled}"),
            vec![200, 200],
        ),
        (
            "Transfer-Encoding : chunked\r\n".to_owned(),
            format!("0\r\n\r\n{smuggled}"),
            vec![400],
        ),
        (
            "Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n".to_owned(),
            "abc".to_owned(),
            vec![400],
        ),
        (
            "Transfer-Encoding: identity\r\nContent-Length: 3\r\n".to_owned(),
            "abc".to_owned(),
            vec![400],
        ),
        (
            "Content-Length: 3\r\nContent-Length: 4\r\n".to_owned(),
            "abcd".to_owned(),
            vec![400],
        ),
        (
            "Content-Length: 3\r\nContent-Length: 3\r\n".to_owned(),
            "abc".to_owned(),
            vec![400],
        ),
        (
            "Content-Length: 3, 4\r\n".to_owned(),
            "abcd".to_owned(),
            vec![400],
        ),
        (
            "Content-Length: +3\r\n".to_owned(),
            "abc".to_owned(),
            vec![400],
        ),
        (
            "Content-Length: -1\r\n".to_owned(),
            String::new(),
            vec![400],
        ),
        (
            "Content-Length: 0x3\r\n".to_owned(),
            "abc".to_owned(),
            vec![400],
        ),
        (
            format!("Content-Length: {huge}\r\n"),
            String::new(),
            vec![400],
        ),
        ("X-Folded: a\r\n b\r\n".to_owned(), String::new(), vec![400]),
        (
            "Content-Length: 0\r\n\tTransfer-Encoding: chunked\r\n".to_owned(),
            String::new(),
            vec![400],
        ),
        (
            format!(
                "Content-Length: {}\r\nConnection: close\r\n",
                smuggled.len()
            ),
            smuggled.to_owned(),
            vec![200],
        ),
    ] {
        let or = (expect[0] == 400).then(|| vec![400, 400]);
        let expect = if expect[0] == 400 { vec![400] } else { expect };
        c.push(Case {
            expect,
            or,
            ..case(
                "smuggling",
                format!("GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}"),
                0,
            )
        });
    }
    // HTTP/1.0 has no chunked framing: the request has no body, the
    // chunk's bytes are a malformed request (400, closed), and what hid
    // behind them is never answered.
    c.push(Case {
        expect: vec![200, 400],
        ..case(
            "smuggling",
            format!("GET /nix-cache-info HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n{smuggled}"),
            0,
        )
    });

    // Methods other than GET and HEAD, on every route.
    let routes = [
        "/".to_owned(),
        "/nix-cache-info".to_owned(),
        "/nix.conf".to_owned(),
        "/health".to_owned(),
        "/version".to_owned(),
        "/metrics".to_owned(),
        format!("/{h}.narinfo"),
        format!("/{h}.ls"),
        nar_url.clone(),
        format!("/log/{drv}"),
        format!("/serve/{h}"),
        format!("/serve/{h}/ok"),
    ];
    for route in &routes {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] {
            c.push(case(
                "methods",
                format!("{method} {route} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                405,
            ));
        }
    }
    c.push(case(
        "methods",
        "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        400,
    ));
    c.push(case(
        "methods",
        "FOO /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        405,
    ));
    c.push(case(
        "methods",
        format!(
            "{} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "G".repeat(5000)
        ),
        405,
    ));

    // Controls: the corpus's targets exist, so the refusals above are
    // refusals and not absent files.
    for (target, status) in [
        (format!("/{h}.narinfo"), 200),
        (nar_url.clone(), 200),
        (zst_url.clone(), 200),
        (format!("/serve/{h}/ok"), 200),
        (format!("/log/{drv}"), 200),
        ("/nix-cache-info".to_owned(), 200),
        (format!("/{o}.narinfo"), 404),
    ] {
        c.push(get("controls", &target, "", status));
    }
    c
}

/// Compresses the NAR of one file of `size` zero bytes with `tool`
/// (`xz`, `zstd` or `bzip2`): a few KiB that expand to `size`.
fn bomb(tool: &str, size: u64) -> Vec<u8> {
    let head = file_nar(b"");
    // `file_nar` of an empty file ends with the empty contents (length 0)
    // and `)`: put the real length there, then the zeros, then `)`.
    let cut = head.len() - 8 - 16;
    let mut prefix = head[..cut].to_vec();
    prefix.extend_from_slice(&size.to_le_bytes());
    let mut child = Command::new(tool)
        .args(["-c", "-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&prefix).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            stdin.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
        let mut tail = vec![0u8; (8 - size % 8) as usize % 8];
        tail.extend_from_slice(&1u64.to_le_bytes());
        tail.extend_from_slice(b")\0\0\0\0\0\0\0");
        stdin.write_all(&tail).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

struct Upload {
    info: NarInfo,
    nar: Vec<u8>,
}

/// `path` of `store`, exported uncompressed: its narinfo and NAR.
fn upload_of(store: &TestStore, path: &str) -> Upload {
    let dir = tempfile::tempdir().unwrap();
    export_file_cache(store, path, dir.path(), "none");
    let info = read_narinfos(dir.path())
        .into_iter()
        .map(|(_, i)| i)
        .find(|i| path.ends_with(&i.store_path.to_string()))
        .unwrap();
    let nar = fs::read(dir.path().join(&info.url)).unwrap();
    Upload { info, nar }
}

fn receive_cases(selfref: &Upload, orphan: &Upload, bombs: &[(&str, Vec<u8>)]) -> Vec<Case> {
    let auth = format!("Authorization: Basic {}\r\n", base64_basic(PUSHER, TOKEN));
    let put = |target: &str, headers: &str, body: &[u8]| -> Vec<u8> {
        let mut r = format!(
            "PUT {target} HTTP/1.1\r\nHost: x\r\n{auth}{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let req = |method: &str, target: &str, headers: &str| -> Vec<u8> {
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    let mut c = Vec::new();
    let nar = file_nar(b"corpus");
    let nar_hash = Sha256Hash::digest(&nar).to_nix32();
    let nar_url = format!("/nar/{nar_hash}.nar");
    let h = selfref.info.store_path.hash().to_string();

    // Authentication on every route.
    for route in [
        "/nix-cache-info".to_owned(),
        format!("/{h}.narinfo"),
        nar_url.clone(),
        format!("/{h}.ls"),
        "/log/x.drv".to_owned(),
        "/realisations/x".to_owned(),
    ] {
        for (headers, status) in [
            (String::new(), 401),
            ("Authorization: Basic !!!\r\n".to_owned(), 401),
            (
                format!("Authorization: Basic {}\r\n", base64_basic(PUSHER, "wrong")),
                401,
            ),
            (
                format!("Authorization: Basic {}\r\n", base64_basic("other", TOKEN)),
                401,
            ),
            (format!("Authorization: Bearer {TOKEN}x\r\n"), 401),
            (
                format!("Authorization: Basic {}\r\n", "QUFB".repeat(5000)),
                401,
            ),
        ] {
            c.push(case("receive-auth", req("PUT", &route, &headers), status));
            c.push(case("receive-auth", req("GET", &route, &headers), status));
        }
    }

    // Traversal and bad names on every route that takes a name.
    for (climb, _) in CLIMBS {
        let up = climb.repeat(6);
        c.push(case(
            "receive-traversal",
            put(&format!("/nar/{up}etc/passwd"), "", &nar),
            400,
        ));
        c.push(case(
            "receive-traversal",
            put(&format!("/nar/{up}{nar_hash}.nar"), "", &nar),
            400,
        ));
        c.push(case(
            "receive-traversal",
            put(&format!("/{up}{h}.narinfo"), "", b"x"),
            400,
        ));
        c.push(case(
            "receive-traversal",
            put(&format!("/log/{up}x.drv"), "", b"log"),
            400,
        ));
        c.push(case(
            "receive-traversal",
            put(&format!("/{up}{h}.ls"), "", b"{}"),
            400,
        ));
        c.push(case(
            "receive-traversal",
            req("HEAD", &format!("/nar/{up}{nar_hash}.nar"), &auth),
            404,
        ));
    }
    for (name, status) in [
        (format!("{}.nar", &nar_hash[..51]), 400),
        (format!("{nar_hash}0.nar"), 400),
        (format!("{}.nar", "e".repeat(52)), 400),
        (format!("{}.nar", nar_hash.to_uppercase()), 400),
        (format!("{nar_hash}.nar.lz4"), 415),
        (format!("{nar_hash}.nar.br"), 415),
        (format!("{nar_hash}.tar"), 415),
        (nar_hash.clone(), 400),
        (format!("{nar_hash}.nar.xz.xz"), 415),
        ("x".repeat(5000), 400),
    ] {
        c.push(case(
            "receive-names",
            put(&format!("/nar/{name}"), "", &nar),
            status,
        ));
    }
    for (hash, status) in [
        (h[..31].to_owned(), 400),
        (format!("{h}0"), 400),
        ("e".repeat(32), 400),
        (h.to_uppercase(), 400),
        (String::new(), 400),
        ("é".repeat(16), 400),
    ] {
        c.push(case(
            "receive-names",
            put(
                &format!("/{hash}.narinfo"),
                "",
                selfref.info.to_string().as_bytes(),
            ),
            status,
        ));
    }

    // Lying Content-Length, truncated and chunked bodies.
    let mut short =
        format!("PUT {nar_url} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 10\r\n\r\n")
            .into_bytes();
    short.extend_from_slice(&nar);
    c.push(Case {
        expect: vec![400, 400],
        ..case("receive-bodies", short, 0)
    });
    let mut long = format!(
        "PUT {nar_url} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n",
        nar.len() + 1000
    )
    .into_bytes();
    long.extend_from_slice(&nar);
    c.push(Case {
        half_close: true,
        ..case("receive-bodies", long, 400)
    });
    for cut in [0, 1, 8, nar.len() / 2, nar.len() - 1] {
        let mut truncated = format!(
            "PUT {nar_url} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n",
            nar.len()
        )
        .into_bytes();
        truncated.extend_from_slice(&nar[..cut]);
        c.push(Case {
            half_close: true,
            ..case("receive-bodies", truncated, 400)
        });
        c.push(case("receive-bodies", put(&nar_url, "", &nar[..cut]), 400));
    }
    let mut chunked = format!(
        "PUT {nar_url} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        nar.len()
    )
    .into_bytes();
    chunked.extend_from_slice(&nar[..nar.len() / 2]);
    c.push(Case {
        half_close: true,
        ..case("receive-bodies", chunked, 400)
    });
    let narinfo = selfref.info.to_string();
    let mut short_info = format!(
        "PUT /{h}.narinfo HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n",
        narinfo.len() * 2
    )
    .into_bytes();
    short_info.extend_from_slice(narinfo.as_bytes());
    c.push(Case {
        half_close: true,
        ..case("receive-bodies", short_info, 400)
    });
    c.push(case(
        "receive-bodies",
        put(&format!("/{h}.narinfo"), "", &vec![b'x'; 2 << 20]),
        413,
    ));
    c.push(case(
        "receive-bodies",
        put(&format!("/{h}.narinfo"), "", &[0xff, 0xfe, 0]),
        400,
    ));
    c.push(case(
        "receive-bodies",
        put(&format!("/{h}.narinfo"), "", b""),
        400,
    ));

    // Compression bombs: a few KiB that expand past --max-nar-size-mib.
    for (ext, bytes) in bombs {
        let hash = Sha256Hash::digest(bytes).to_nix32();
        c.push(case(
            "receive-bombs",
            put(&format!("/nar/{hash}.nar.{ext}"), "", bytes),
            413,
        ));
    }

    // Narinfo the NAR does not back, or referring to paths not there.
    let mut lying = selfref.info.clone();
    lying.nar_size += 1;
    c.push(case(
        "receive-narinfo",
        put(&format!("/{h}.narinfo"), "", lying.to_string().as_bytes()),
        400,
    ));
    let orphan_h = orphan.info.store_path.hash().to_string();
    let mut unknown = orphan.info.clone();
    unknown
        .references
        .push("00000000000000000000000000000000-absent".parse().unwrap());
    c.push(case(
        "receive-narinfo",
        put(
            &format!("/nar/{}", orphan.info.url.trim_start_matches("nar/")),
            "",
            &orphan.nar,
        ),
        200,
    ));
    c.push(case(
        "receive-narinfo",
        put(
            &format!("/{orphan_h}.narinfo"),
            "",
            unknown.to_string().as_bytes(),
        ),
        409,
    ));
    let mut renamed = selfref.info.clone();
    renamed.store_path = orphan.info.store_path.clone();
    c.push(case(
        "receive-narinfo",
        put(&format!("/{h}.narinfo"), "", renamed.to_string().as_bytes()),
        400,
    ));
    let mut elsewhere = selfref
        .info
        .to_string()
        .replace("StorePath: /nix/store/", "StorePath: /tmp/store/");
    elsewhere.push('\n');
    c.push(case(
        "receive-narinfo",
        put(&format!("/{h}.narinfo"), "", elsewhere.as_bytes()),
        400,
    ));
    // A path that refers to itself is normal: accepted once its NAR is in.
    c.push(case(
        "receive-narinfo",
        put(&format!("/{}", selfref.info.url), "", &selfref.nar),
        200,
    ));
    c.push(case(
        "receive-narinfo",
        put(&format!("/{h}.narinfo"), "", narinfo.as_bytes()),
        200,
    ));
    c.push(case(
        "receive-narinfo",
        req("GET", &format!("/{h}.narinfo"), &auth),
        200,
    ));

    // Smuggling shapes and huge headers.
    let smuggled =
        format!("PUT /{h}.narinfo HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1\r\n\r\nx");
    for (headers, expect) in [
        (
            format!(
                "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
                5 + smuggled.len()
            ),
            vec![400, 400],
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".to_owned(),
            vec![400, 400],
        ),
        (
            "Content-Length: 3\r\nContent-Length: 4\r\n".to_owned(),
            vec![400],
        ),
        ("X-Folded: a\r\n b\r\n".to_owned(), vec![400]),
        // No body, then the chunk's bytes are a malformed request.
        (
            format!("X-Big: {}\r\n", "x".repeat(100_000)),
            vec![400, 400],
        ),
        ("X-Many: 1\r\n".repeat(200), vec![431]),
    ] {
        let or = (expect[0] == 400).then(|| vec![400, 400]);
        let expect = if expect[0] == 400 { vec![400] } else { expect };
        c.push(Case {
            expect,
            or,
            ..case(
                "receive-smuggling",
                format!(
                    "PUT {nar_url} HTTP/1.1\r\nHost: x\r\n{auth}{headers}\r\n0\r\n\r\n{smuggled}"
                ),
                0,
            )
        });
    }

    // Methods and routes the receiver does not have.
    for (method, target, status) in [
        ("DELETE", format!("/{h}.narinfo"), 405),
        ("POST", nar_url.clone(), 405),
        ("GET", nar_url.clone(), 404),
        ("GET", "/log/x.drv".to_owned(), 404),
        ("PUT", "/realisations/sha256:abc!out.doi".to_owned(), 422),
        ("GET", "/".to_owned(), 404),
        ("PUT", "/nix-cache-info".to_owned(), 405),
        ("GET", "/../../etc/passwd".to_owned(), 404),
    ] {
        c.push(case("receive-methods", req(method, &target, &auth), status));
    }
    c
}

fn report(who: &str, counts: &BTreeMap<&'static str, usize>) -> usize {
    let total: usize = counts.values().sum();
    for (category, n) in counts {
        println!("attack corpus: {who} {category}: {n}");
    }
    println!("attack corpus: {who} total: {total}");
    total
}

#[test]
fn the_attack_corpus_gets_the_expected_answers_and_nothing_escapes() {
    let store = TestStore::new();
    fs::write(store.root().join("escape"), BESIDE_STORE).unwrap();
    let outside = build(
        &store,
        "outside",
        &format!("mkdir $out; echo {OUTSIDE_VIEW} > $out/data"),
    );
    let base = outside.rsplit('/').next().unwrap().to_owned();
    let inside = build(
        &store,
        "inside",
        &format!(
            "mkdir $out; echo ok > $out/ok; ln -s {outside}/data $out/abs; ln -s ../{base}/data $out/rel; ln -s /etc/passwd $out/passwd; echo building inside"
        ),
    );
    let private = build(
        &store,
        "private",
        &format!("mkdir $out; echo {PRIVATE} > $out/data"),
    );
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[&inside]);
    let priv_roots = files.gc_roots("priv", &[&private]);
    let tokens = files.tokens("a", TOKEN_A);
    let cache = tempfile::tempdir().unwrap();
    let config = files.config(&format!(
        "[[view]]\nname = \"root\"\ngc-root-dirs = [\"{r}\"]\nserve = true\ninclude-logs = true\n\
         [[view]]\nname = \"priv\"\nprefix = \"priv\"\ngc-root-dirs = [\"{p}\"]\nserve = true\ntokens-file = \"{t}\"\n\
         [[view]]\nname = \"hpriv\"\nhost = \"priv.example\"\ngc-root-dirs = [\"{p}\"]\ntokens-file = \"{t}\"\n",
        r = roots.display(),
        p = priv_roots.display(),
        t = tokens.display(),
    ));
    let server = LarderServer::start(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    );
    let narinfo = format!("/{}.narinfo", hash_part(&inside));
    let nar = field(&server, &narinfo, "URL", &[])
        .trim_start_matches("nar/")
        .split(['.', '-'])
        .find(|s| s.len() == 52)
        .unwrap()
        .to_owned();
    let drv = field(&server, &narinfo, "Deriver", &[]);
    let zst = format!("/nar/{}-{nar}.nar.zst", hash_part(&inside));
    assert_eq!(server.get(&zst, &[]).status, 200);
    larder_tests::views::eventually("the .nar.zst is cached", || {
        server.get(&zst, &[("Range", "bytes=0-0")]).status == 206
    });
    let ls_ok = server
        .get(&format!("/{}.ls", hash_part(&inside)), &[])
        .status
        == 200;

    // The receiver, with a CI store holding what is pushed.
    let ci = TestStore::new();
    let host = TestStore::new();
    let selfref = build(&ci, "selfref", "echo $out > $out");
    let orphan = build(&ci, "orphan", "echo orphan > $out");
    let selfref = upload_of(&ci, &selfref);
    let orphan = upload_of(&ci, &orphan);
    assert!(selfref.info.references.contains(&selfref.info.store_path));
    let receiver = TestReceiver::start(&host, &["--max-nar-size-mib", "16"]);
    let bombs: Vec<(&str, Vec<u8>)> = [("xz", "xz"), ("zst", "zstd"), ("bz2", "bzip2")]
        .into_iter()
        .map(|(ext, tool)| (ext, bomb(tool, 64 << 20)))
        .collect();
    for (ext, b) in &bombs {
        println!(
            "attack corpus: .nar.{ext} bomb: {} bytes expanding to 64 MiB",
            b.len()
        );
    }

    let scases = server_cases(&inside, &outside, &private, &nar, &drv, ls_ok);
    let (mut failures, scounts) = run(
        server.url().trim_start_matches("http://"),
        &scases,
        "server",
    );
    let rcases = receive_cases(&selfref, &orphan, &bombs);
    let raddr = receiver.url().trim_start_matches("http://").to_owned();
    let (rfailures, rcounts) = run(&raddr, &rcases, "receive");
    failures.extend(rfailures);
    let total = report("larder-server", &scounts) + report("larder-sync receive", &rcounts);
    println!(
        "attack corpus: {total} requests, {} failures",
        failures.len()
    );

    // Both still answer, neither panicked.
    assert_eq!(server.get("/health", &[]).status, 200);
    assert_eq!(server.get(&narinfo, &[]).status, 200);
    let (code, _) = larder_tests::receive::send(receiver.request("GET", "/nix-cache-info"), b"");
    assert_eq!(code, 200);
    for (who, log) in [("larder-server", server.log()), ("receive", receiver.log())] {
        if log.contains("panicked") {
            failures.push(format!("{who} panicked:\n{log}"));
        }
        for secret in [TOKEN_A, TOKEN] {
            if log.contains(secret) {
                failures.push(format!("{who} logged a token"));
            }
        }
    }
    // Of the hostile uploads, only the self-referencing path got in.
    let imported: Vec<String> = fs::read_dir(host.root().join("nix/store"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let want = selfref.info.store_path.to_string();
    let others: Vec<&String> = imported
        .iter()
        .filter(|n| **n != want && *n != ".links")
        .collect();
    if !imported.contains(&want) || !others.is_empty() {
        failures.push(format!("receive imported {imported:?}"));
    }
    let staged = receiver.staging_entries();
    // The orphan's NAR stays staged for the narinfo that never came (it
    // expires with --staging-ttl); nothing else may stay.
    if staged.len() > 1 {
        failures.push(format!("receive left staged {staged:?}"));
    }
    assert!(
        failures.is_empty(),
        "{} of {total} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(total >= 200, "only {total} requests");
}

/// Found by the corpus and fixed only in part (see `docs/reliability.md`):
/// actix-http 3.11's request decoder unwraps `HeaderName::from_bytes`,
/// which refuses names over 64 KiB that httparse accepts, so such a
/// request panics in its connection's task. `panic_containment` tests
/// what larder makes of it (only that connection ends; one counted log
/// line); the 431 a client should get needs actix-http fixed. Both
/// larder-server and `larder-sync receive` parse with it. Run with
/// `--ignored` once the fix is in.
#[test]
#[ignore = "open: actix-http panics on a header name over 64 KiB (docs/reliability.md)"]
fn a_header_name_over_64_kib_panics_no_worker() {
    let store = TestStore::new();
    let server = LarderServer::start(&store, &[]);
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let name = "X".repeat(70_000);
    let request = format!(
        "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n{name}: 1\r\nConnection: close\r\n\r\n"
    );
    for url in [server.url().to_owned(), receiver.url()] {
        let answer = send(url.trim_start_matches("http://"), request.as_bytes(), false);
        assert_eq!(statuses(&answer), vec![431], "{url}");
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
    assert!(!receiver.log().contains("panicked"), "{}", receiver.log());
}

/// A file of 50 000 bytes to add to a store (kept while the dir lives):
/// its NAR is large enough that its answer is never ready at once.
fn data_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    fs::write(&file, vec![7u8; 50_000]).unwrap();
    (dir, file)
}

/// Found by the corpus (see `docs/reliability.md`): a HEAD with another
/// request pipelined behind it. actix-http 3.11's codec keeps "the request
/// is HEAD" for the last request it decoded, not for the one it answers,
/// so by the time the HEAD's answer was written the pipelined GET had
/// reset it: a narinfo's HEAD answer carried the body (the client reads it
/// as the start of the next answer), and a NAR's, whose body larder never
/// makes for HEAD, ended the connection with no answer at all. Fixed in
/// larder (`framing::head_without_body`): a HEAD's answer is sent as an
/// empty stream with an explicit `Content-Length`.
#[test]
fn a_pipelined_head_is_answered_without_a_body() {
    let (_dir, file) = data_file();
    let store = TestStore::new();
    let path = store.add([&file]).remove(0);
    let server = LarderServer::start(&store, &[]);
    let narinfo = format!("/{}.narinfo", hash_part(&path));
    let url = field(&server, &narinfo, "URL", &[]);
    let absent = format!("/{}.narinfo", "0".repeat(32));
    // The receiver answers HEAD of narinfos from its host's store.
    let host = TestStore::new();
    let hosted = host.add([&file]).remove(0);
    let receiver = TestReceiver::start(&host, &[]);
    let server_addr = server.url().trim_start_matches("http://").to_owned();
    let receiver_url = receiver.url();
    let receiver_addr = receiver_url.trim_start_matches("http://");
    let auth = format!("Authorization: Basic {}\r\n", base64_basic(PUSHER, TOKEN));
    let cases = [
        (server_addr.as_str(), "", narinfo, 200),
        (&server_addr, "", format!("/{url}"), 200),
        (&server_addr, "", absent.clone(), 404),
        (
            receiver_addr,
            &auth,
            format!("/{}.narinfo", hash_part(&hosted)),
            200,
        ),
        (receiver_addr, &auth, absent, 404),
    ];
    for (addr, auth, target, status) in cases {
        let request = format!(
            "HEAD {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\nGET /nix-cache-info HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
        );
        let answer = send(addr, request.as_bytes(), false);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(statuses(&answer), vec![status, 200], "{target}: {text}");
        let second = find(&answer[1..], b"HTTP/1.1 ").unwrap() + 1;
        let head_end = find(&answer, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            head_end, second,
            "{target}: the HEAD answer has a body: {text}"
        );
        // The HEAD still says how long the GET's body is.
        let get = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        let got = send(addr, get.as_bytes(), false);
        let body_len = got.len() - (find(&got, b"\r\n\r\n").unwrap() + 4);
        let length = format!("content-length: {body_len}\r\n");
        let head = String::from_utf8_lossy(&answer[..head_end]).to_ascii_lowercase();
        assert!(
            head.contains(&length),
            "{target}: want {length:?} in {head}"
        );
    }
}

/// The header lines of the first answer in `answer`, lowercased, without
/// `Date` (it may tick between two requests).
fn header_lines(answer: &[u8]) -> Vec<String> {
    let end = find(answer, b"\r\n\r\n").expect("a whole header block");
    let mut lines: Vec<String> = String::from_utf8_lossy(&answer[..end])
        .to_ascii_lowercase()
        .split("\r\n")
        .filter(|l| !l.starts_with("date:"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// A HEAD answered 304 (`If-None-Match` matching a NAR's tag) carries the
/// same headers as the GET's 304, and no `Content-Length: 0`: HEAD answers
/// are rewritten to headers alone (`framing::head_without_body`), and a
/// 304's empty body used to become an explicit length of 0, which tells a
/// cache revalidating its stored NAR that the NAR is empty (RFC 9110 §8.6
/// allows a 304 only the 200's length).
#[test]
fn a_head_answered_not_modified_keeps_the_get_headers() {
    let (_dir, file) = data_file();
    let store = TestStore::new();
    let path = store.add([&file]).remove(0);
    let server = LarderServer::start(&store, &["--compression", "zstd"]);
    let addr = server.url().trim_start_matches("http://").to_owned();
    let narinfo = format!("/{}.narinfo", hash_part(&path));
    let zst = format!("/{}", field(&server, &narinfo, "URL", &[]));
    let hash = field(&server, &narinfo, "NarHash", &[]);
    let hash = hash.trim_start_matches("sha256:");
    let identity = format!("/nar/{hash}.nar?hash={}", hash_part(&path));
    let cases = [
        (identity.clone(), format!("\"{hash}\""), ""),
        (
            identity,
            format!("W/\"{hash}-zstd\""),
            "Accept-Encoding: zstd\r\n",
        ),
        (zst, format!("W/\"{hash}-zstd\""), ""),
    ];
    for (target, tag, extra) in cases {
        let ask = |method: &str| {
            let request = format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {tag}\r\n{extra}Connection: close\r\n\r\n"
            );
            send(&addr, request.as_bytes(), false)
        };
        let (get, head) = (ask("GET"), ask("HEAD"));
        assert_eq!(statuses(&get), vec![304], "{target}");
        assert_eq!(statuses(&head), vec![304], "{target}");
        assert_eq!(
            header_lines(&head),
            header_lines(&get),
            "{target} {extra}: HEAD and GET differ"
        );
        let lines = header_lines(&head);
        assert!(
            !lines.iter().any(|l| l.starts_with("content-length: 0")),
            "{target}: {lines:?}"
        );
    }
}

/// Found by the hostile pass and NOT fixed (see `docs/reliability.md`): a
/// GET with a HEAD pipelined behind it. actix-http 3.11's codec leaves out
/// a body when the last request it *decoded* is a HEAD, so a GET whose
/// answer is not ready when the HEAD behind it is decoded (a narinfo or a
/// NAR, read on a blocking thread) goes out with its `Content-Length` and
/// no body: the client reads the next answer as that body. Both
/// larder-server and receive; HEAD-only and GET-only pipelines are fine,
/// and so are clients that do not pipeline (Nix, curl). larder cannot
/// reach the codec's flag from a middleware: the fix belongs in
/// actix-http (carry "HEAD" with each queued request).
#[test]
#[ignore = "open: a GET answered while a HEAD behind it is decoded loses its body (docs/reliability.md)"]
fn a_get_with_a_head_pipelined_behind_it_keeps_its_body() {
    let (_dir, file) = data_file();
    let store = TestStore::new();
    let path = store.add([&file]).remove(0);
    let server = LarderServer::start(&store, &[]);
    let addr = server.url().trim_start_matches("http://").to_owned();
    let narinfo = format!("/{}.narinfo", hash_part(&path));
    let nar = format!("/{}", field(&server, &narinfo, "URL", &[]));
    for target in [narinfo, nar] {
        let get = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let request = format!(
            "{get}{get}HEAD /nix-cache-info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let answer = send(&addr, request.as_bytes(), false);
        let alone = send(
            &addr,
            format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            false,
        );
        let body = &alone[find(&alone, b"\r\n\r\n").unwrap() + 4..];
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(statuses(&answer), vec![200, 200, 200], "{target}: {text}");
        // Both GETs carry the whole body, each right after its headers.
        let mut rest = &answer[..];
        for i in 0..2 {
            let start = find(rest, b"\r\n\r\n").unwrap() + 4;
            assert!(
                rest[start..].starts_with(body),
                "{target}: GET {i} lost its body: {text}"
            );
            rest = &rest[start + body.len()..];
        }
        assert!(rest.starts_with(b"HTTP/1.1 200"), "{target}: {text}");
    }
}
