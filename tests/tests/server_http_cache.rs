//! Responses any HTTP cache can keep: NAR URLs are immutable and carry an
//! entity tag (the NAR hash), `If-None-Match` is answered 304 and
//! `If-Range` is honoured; narinfo and nix-cache-info live
//! `--narinfo-max-age-secs`; misses are never kept. Then the recipes of
//! `contrib/` with the real nginx (`proxy_cache`) and the real Varnish: a
//! second client's `nix copy` (require-sigs) is served entirely by the
//! proxy while larder-server is stopped, and a client that does not ask
//! for zstd never receives it from the proxy.

use larder_tests::fixtures::three_path_closure;
use larder_tests::proxy::{TestProxy, curl, dump_of, substitute_through as substitute};
use larder_tests::server::{LarderServer, Reply};
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, hash_part, narinfo_url, run_stdout};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The narinfo's `NarHash` (nix32, without `sha256:`) and `URL`.
fn nar_hash_and_url(narinfo: &str) -> (String, String) {
    let field = |name: &str| {
        narinfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {narinfo}"))
            .to_owned()
    };
    let hash = field("NarHash: sha256:");
    (hash, format!("/{}", field("URL: ")))
}

fn assert_not_modified(reply: &Reply, etag: &str, cache_control: &str) {
    assert_eq!(reply.status, 304, "{reply:?}");
    assert_eq!(reply.header("ETag"), Some(etag), "{reply:?}");
    assert_eq!(
        reply.header("Cache-Control"),
        Some(cache_control),
        "{reply:?}"
    );
    assert!(reply.body.is_empty());
}

