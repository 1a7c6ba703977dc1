//! `accel-redirect` with the real nginx and `contrib/nginx/larder.conf`:
//! larder-server answers nginx's request (`X-Larder-Offload: on`) for a
//! cached compressed NAR with an empty body naming the cache file, and
//! nginx sends the file itself; a request without that header gets the
//! body from larder. What
//! the client gets must not change: the same bytes (`nix-store --dump`
//! after decompression), the same `Content-Type`, `Content-Encoding`,
//! `ETag` and `Cache-Control`, a real `nix copy` with require-sigs
//! accepting it; ranges, HEADs and identity NARs stay with larder; a file
//! gone before nginx opens it is sent by larder after all; the internal
//! locations are not reachable from outside.

use larder_tests::fixtures::wait_for_cached_nars;
use larder_tests::proxy::{
    OFFLOAD_FALLBACK, OFFLOAD_PREFIX, OFFLOAD_REDIRECTED, TestProxy, curl, dump_of,
    substitute_through,
};
use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, hash_part, narinfo_url, run_stdout, shell_derivation};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

struct Setup {
    store: TestStore,
    signer: TestSigner,
    server: LarderServer,
    cache: tempfile::TempDir,
    /// The closure's paths, the top one last.
    paths: Vec<String>,
}

/// A closure of two paths, one with a 2 MB file (several read chunks),
/// served with `.nar.zst` URLs, a compressed-NAR
/// cache and `accel-redirect`.
fn setup() -> Setup {
    let store = TestStore::new();
    let dep = shell_derivation("offload-dep", "echo dep > $out");
    let top = format!(
        r#"derivation {{ name = "offloaded"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; dep = {dep}; args = ["-c" "mkdir $out; echo $dep > $out/dep; i=0; while [ $i -lt 60000 ]; do echo line $i of a compressible file; i=$((i+1)); done > $out/text"]; }}"#
    );
    let top = store.build_expr(&top).remove(0);
    let paths: Vec<String> = run_stdout(store.nix("nix-store").args(["-qR", &top]))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(paths.len(), 2);
    let cache = tempfile::tempdir().unwrap();
    let signer = TestSigner::start(&store, &[]);
    let server = LarderServer::start_signed(
        &store,
        &signer.socket,
        &[
            "--compression",
            "zstd",
            "--cache-dir",
            cache.path().to_str().unwrap(),
            "--accel-redirect",
            OFFLOAD_PREFIX,
        ],
    );
    Setup {
        store,
        signer,
        server,
        cache,
        paths,
    }
}

