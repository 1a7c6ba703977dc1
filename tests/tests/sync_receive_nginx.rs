//! One public URL for pushes and reads: the reverse-proxy recipes of
//! `contrib/` (nginx, Caddy), run for real in front of larder-server (with
//! larder-signer) and `larder-sync receive` on one cache-host store. A CI
//! runner pushes a closure through the proxy with a plain `nix copy --to
//! http://PROXY/push` and a netrc token; every path lands valid and
//! rooted, those already on the host too (their narinfo queries reach the
//! receiver, which roots them), and they survive the host's GC; a push to
//! `http://PROXY` (PUT to the receiver, reads to the server) still works;
//! a fresh store then substitutes the closure through the same URL with
//! `require-sigs = true`, trusting only the signer's key.

use std::path::Path;

use larder_store::db::StoreDb;
use larder_tests::proxy::TestProxy;
use larder_tests::receive::{
    NO_NARINFO_CACHE, PUSHER, TOKEN, TestReceiver, chain_closure, copy_unrooted, push,
};
use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, nix_command, run, run_stdout};

/// `127.0.0.1:PORT` of an `http://127.0.0.1:PORT` URL.
fn addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Push a 21-path closure through the proxy `make` starts, then substitute
/// it through the proxy into a fresh store that requires signatures.
fn push_and_substitute_through(make: impl FnOnce(&str, &str) -> TestProxy) {
    let ci = TestStore::new();
    let host = TestStore::new();
    let paths = chain_closure(&ci, "proxied", 20);
    assert!(paths.len() >= 21, "{paths:?}");
    let top = paths.last().unwrap().clone();
    // Already on the host (built there, say), rooted by nothing.
    let there = chain_closure(&ci, "there", 3);
    copy_unrooted(&ci, &host, &there[there.len() - 1..]);
    // Pushed the older way, to the bare URL.
    let bare = chain_closure(&ci, "bare", 2);
    let signer = TestSigner::start(&host, &[]);
    // The push below disables Nix's narinfo cache (test ports are reused),
    // so Nix asks for each reference's narinfo again right after uploading
    // it; that read goes to larder-server, which never memoizes a miss, so
    // the default --path-info-ttl-ms is right here too.
    let server = LarderServer::start(&host, &["--signer-socket", signer.socket.to_str().unwrap()]);
    let receiver = TestReceiver::start(&host, &[]);
    let proxy = make(&addr(server.url()), &addr(&receiver.url()));

    // Anonymous reads reach larder-server (GET and HEAD); a PUT without a
    // token reaches the receiver, which refuses it.
    let info = ureq::get(&format!("{}/nix-cache-info", proxy.url()))
        .call()
        .expect("nix-cache-info through the proxy");
    assert!(info.into_string().unwrap().contains("StoreDir: /nix/store"));
    let head = ureq::head(&format!("{}/nix-cache-info", proxy.url())).call();
    assert!(head.is_ok(), "{head:?}");
    let put = ureq::put(&format!("{}/nix-cache-info", proxy.url())).send_string("x");
    assert!(matches!(put, Err(ureq::Error::Status(401, _))), "{put:?}");

    // Pushers' reads under /push/ reach the receiver, which wants a token.
    let anonymous = ureq::get(&format!("{}/push/nix-cache-info", proxy.url())).call();
    assert!(
        matches!(anonymous, Err(ureq::Error::Status(401, _))),
        "{anonymous:?}"
    );

    let netrc = receiver.netrc(PUSHER, TOKEN);
    let push_url = format!("{}/push", proxy.url());
    let tops = [top.clone(), there.last().unwrap().clone()];
    for (url, tops) in [
        (&push_url, &tops[..]),
        (&proxy.url(), &bare[bare.len() - 1..]),
    ] {
        let out = push(&ci, url, &netrc, tops);
        assert!(
            out.status.success(),
            "push to {url} failed:\n{}\n--- receiver ---\n{}\n--- proxy ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            receiver.log(),
            proxy.log()
        );
    }
    run(host.nix("nix-store").arg("--gc"));
    let db = StoreDb::open(&host.location()).unwrap();
    for p in paths.iter().chain(&there).chain(&bare) {
        let sp = host.location().parse_path(p).unwrap();
        assert!(
            db.query_valid_blocking(&sp).unwrap(),
            "{p} not valid on the host"
        );
        let link = receiver
            .pusher_roots()
            .join(p.trim_start_matches("/nix/store/"));
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(p));
    }
    assert!(receiver.staging_entries().is_empty());

    // A fresh client through the same URL. Nix's narinfo cache is bypassed:
    // the push remembered the receiver's own narinfo (without the signer's
    // signature) for this very URL.
    let fresh = tempfile::tempdir().unwrap();
    let out = nix_command("nix")
        .args(["copy", "--from", &proxy.url(), "--to"])
        .arg(fresh.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &signer.public_key])
        .args(NO_NARINFO_CACHE)
        .arg(&top)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "substitution through the proxy failed:\n{}\n--- server ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let copied = run_stdout(
        nix_command("nix-store")
            .arg("--store")
            .arg(fresh.path())
            .args(["-qR", &top]),
    );
    assert_eq!(copied.lines().count(), paths.len());
}