#[test]
fn nar_urls_are_immutable_and_revalidate() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, &["--compression", "zstd"]);
    let dump = dump_of(&store, &top);

    let narinfo = server.get(&narinfo_url(&top), &[]);
    assert_eq!(narinfo.status, 200);
    assert_eq!(narinfo.header("Cache-Control"), Some("public, max-age=60"));
    let json = server.get(&format!("{}?json", narinfo_url(&top)), &[]);
    assert_eq!(json.header("Cache-Control"), Some("public, max-age=60"));
    let info = server.get("/nix-cache-info", &[]);
    assert_eq!(info.header("Cache-Control"), Some("public, max-age=60"));
    let (hash, zst_url) = nar_hash_and_url(&narinfo.text());
    assert!(zst_url.ends_with(&format!(".nar.zst?hash={}", hash_part(&top))));
    let strong = format!("\"{hash}\"");
    let weak = format!("W/\"{hash}-zstd\"");

    // Every URL form that names the NAR hash: immutable, tagged with it.
    let forms = [
        format!("/nar/{hash}.nar?hash={}", hash_part(&top)),
        format!("/nar/{}-{hash}.nar", hash_part(&top)),
    ];
    for url in &forms {
        let nar = server.get(url, &[]);
        assert_eq!(nar.status, 200, "{url}");
        assert_eq!(nar.body, dump, "{url}");
        assert_eq!(nar.header("ETag"), Some(strong.as_str()), "{url}");
        assert_eq!(nar.header("Cache-Control"), Some(IMMUTABLE), "{url}");
        assert_eq!(nar.header("Vary"), Some("Accept-Encoding"), "{url}");
        for tag in [
            strong.clone(),
            format!("W/{strong}"),
            format!("\"x\", {strong}"),
            "*".into(),
        ] {
            let again = server.get(url, &[("If-None-Match", &tag)]);
            assert_not_modified(&again, &strong, IMMUTABLE);
            assert_eq!(again.header("Vary"), Some("Accept-Encoding"));
        }
        let other = server.get(url, &[("If-None-Match", "\"0000\"")]);
        assert_eq!(other.status, 200);
        assert_eq!(other.body, dump);

        // The zstd representation has its own (weak) tag: holding the
        // identity one does not make it "not modified", nor the reverse.
        let zstd = server.get(url, &[("Accept-Encoding", "zstd")]);
        assert_eq!(zstd.header("Content-Encoding"), Some("zstd"));
        // Ranges are offsets in the identity NAR, not in this body.
        assert_eq!(zstd.header("Accept-Ranges"), Some("none"));
        assert_eq!(nar.header("Accept-Ranges"), Some("bytes"));
        assert_eq!(zstd.header("ETag"), Some(weak.as_str()));
        assert_eq!(zstd.header("Cache-Control"), Some(IMMUTABLE));
        let zstd = server.get(
            url,
            &[("Accept-Encoding", "zstd"), ("If-None-Match", &strong)],
        );
        assert_eq!(zstd.status, 200);
        let zstd = server.get(
            url,
            &[("Accept-Encoding", "zstd"), ("If-None-Match", &weak)],
        );
        assert_not_modified(&zstd, &weak, IMMUTABLE);
        let plain = server.get(url, &[("If-None-Match", &weak)]);
        assert_eq!(plain.status, 200);
        assert_eq!(plain.body, dump);

        // If-Range: the range only under the same strong tag.
        let range = server.get(url, &[("Range", "bytes=0-9"), ("If-Range", &strong)]);
        assert_eq!(range.status, 206);
        assert_eq!(range.body, dump[..10]);
        assert_eq!(range.header("ETag"), Some(strong.as_str()));
        for stale in ["\"0000\"", "W/\"x\"", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            let whole = server.get(url, &[("Range", "bytes=0-9"), ("If-Range", stale)]);
            assert_eq!(whole.status, 200, "If-Range {stale}");
            assert_eq!(whole.body, dump);
        }
    }

    // `.nar.zst`: immutable, weakly tagged; never a range under If-Range.
    let zst = server.get(&zst_url, &[]);
    assert_eq!(zst.status, 200);
    assert_eq!(zst.header("ETag"), Some(weak.as_str()));
    assert_eq!(zst.header("Cache-Control"), Some(IMMUTABLE));
    assert_eq!(zstd_decode(&zst.body), dump);
    assert_not_modified(
        &server.get(&zst_url, &[("If-None-Match", &weak)]),
        &weak,
        IMMUTABLE,
    );

    // nix-serve's oldest form names a store path, not content.
    let old = format!("/nar/{}.nar", hash_part(&top));
    let nar = server.get(&old, &[]);
    assert_eq!(nar.status, 200);
    assert_eq!(nar.header("Cache-Control"), Some("public, max-age=60"));
    assert_eq!(nar.header("ETag"), Some(strong.as_str()));

    // Misses are never kept, and a validator does not turn one into a 304.
    let wrong_hash = format!("/nar/{}-{}.nar", hash_part(&top), "0".repeat(52));
    let absent = format!("/nar/{}.nar", "0".repeat(32));
    for url in [wrong_hash, absent, format!("/{}.narinfo", "0".repeat(32))] {
        let miss = server.get(&url, &[("If-None-Match", "*")]);
        assert_eq!(miss.status, 404, "{url}");
        assert_eq!(miss.header("Cache-Control"), Some("no-store"), "{url}");
        assert_eq!(miss.header("ETag"), None, "{url}");
    }
}

#[test]
fn narinfo_max_age_is_configurable() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, &["--narinfo-max-age-secs", "0"]);
    assert_eq!(
        server.get(&narinfo_url(&top), &[]).header("Cache-Control"),
        Some("no-store")
    );
    let server = LarderServer::start(&store, &["--narinfo-max-age-secs", "5"]);
    assert_eq!(
        server.get("/nix-cache-info", &[]).header("Cache-Control"),
        Some("public, max-age=5")
    );
    // The NAR stays immutable whatever the narinfo's lifetime.
    let (_, url) = nar_hash_and_url(&server.get(&narinfo_url(&top), &[]).text());
    assert_eq!(
        server.get(&url, &[]).header("Cache-Control"),
        Some(IMMUTABLE)
    );
}

/// `nix-store --dump` of a path of a chroot store (its real location).
fn zstd_decode(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(bytes).expect("a zstd body")
}

