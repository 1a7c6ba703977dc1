//! A hostile pass over `accel-redirect` (nginx sends cached compressed
//! NARs, `contrib/nginx/larder.conf`), with the real nginx and Nix: header
//! games from clients talking to larder directly and through nginx, the
//! internal locations spelled every way, conditional and range requests
//! nginx would judge by its own file, cache files cut short or corrupted,
//! and private views.

use std::io::{Read, Write};
use std::time::Duration;

use larder_tests::proxy::{
    OFFLOAD_FALLBACK, OFFLOAD_PREFIX, OFFLOAD_REDIRECTED, TestProxy, curl, dump_of,
};
use larder_tests::receive::NO_NARINFO_CACHE;
use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::views::{TOKEN_A, ViewFiles, copy_from};
use larder_tests::{TestStore, hash_part, narinfo_url, nix_command, shell_derivation};

struct Setup {
    store: TestStore,
    signer: TestSigner,
    server: LarderServer,
    cache: tempfile::TempDir,
    proxy: TestProxy,
    path: String,
    /// `/nar/<narhash>.nar.zst?hash=…`, as the narinfo names it.
    zst: String,
    /// `/nar/<narhash>.nar?hash=…`.
    nar: String,
    /// The cache file's name.
    file: String,
}

/// One path with a 1.2 MB compressible file, served with `.nar.zst` URLs,
/// a compressed-NAR cache and `accel-redirect` (plus `flags`), behind the
/// recipe's nginx, its URLs under the (public) view at `prefix`; its
/// compressed NAR is in the cache.
fn setup(flags: &[&str], store: TestStore, path: String, prefix: &str) -> Setup {
    let cache = tempfile::tempdir().unwrap();
    let signer = TestSigner::start(&store, &[]);
    let mut args = vec![
        "--compression",
        "zstd",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--accel-redirect",
        OFFLOAD_PREFIX,
    ];
    args.extend_from_slice(flags);
    let server = LarderServer::start_signed(&store, &signer.socket, &args);
    let proxy = TestProxy::nginx_offload(server.url().trim_start_matches("http://"), cache.path());
    let (zst, nar, file) = nar_urls(&server, &path, prefix);
    fill(&server, &zst);
    Setup {
        store,
        signer,
        server,
        cache,
        proxy,
        path,
        zst,
        nar,
        file,
    }
}

fn big_path(store: &TestStore) -> String {
    store
        .build_expr(&shell_derivation(
            "offload-hostile",
            "i=0; while [ $i -lt 40000 ]; do echo line $i of a compressible file; i=$((i+1)); done > $out",
        ))
        .remove(0)
}

fn plain() -> Setup {
    let store = TestStore::new();
    let path = big_path(&store);
    setup(&[], store, path, "")
}

/// The URLs of `path` under the view at `prefix` ("" or "/name"), and its
/// cache file's name.
fn nar_urls(server: &LarderServer, path: &str, prefix: &str) -> (String, String, String) {
    let narinfo = server
        .get(&format!("{prefix}{}", narinfo_url(path)), &[])
        .text();
    let nar_hash = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("NarHash: sha256:"))
        .unwrap_or_else(|| panic!("{narinfo}"))
        .to_owned();
    let q = format!("?hash={}", hash_part(path));
    (
        format!("{prefix}/nar/{nar_hash}.nar.zst{q}"),
        format!("{prefix}/nar/{nar_hash}.nar{q}"),
        format!("{nar_hash}-zstd1.nar.zst"),
    )
}

/// A single range of a `.nar.zst` compresses the whole NAR into the cache
/// first (routes/nar.rs), so the file is there when this returns.
fn fill(server: &LarderServer, zst: &str) {
    let reply = server.get(zst, &[("Range", "bytes=0-1")]);
    assert_eq!(reply.status, 206, "{:?}", reply.headers);
}

/// A raw HTTP/1.1 GET to larder with `headers` as raw bytes: the status,
/// the head (lower case) and the body. The body's end is found from
/// `Content-Length`, so a response cut short shows as a short body.
fn raw_get(server: &LarderServer, target: &str, headers: &[u8]) -> (u16, String, Vec<u8>) {
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    req.extend_from_slice(headers);
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .map(str::trim_end)
}

fn zstd_decode(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(bytes).expect("a zstd body")
}