fn narinfo_field(server: &LarderServer, path: &str, name: &str) -> String {
    let text = server.get(&narinfo_url(path), &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

fn zstd_decode(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(bytes).expect("a zstd body")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .map(str::trim_end)
}

#[test]
fn nginx_sends_cached_nars_and_clients_see_no_difference() {
    let s = setup();
    let proxy =
        TestProxy::nginx_offload(s.server.url().trim_start_matches("http://"), s.cache.path());
    let top = s.paths.last().unwrap();

    // The first client's downloads fill the cache; nothing is redirected.
    let out = substitute_through(&proxy, top, &s.signer.public_key);
    assert!(
        out.status.success(),
        "first client:\n{}\n--- nginx ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), 0.0);
    wait_for_cached_nars(s.cache.path(), s.paths.len());

    // The second client's come from nginx, and Nix accepts them.
    let out = substitute_through(&proxy, top, &s.signer.public_key);
    assert!(
        out.status.success(),
        "second client:\n{}\n--- nginx ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), s.paths.len() as f64);

    for path in &s.paths {
        let dump = dump_of(&s.store, path);
        let nar_hash = narinfo_field(&s.server, path, "NarHash: sha256:");
        let url = narinfo_field(&s.server, path, "URL: ");
        assert!(url.contains(".nar.zst"), "{url}");
        let name = format!("{nar_hash}-zstd1.nar.zst");
        let file_size = std::fs::metadata(s.cache.path().join(&name)).unwrap().len() as usize;
        let weak = format!("w/\"{nar_hash}-zstd\"");

        // A `.nar.zst` URL: the cache file as larder would send it.
        let before = s.server.metric(OFFLOAD_REDIRECTED);
        let (status, head, body) = curl(&format!("{}/{url}", proxy.url()), &[]);
        assert_eq!(status, 200, "{head}");
        assert_eq!(
            s.server.metric(OFFLOAD_REDIRECTED),
            before + 1.0,
            "not offloaded"
        );
        assert_eq!(body.len(), file_size, "{head}");
        assert_eq!(zstd_decode(&body), dump, "{path}");
        assert_eq!(
            header(&head, "content-type"),
            Some("application/zstd"),
            "{head}"
        );
        assert_eq!(header(&head, "etag"), Some(weak.as_str()), "{head}");
        assert_eq!(header(&head, "cache-control"), Some(IMMUTABLE), "{head}");
        assert_eq!(header(&head, "content-encoding"), None, "{head}");
        assert_eq!(header(&head, "x-accel-redirect"), None, "{head}");
        // nginx's own, once (larder's as well would make two lines).
        let ranges = head.lines().filter(|l| l.starts_with("accept-ranges:"));
        assert_eq!(
            ranges.collect::<Vec<_>>(),
            ["accept-ranges: bytes"],
            "{head}"
        );
        let redirect = s
            .server
            .get(&format!("/{url}"), &[("X-Larder-Offload", "on")]);
        let name_in = format!("{OFFLOAD_PREFIX}file/{name}");
        assert_eq!(redirect.header("X-Accel-Redirect"), Some(name_in.as_str()));
        assert!(redirect.body.is_empty());
        // A shared cache in front keeps that answer apart from the others.
        let varies = |r: &larder_tests::server::Reply| {
            r.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("vary") && v.eq_ignore_ascii_case("x-larder-offload")
            })
        };
        assert!(varies(&redirect), "{:?}", redirect.headers);
        // Without nginx's header (a client talking to larder directly, or
        // through another proxy): the body from larder, never an empty one.
        let before = s.server.metric(OFFLOAD_REDIRECTED);
        let larder = s.server.get(&format!("/{url}"), &[]);
        assert_eq!(larder.header("X-Accel-Redirect"), None);
        assert!(varies(&larder), "{:?}", larder.headers);
        assert_eq!(larder.body, body, "nginx and larder send other bytes");
        let encoded = s.server.get(
            &format!("/nar/{nar_hash}.nar?hash={}", hash_part(path)),
            &[("Accept-Encoding", "zstd")],
        );
        assert_eq!(encoded.header("X-Accel-Redirect"), None);
        assert_eq!(zstd_decode(&encoded.body), dump);
        assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), before);

        // A `.nar` URL to a client that takes zstd: Content-Encoding.
        let identity = format!("/nar/{nar_hash}.nar?hash={}", hash_part(path));
        let before = s.server.metric(OFFLOAD_REDIRECTED);
        let (status, head, body) = curl(
            &format!("{}{identity}", proxy.url()),
            &["Accept-Encoding: zstd"],
        );
        assert_eq!(status, 200, "{head}");
        assert_eq!(
            s.server.metric(OFFLOAD_REDIRECTED),
            before + 1.0,
            "not offloaded"
        );
        assert_eq!(header(&head, "content-encoding"), Some("zstd"), "{head}");
        assert_eq!(header(&head, "vary"), Some("accept-encoding"), "{head}");
        assert_eq!(
            header(&head, "content-type"),
            Some("application/x-nix-nar"),
            "{head}"
        );
        assert_eq!(header(&head, "etag"), Some(weak.as_str()), "{head}");
        assert_eq!(header(&head, "cache-control"), Some(IMMUTABLE), "{head}");
        assert_eq!(zstd_decode(&body), dump, "{path}");

        // What stays with larder: identity bytes, a range, a HEAD.
        let before = s.server.metric(OFFLOAD_REDIRECTED);
        let (status, head, body) = curl(&format!("{}{identity}", proxy.url()), &[]);
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "content-encoding"), None, "{head}");
        assert_eq!(body, dump);
        let (status, head, body) = curl(&format!("{}/{url}", proxy.url()), &["Range: bytes=10-49"]);
        assert_eq!(status, 206, "{head}");
        assert_eq!(body, larder.body[10..50], "{head}");
        let head_only = std::process::Command::new("curl")
            .args(["-sS", "-I", &format!("{}/{url}", proxy.url())])
            .output()
            .unwrap();
        let head_text = String::from_utf8_lossy(&head_only.stdout).to_ascii_lowercase();
        assert_eq!(
            header(&head_text, "content-length"),
            Some(file_size.to_string().as_str()),
            "{head_text}"
        );
        assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), before, "offloaded");

        // The internal locations answer nothing from outside.
        for kind in ["file", "encoded"] {
            let (status, head, _) = curl(
                &format!("{}{OFFLOAD_PREFIX}{kind}/{name}", proxy.url()),
                &[],
            );
            assert_eq!(status, 404, "{head}");
        }
    }
    // A client that says it came from nginx's fallback is served here.
    let url = narinfo_field(&s.server, top, "URL: ");
    let before = s.server.metric(OFFLOAD_REDIRECTED);
    let reply = s
        .server
        .get(&format!("/{url}"), &[("X-Larder-Offload", "off")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("X-Accel-Redirect"), None);
    assert_eq!(zstd_decode(&reply.body), dump_of(&s.store, top));
    assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), before);
}

#[test]
fn a_file_gone_before_nginx_opens_it_is_sent_by_larder() {
    let s = setup();
    // nginx looks in an empty directory: every file larder names is gone
    // by the time nginx opens it, as after an eviction in between.
    let elsewhere = tempfile::tempdir().unwrap();
    let proxy = TestProxy::nginx_offload(
        s.server.url().trim_start_matches("http://"),
        elsewhere.path(),
    );
    let top = s.paths.last().unwrap();
    let out = substitute_through(&proxy, top, &s.signer.public_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_cached_nars(s.cache.path(), s.paths.len());

    let out = substitute_through(&proxy, top, &s.signer.public_key);
    assert!(
        out.status.success(),
        "{}\n--- nginx ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    let n = s.paths.len() as f64;
    assert_eq!(s.server.metric(OFFLOAD_REDIRECTED), n);
    assert_eq!(s.server.metric(OFFLOAD_FALLBACK), n);
    for path in &s.paths {
        let url = narinfo_field(&s.server, path, "URL: ");
        let (status, head, body) = curl(&format!("{}/{url}", proxy.url()), &[]);
        assert_eq!(status, 200, "{head}");
        assert_eq!(header(&head, "x-accel-redirect"), None, "{head}");
        assert_eq!(zstd_decode(&body), dump_of(&s.store, path));
    }
    assert_eq!(s.server.metric(OFFLOAD_FALLBACK), 2.0 * n);
}