#[test]
fn nginx_recipe_routes_pushes_to_the_receiver_and_reads_to_the_server() {
    push_and_substitute_through(TestProxy::nginx);
}

#[test]
fn caddy_recipe_routes_pushes_to_the_receiver_and_reads_to_the_server() {
    push_and_substitute_through(TestProxy::caddy);
}

/// One raw HTTP/1.1 request (no client-side normalisation of `..` or
/// `%2f`) through the proxy at `addr`; returns the status code.
fn raw_status(addr: &str, method: &str, target: &str, auth: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: no status in {text:?}"))
}

/// Odd spellings of `/push/` through the proxy: none reaches the receiver
/// without a token (so none roots anything anonymously or with a wrong
/// token), and those that do not reach it land on larder-server, which
/// answers under its own rules as for any read.
fn push_spellings_through(make: impl FnOnce(&str, &str) -> TestProxy) {
    let ci = TestStore::new();
    let host = TestStore::new();
    let there = chain_closure(&ci, "spelled", 1);
    copy_unrooted(&ci, &host, &there);
    let hash = larder_tests::hash_part(&there[0]).to_owned();
    let server = LarderServer::start(&host, &[]);
    let receiver = TestReceiver::start(&host, &[]);
    let proxy = make(&addr(server.url()), &addr(&receiver.url()));
    let proxy_addr = addr(&proxy.url());
    let spellings = [
        format!("/push/{hash}.narinfo"),
        format!("/push//{hash}.narinfo"),
        format!("//push/{hash}.narinfo"),
        format!("/PUSH/{hash}.narinfo"),
        format!("/Push/{hash}.narinfo"),
        format!("/push/../{hash}.narinfo"),
        format!("/push/./{hash}.narinfo"),
        format!("/push/%2e%2e/{hash}.narinfo"),
        format!("/push%2f{hash}.narinfo"),
        format!("/push%2F{hash}.narinfo"),
        format!("/%70ush/{hash}.narinfo"),
        format!("/push/x/../{hash}.narinfo"),
        format!("/push{hash}.narinfo"),
        format!("/push/{hash}.narinfo?x=/push/"),
        format!("/x/../push/{hash}.narinfo"),
    ];
    let wrong = format!(
        "Basic {}",
        larder_tests::receive::base64_basic(PUSHER, "not-the-token-at-all")
    );
    let mut tried = 0;
    for target in &spellings {
        for method in ["GET", "HEAD"] {
            for auth in [None, Some(wrong.as_str())] {
                let code = raw_status(&proxy_addr, method, target, auth);
                assert!(
                    matches!(code, 200 | 400 | 401 | 404),
                    "{method} {target} ({auth:?}): {code}"
                );
                tried += 1;
                assert!(
                    !receiver.pusher_roots().exists(),
                    "{method} {target} without a valid token rooted:\n{}",
                    receiver.log()
                );
            }
        }
    }
    // With the token, only spellings nginx/Caddy map to the receiver root.
    let token = format!("Bearer {TOKEN}");
    let mut rooted = Vec::new();
    for target in &spellings {
        let code = raw_status(&proxy_addr, "GET", target, Some(&token));
        if receiver.pusher_roots().exists() {
            rooted.push(format!("{target} ({code})"));
            std::fs::remove_dir_all(receiver.pusher_roots()).unwrap();
        }
    }
    eprintln!(
        "{tried} anonymous/wrong-token requests rooted nothing; with the token these reached the receiver: {rooted:?}"
    );
    assert!(
        rooted
            .iter()
            .any(|r| r.starts_with(&format!("/push/{hash}"))),
        "{rooted:?}"
    );
}

#[test]
fn nginx_push_spellings_never_skip_the_token() {
    push_spellings_through(TestProxy::nginx);
}

#[test]
fn caddy_push_spellings_never_skip_the_token() {
    push_spellings_through(TestProxy::caddy);
}