#[test]
fn a_direct_client_gets_the_body_unless_it_sends_one_exact_on_itself() {
    let s = plain();
    let dump = dump_of(&s.store, &s.path);
    let cached = std::fs::read(s.cache.path().join(&s.file)).unwrap();
    let redirect = format!("x-accel-redirect: {OFFLOAD_PREFIX}file/{}", s.file);
    // Spellings nginx never sends: larder sends the body.
    let bodies: [&[u8]; 9] = [
        b"",
        b"X-Larder-Offload: on, off\r\n",
        b"X-Larder-Offload: yes\r\n",
        b"X-Larder-Offload: on\xff\r\n",
        b"X-Larder-Offload:\r\n",
        b"X-Larder-Offload: off\r\nX-Larder-Offload: on\r\n",
        b"X-Larder-Offload: on\r\nX-Larder-Offload: off\r\n",
        b"X-Larder-Offload: on\r\nX-Larder-Offload: on\r\n",
        b"X-Larder-Offload: off\r\n",
    ];
    for headers in bodies {
        let (status, head, body) = raw_get(&s.server, &s.zst, headers);
        let what = String::from_utf8_lossy(headers);
        assert_eq!(status, 200, "{what}: {head}");
        assert!(!head.contains("x-accel-redirect"), "{what}: {head}");
        assert_eq!(body, cached, "{what}");
        assert!(head.contains("vary: x-larder-offload"), "{what}: {head}");
    }
    // What nginx sends (any case, surrounding blanks are not the value):
    // the empty answer, which the client asked for; still varying.
    for headers in [
        &b"X-Larder-Offload: on\r\n"[..],
        b"x-larder-offload: ON\r\n",
        b"X-Larder-Offload:   oN  \r\n",
    ] {
        let (status, head, body) = raw_get(&s.server, &s.zst, headers);
        assert_eq!(status, 200, "{head}");
        assert!(head.contains(&redirect), "{head}");
        assert_eq!(header(&head, "content-length"), Some("0"), "{head}");
        assert!(body.is_empty());
        assert!(head.contains("vary: x-larder-offload"), "{head}");
    }
    // Every NAR answer varies on the header: 304, 206, 404 aside.
    let tag = format!("W/\"{}-zstd\"", s.file.trim_end_matches("-zstd1.nar.zst"));
    for (headers, want) in [
        (format!("If-None-Match: {tag}\r\n"), 304),
        ("Range: bytes=0-9\r\n".to_owned(), 206),
    ] {
        let (status, head, _) = raw_get(&s.server, &s.zst, headers.as_bytes());
        assert_eq!(status, want, "{head}");
        assert!(head.contains("vary: x-larder-offload"), "{head}");
    }
    let (status, head, body) = raw_get(&s.server, &s.nar, b"Accept-Encoding: zstd\r\n");
    assert_eq!(status, 200, "{head}");
    assert_eq!(zstd_decode(&body), dump);
    assert!(head.contains("x-larder-offload"), "{head}");
    // A direct `off` (no redirect preceded it) on a HEAD, a miss or an
    // identity NAR is no fallback; on a cache hit served here it is one.
    assert_eq!(s.server.metric(OFFLOAD_FALLBACK), 1.0);
    for target in [
        &s.nar,
        &s.zst.replace(hash_part(&s.path), "0".repeat(32).as_str()),
    ] {
        raw_get(&s.server, target, b"X-Larder-Offload: off\r\n");
    }
    assert_eq!(s.server.metric(OFFLOAD_FALLBACK), 1.0);
}