/// The scenario of the module doc through the proxy `make` starts in front
/// of larder-server (`127.0.0.1:PORT`).
fn cached_by(make: impl FnOnce(&str) -> TestProxy) {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let closure = run_stdout(store.nix("nix-store").args(["-qR", &top]));
    let signer = TestSigner::start(&store, &[]);
    let server = LarderServer::start_signed(&store, &signer.socket, &["--compression", "none"]);
    let proxy = make(server.url().trim_start_matches("http://"));
    let dump = dump_of(&store, &top);
    let (_, nar) = nar_hash_and_url(&server.get(&narinfo_url(&top), &[]).text());
    let nar = format!("{}{nar}", proxy.url());

    // The first client fills the proxy.
    let out = substitute(&proxy, &top, &signer.public_key);
    assert!(
        out.status.success(),
        "first client:\n{}\n--- proxy ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    // A client asking for zstd gets it (and the proxy keeps that variant
    // apart); one that does not ask never gets it, fresh or cached.
    for _ in 0..2 {
        let (status, head, body) = curl(&nar, &["Accept-Encoding: zstd"]);
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("content-encoding: zstd"), "{head}");
        assert_eq!(zstd_decode(&body), dump);
        let (status, head, body) = curl(&nar, &[]);
        assert_eq!(status, 200, "{head}");
        assert!(!head.contains("content-encoding"), "{head}");
        assert_eq!(body, dump, "identity NAR through the proxy");
        let (_, head, body) = curl(&nar, &["Accept-Encoding: gzip, br"]);
        assert!(!head.contains("content-encoding"), "{head}");
        assert_eq!(body, dump);
    }
    let (_, head, _) = curl(&nar, &[]);
    assert!(head.contains("x-cache-status: hit"), "not kept: {head}");

    // larder-server stops: the second client is served by the proxy alone.
    drop(server);
    let out = substitute(&proxy, &top, &signer.public_key);
    assert!(
        out.status.success(),
        "second client, origin stopped:\n{}\n--- proxy ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log()
    );
    assert_eq!(closure.lines().count(), 3);
    let (status, head, body) = curl(&nar, &[]);
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(body, dump);
}

#[test]
fn nginx_cache_recipe_serves_a_second_client_with_the_origin_down() {
    cached_by(TestProxy::nginx_cache);
}

#[test]
fn varnish_recipe_serves_a_second_client_with_the_origin_down() {
    cached_by(TestProxy::varnish);
}

/// Views selected by `Host` stay apart in the proxy: each Host gets its
/// own view's priority, and a path outside one view is not handed to it
/// because the other view's answer for the same URL is kept.
fn views_by_host_stay_apart(make: impl FnOnce(&str) -> TestProxy) {
    let store = TestStore::new();
    let inside = three_path_closure(&store);
    let dir = tempfile::tempdir().unwrap();
    let outside = {
        let file = dir.path().join("outside-of-b");
        std::fs::write(&file, "only view a serves this\n").unwrap();
        run_stdout(store.nix("nix-store").arg("--add").arg(&file))
            .trim()
            .to_owned()
    };
    let roots = dir.path().join("roots");
    std::fs::write(&roots, format!("{inside}\n")).unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[[view]]\nname = \"a\"\nhost = \"a.test\"\neverything = true\npriority = 10\n\n\
             [[view]]\nname = \"b\"\nhost = \"b.test\"\nroots-file = \"{}\"\npriority = 50\n",
            roots.display()
        ),
    )
    .unwrap();
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let proxy = make(server.url().trim_start_matches("http://"));
    let url = |path: &str| format!("{}{path}", proxy.url());
    for _ in 0..2 {
        let (_, _, a) = curl(&url("/nix-cache-info"), &["Host: a.test"]);
        assert!(String::from_utf8_lossy(&a).contains("Priority: 10"));
        let (_, _, b) = curl(&url("/nix-cache-info"), &["Host: b.test"]);
        assert!(String::from_utf8_lossy(&b).contains("Priority: 50"));
        let (status, head, _) = curl(&url(&narinfo_url(&outside)), &["Host: a.test"]);
        assert_eq!(status, 200, "{head}");
        let (status, head, _) = curl(&url(&narinfo_url(&outside)), &["Host: b.test"]);
        assert_eq!(status, 404, "view b got view a's kept answer: {head}");
    }
}

#[test]
fn nginx_cache_recipe_keeps_views_by_host_apart() {
    views_by_host_stay_apart(TestProxy::nginx_cache);
}

#[test]
fn varnish_recipe_keeps_views_by_host_apart() {
    views_by_host_stay_apart(TestProxy::varnish);
}