#[test]
fn clients_of_nginx_cannot_steer_the_redirect_or_reach_the_files() {
    let s = plain();
    let dump = dump_of(&s.store, &s.path);
    let url = |p: &str| format!("{}{p}", s.proxy.url());
    for spoof in [
        &["X-Larder-Offload: off"][..],
        &["X-Larder-Offload: on", "X-Larder-Offload: off"],
        &["X-Accel-Redirect: /_larder_cache/file/../../../etc/passwd"],
        &["X-Accel-Redirect: /etc/passwd", "X-Larder-Offload: off"],
    ] {
        let (before, fallbacks) = (
            s.server.metric(OFFLOAD_REDIRECTED),
            s.server.metric(OFFLOAD_FALLBACK),
        );
        let (status, head, body) = curl(&url(&s.zst), spoof);
        assert_eq!(status, 200, "{spoof:?}: {head}");
        assert_eq!(zstd_decode(&body), dump, "{spoof:?}");
        assert_eq!(header(&head, "x-accel-redirect"), None, "{head}");
        // nginx replaced the header: offloaded, no fallback.
        assert_eq!(
            s.server.metric(OFFLOAD_REDIRECTED),
            before + 1.0,
            "{spoof:?}"
        );
        assert_eq!(s.server.metric(OFFLOAD_FALLBACK), fallbacks, "{spoof:?}");
    }
    let f = &s.file;
    for target in [
        format!("{OFFLOAD_PREFIX}file/{f}"),
        format!("{OFFLOAD_PREFIX}encoded/{f}"),
        format!("{OFFLOAD_PREFIX}file/../{f}"),
        format!("/x/..{OFFLOAD_PREFIX}file/{f}"),
        format!("/nar/..{OFFLOAD_PREFIX}file/{f}"),
        format!("/%5flarder_cache/file/{f}"),
        format!("/_larder_cache%2ffile%2f{f}"),
        format!("/%2e%2e{OFFLOAD_PREFIX}file/{f}"),
        format!("/{OFFLOAD_PREFIX}file/{f}"),
        format!("{OFFLOAD_PREFIX}file/index.sqlite"),
        format!("{OFFLOAD_PREFIX}file/"),
    ] {
        let out = std::process::Command::new("curl")
            .args(["-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}"])
            .arg(url(&target))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let status = text.rsplit('\n').next().unwrap();
        assert!(["404", "400"].contains(&status), "{target}: {text}");
        assert!(out.stdout.len() < 1000, "{target}: a file's bytes");
    }
}

#[test]
fn conditional_and_range_requests_through_nginx_answer_as_larder_does() {
    let s = plain();
    let dump = dump_of(&s.store, &s.path);
    let nar_hash = s.file.trim_end_matches("-zstd1.nar.zst");
    let weak = format!("W/\"{nar_hash}-zstd\"");
    let strong = format!("\"{nar_hash}\"");
    // The cache file's mtime, as nginx would have sent it.
    let mtime = std::fs::metadata(s.cache.path().join(&s.file))
        .unwrap()
        .modified()
        .unwrap();
    let date = httpdate(mtime);
    let future = httpdate(mtime + Duration::from_secs(86400));
    let past = httpdate(mtime - Duration::from_secs(86400));
    let cases: Vec<Vec<String>> = vec![
        vec![],
        vec![format!("If-Range: {weak}"), "Range: bytes=0-9".into()],
        vec![format!("If-Range: {date}"), "Range: bytes=0-9".into()],
        vec![format!("If-Range: {strong}"), "Range: bytes=0-9".into()],
        vec!["If-Range: \"other\"".into(), "Range: bytes=0-9".into()],
        vec!["Range: bytes=0-9".into()],
        vec!["Range: bytes=0-1,5-6".into()],
        vec!["Range: bytes=99999999-".into()],
        vec![format!("If-Modified-Since: {future}")],
        vec![format!("If-Modified-Since: {date}")],
        vec![format!("If-Unmodified-Since: {past}")],
        vec![format!("If-Match: {weak}")],
        vec!["If-Match: \"other\"".into()],
        vec![format!("If-None-Match: {weak}")],
        vec!["If-None-Match: \"other\"".into()],
    ];
    for url in [&s.zst, &s.nar] {
        for ae in [None, Some("Accept-Encoding: zstd")] {
            for case in &cases {
                let mut headers: Vec<&str> = case.iter().map(String::as_str).collect();
                headers.extend(ae);
                let (status, head, body) = curl(&format!("{}{url}", s.proxy.url()), &headers);
                let (want_status, want_head, want_body) =
                    curl(&format!("{}{url}", s.server.url()), &headers);
                assert_eq!(status, want_status, "{url} {headers:?}: {head}");
                assert_eq!(body, want_body, "{url} {headers:?}: {head}");
                for name in ["content-range", "content-encoding", "etag"] {
                    assert_eq!(
                        header(&head, name),
                        header(&want_head, name),
                        "{url} {headers:?} {name}: {head}"
                    );
                }
                assert_eq!(header(&head, "last-modified"), None, "{head}");
                assert_eq!(header(&head, "x-accel-redirect"), None, "{head}");
                if status == 200 && header(&head, "content-encoding").is_none() && url == &s.nar {
                    assert_eq!(body, dump, "{headers:?}");
                }
            }
        }
    }
    // The plain requests were offloaded; the rest stayed with larder.
    assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), 6.0);
}

/// An HTTP date (IMF-fixdate) for `t`, by `date`, as nginx writes them.
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%a, %d %b %Y %H:%M:%S GMT",
        ])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_cut_or_corrupt_cache_file_never_reaches_nix_as_a_good_nar() {
    let s = plain();
    let dump = dump_of(&s.store, &s.path);
    let file = s.cache.path().join(&s.file);
    let good = std::fs::read(&file).unwrap();

    // Cut short (disk trouble, a hand edit): larder compresses the NAR
    // again, and nginx never sends the short file as a clean 200.
    std::fs::write(&file, &good[..good.len() / 2]).unwrap();
    let before = s.server.metric(OFFLOAD_REDIRECTED);
    for (url, headers) in [(&s.zst, &[][..]), (&s.nar, &["Accept-Encoding: zstd"][..])] {
        let (status, head, body) = curl(&format!("{}{url}", s.proxy.url()), headers);
        assert_eq!(status, 200, "{head}");
        assert_eq!(zstd_decode(&body), dump, "{url}");
    }
    let out = copy_from(&s.proxy.url(), &s.path, &s.signer.public_key, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.server.log().contains("wrong size"), "{}", s.server.log());
    // The miss compressed it again, and that fill replaced the file.
    larder_tests::views::eventually("the file compressed again", || {
        std::fs::read(&file).is_ok_and(|b| b.len() == good.len())
    });
    let (_, head, _) = curl(&format!("{}{}", s.proxy.url(), s.zst), &[]);
    assert_eq!(header(&head, "x-accel-redirect"), None);
    assert!(
        s.server.metric(OFFLOAD_REDIRECTED) > before,
        "offloaded again"
    );

    // The same size, other bytes: nginx (and larder) send them; Nix
    // rejects them by the NAR hash and imports nothing.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid..mid + 64].fill(0);
    std::fs::write(&file, &bad).unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = nix_command("nix")
        .args(["copy", "--from", &s.proxy.url(), "--to"])
        .arg(dest.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &s.signer.public_key])
        .args(NO_NARINFO_CACHE)
        .arg(&s.path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "imported a corrupt NAR: {err}");
    let valid = nix_command("nix")
        .args(["path-info", "--store"])
        .arg(dest.path())
        .arg(&s.path)
        .output()
        .unwrap();
    assert!(
        !valid.status.success(),
        "a path from a corrupt NAR is valid"
    );
}

#[test]
fn private_views_check_the_token_before_any_redirect() {
    let store = TestStore::new();
    let inside = big_path(&store);
    let outside = store
        .build_expr(&shell_derivation("outside", "echo secret > $out"))
        .remove(0);
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[&inside]);
    let tokens = files.tokens("a", TOKEN_A);
    let config = files.config(&format!(
        "[[view]]\nname = \"priv\"\nprefix = \"priv\"\ngc-root-dirs = [\"{}\"]\nserve = true\ntokens-file = \"{}\"\n\
         [[view]]\nname = \"all\"\nprefix = \"all\"\neverything = true\n",
        roots.display(),
        tokens.display()
    ));
    let s = setup(
        &["--config", config.to_str().unwrap()],
        store,
        inside.clone(),
        "/all",
    );
    let bearer = format!("Authorization: Bearer {TOKEN_A}");
    let (zst, nar) = (
        s.zst.replacen("/all/", "/priv/", 1),
        s.nar.replacen("/all/", "/priv/", 1),
    );
    let (outside_zst, _, outside_file) = nar_urls(&s.server, &outside, "/all");
    fill(&s.server, &outside_zst);
    assert!(s.cache.path().join(&outside_file).exists());
    let outside_in_priv = outside_zst.replacen("/all/", "/priv/", 1);
    let proxy = |p: &str| format!("{}{p}", s.proxy.url());

    let before = s.server.metric(OFFLOAD_REDIRECTED);
    for (url, headers) in [
        (zst.clone(), vec![]),
        (
            zst.clone(),
            vec!["Authorization: Bearer wrong-token-0123456789abcdef"],
        ),
        (nar.clone(), vec!["Accept-Encoding: zstd"]),
        (outside_in_priv.clone(), vec![bearer.as_str()]),
        (outside_in_priv.clone(), vec![]),
    ] {
        let (status, head, body) = curl(&proxy(&url), &headers);
        assert!([401, 404].contains(&status), "{url} {headers:?}: {head}");
        assert!(body.len() < 1000, "{url}: a NAR's bytes");
        assert_eq!(header(&head, "x-accel-redirect"), None);
    }
    assert_eq!(
        s.server.metric(OFFLOAD_REDIRECTED),
        before,
        "redirected unchecked"
    );

    // With the token: offloaded, the view's private lifetime kept.
    let (status, head, body) = curl(&proxy(&zst), &[bearer.as_str()]);
    assert_eq!(status, 200, "{head}");
    assert_eq!(zstd_decode(&body), dump_of(&s.store, &inside));
    assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), before + 1.0);
    let direct = s
        .server
        .get(&zst, &[("Authorization", &format!("Bearer {TOKEN_A}"))]);
    let private = direct.header("Cache-Control").unwrap().to_ascii_lowercase();
    assert!(private.contains("private"), "{private}");
    assert_eq!(
        header(&head, "cache-control"),
        Some(private.as_str()),
        "{head}"
    );
    // And a real Nix with the token in its netrc, through nginx.
    let netrc = files.netrc(TOKEN_A);
    let out = copy_from(
        &format!("{}/priv", s.proxy.url()),
        &inside,
        &s.signer.public_key,
        Some(&netrc),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), before + 2.0);
}

#[test]
fn a_caching_nginx_in_front_keeps_encodings_and_the_empty_answer_apart() {
    let s = plain();
    let dump = dump_of(&s.store, &s.path);
    let front = TestProxy::nginx_cache(s.server.url().trim_start_matches("http://"));
    let url = format!("{}{}", front.url(), s.nar);
    // A client taking zstd first, then the one Nix 2.8 is (no
    // Accept-Encoding): with two Vary lines nginx 1.22 keyed on the last
    // only and sent it the zstd body.
    let (status, head, body) = curl(&url, &["Accept-Encoding: zstd"]);
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-encoding"), Some("zstd"), "{head}");
    assert_eq!(zstd_decode(&body), dump);
    let vary: Vec<&str> = head.lines().filter(|l| l.starts_with("vary:")).collect();
    assert_eq!(vary, ["vary: accept-encoding, x-larder-offload"], "{head}");
    for _ in 0..2 {
        let (status, head, body) = curl(&url, &[]);
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "content-encoding"), None, "{head}");
        assert_eq!(body, dump, "{head}");
    }
    // A client sending nginx's header itself through the caching front
    // gets no file, and leaves nothing in the cache for others.
    let zst = format!("{}{}", front.url(), s.zst);
    let (_, head, _) = curl(&zst, &["X-Larder-Offload: on"]);
    assert_eq!(header(&head, "x-accel-redirect"), None, "{head}");
    for headers in [&[][..], &["Accept-Encoding: zstd"]] {
        let (status, head, body) = curl(&zst, headers);
        assert_eq!(status, 200, "{head}");
        assert_eq!(zstd_decode(&body), dump, "{head}");
    }
    assert!(!s.server.log().contains("panicked"), "{}", s.server.log());
}

#[test]
fn a_cache_nginx_cannot_read_falls_back_to_larder_with_the_right_bytes() {
    let s = plain();
    // nginx as nobody, the cache dir root's with mode 0700 (what the
    // shipped unit's DynamicUser gives without offloadUser): nginx's open
    // fails with EACCES, and its 403 goes to the fallback.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let proxy = TestProxy::nginx_offload_as(
        s.server.url().trim_start_matches("http://"),
        s.cache.path(),
        Some((65534, 65534)),
    );
    let out = copy_from(&proxy.url(), &s.path, &s.signer.public_key, None);
    assert!(
        out.status.success(),
        "{}\n--- nginx ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    assert!(proxy.log().contains("Permission denied"), "{}", proxy.log());
    let dump = dump_of(&s.store, &s.path);
    for (url, headers) in [(&s.zst, &[][..]), (&s.nar, &["Accept-Encoding: zstd"][..])] {
        let (status, head, body) = curl(&format!("{}{url}", proxy.url()), headers);
        assert_eq!(status, 200, "{head}");
        assert_eq!(zstd_decode(&body), dump, "{url}");
    }
    // Every redirect came back and was counted once as a fallback.
    let redirected = s.server.metric(OFFLOAD_REDIRECTED);
    assert_eq!(redirected, 3.0);
    assert_eq!(s.server.metric(OFFLOAD_FALLBACK), redirected);
}
