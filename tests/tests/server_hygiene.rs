//! larder-server's HTTP hygiene, on the real binary: 405 with `Allow` for
//! methods a read-only cache does not take, `/serve` sandboxed the way
//! harmonia's `security_xss` tests check it, every metric the Grafana
//! dashboard queries exported from startup, `?json` with the signer's
//! signatures, and the unix socket's mode, group and stale-socket handling.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::three_path_closure;
use larder_tests::process::{Running, binary, wait_until};
use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, hash_part};

#[test]
fn other_methods_get_405_with_allow() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, &[]);
    let hash = hash_part(&top);
    let narinfo: NarInfo = server
        .get(&format!("/{hash}.narinfo"), &[])
        .text()
        .parse()
        .unwrap();
    let paths = [
        "/".to_owned(),
        "/nix-cache-info".to_owned(),
        "/health".to_owned(),
        "/version".to_owned(),
        "/metrics".to_owned(),
        format!("/{hash}.narinfo"),
        format!("/{hash}.ls"),
        format!("/{}", narinfo.url),
        "/log/00000000000000000000000000000000-x.drv".to_owned(),
        format!("/serve/{hash}"),
        format!("/serve/{hash}/x"),
    ];
    for path in &paths {
        for method in ["PUT", "POST", "DELETE", "PATCH", "OPTIONS"] {
            let reply = match server.request(method, path).send_bytes(b"data") {
                Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("{method} {path}: {e}"),
            };
            assert_eq!(reply.status(), 405, "{method} {path}");
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method} {path}");
        }
        // GET and HEAD still answer as before.
        let head = server.request("HEAD", path).call();
        let status = match head {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r.status(),
            Err(e) => panic!("HEAD {path}: {e}"),
        };
        assert_ne!(status, 405, "HEAD {path}");
    }
    // A path that exists for no method is still 404.
    let reply = server.request("PUT", "/no/such/route").send_bytes(b"x");
    assert!(matches!(reply, Err(ureq::Error::Status(404, _))));
    let metrics = server.get("/metrics", &[]).text();
    assert!(
        metrics.contains("larder_requests_total{route=\"/{hash}.narinfo\",status=\"405\"} 5"),
        "{metrics}"
    );
}

#[test]
fn served_html_is_sandboxed_and_never_sniffed() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    let page = "<html><body><script>fetch('/metrics').then(r => document.title = 'pwned')</script></body></html>\n";
    std::fs::write(site.join("index.html"), page).unwrap();
    std::fs::write(site.join("data.txt"), "<script>alert(1)</script>").unwrap();
    let path = store.add([&site]).remove(0);
    let server = LarderServer::start(&store, &[]);
    let base = format!("/serve/{}", hash_part(&path));

    for (file, content_type) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/data.txt", "text/plain; charset=utf-8"),
        ("/", "text/html; charset=utf-8"),
        ("", "text/html; charset=utf-8"),
    ] {
        let reply = server.get(&format!("{base}{file}"), &[]);
        assert_eq!(reply.status, 200, "{file}");
        assert_eq!(reply.header("content-type"), Some(content_type), "{file}");
        let csp = reply.header("content-security-policy").unwrap_or_default();
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        assert!(directives.contains(&"sandbox"), "{file}: {csp}");
        assert!(directives.contains(&"default-src 'none'"), "{file}: {csp}");
        assert!(!csp.contains("allow-scripts"), "{file}: {csp}");
        assert!(!csp.contains("allow-same-origin"), "{file}: {csp}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{file}"
        );
    }
    // The page itself is served unchanged: the protection is the headers.
    assert_eq!(server.get(&format!("{base}/index.html"), &[]).text(), page);
}

/// Every `larder_…` name the dashboard's queries use.
fn dashboard_metric_names() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../grafana/larder.json");
    let text = std::fs::read_to_string(path).unwrap();
    let mut names: Vec<String> = text
        .match_indices("larder_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_fresh_server_exports_every_series_the_dashboard_queries() {
    let store = TestStore::new();
    let signer = TestSigner::start(&store, &[]);
    let socket = signer.socket.to_str().unwrap();
    let server = LarderServer::start(&store, &["--signer-socket", socket]);
    // Before any request but this scrape.
    let text = server.get("/metrics", &[]).text();
    let exported = |name: &str| {
        text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
    };
    let names = dashboard_metric_names();
    assert!(names.len() > 20, "{names:?}");
    // The sync queue's and the receiver's series come from larder-sync
    // (its watcher, `receive`), not the server.
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !n.starts_with("larder_sync_") && !n.starts_with("larder_receive_"))
        .filter(|n| !exported(n))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");
    for series in [
        r#"larder_aborted_streams_total{reason="client",route="/nar/{file}"} 0"#,
        r#"larder_aborted_streams_total{reason="error",route="/nar/{file}"} 0"#,
        r#"larder_requests_total{route="/{hash}.narinfo",status="404"} 0"#,
        r#"larder_bytes_sent_total{encoding="zstd",route="/nar/{file}"} 0"#,
        "larder_nar_cache_hits_total 0",
        r#"larder_signer_requests_total{op="sign"} 0"#,
        r#"larder_signature_cache_total{result="hit"} 0"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
}

#[test]
fn json_carries_the_signers_signatures() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = TestSigner::start(&store, &[]);
    let socket = signer.socket.to_str().unwrap();
    let server = LarderServer::start(&store, &["--signer-socket", socket]);
    let path = format!("/{}.narinfo", hash_part(&top));
    let narinfo: NarInfo = server.get(&path, &[]).text().parse().unwrap();
    assert!(
        narinfo.sigs.iter().any(|s| s.starts_with("larder-test-1:")),
        "{narinfo:?}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&server.get(&format!("{path}?json"), &[]).body).unwrap();
    assert_eq!(json["signatures"], serde_json::json!(narinfo.sigs));
}

/// Run the server to its exit (it must not start): status and stderr.
fn refused_start(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut child = Command::new(binary("larder-server"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.success(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started where it must refuse to");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unix_socket_mode_group_and_stale_sockets() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("larder.sock");
    let bind = format!("unix:{}", socket.display());
    let start = || {
        Running::spawn(
            "larder-server",
            Command::new(binary("larder-server"))
                .args(["--bind", &bind, "--socket-mode", "0660"])
                .args(["--socket-group", "65534", "--store-root"])
                .arg(store.root()),
        )
    };
    let curl = |path: &str| {
        Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(&socket)
            .arg(format!("http://larder{path}"))
            .output()
            .unwrap()
    };
    let mut first = start();
    wait_until(&mut first, || curl("/health").status.success());
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534);

    // A second server on the live socket is refused, naming it, and the
    // first one keeps its socket.
    let args = [
        "--bind".as_ref(),
        bind.as_ref(),
        "--store-root".as_ref(),
        store.root().as_os_str(),
    ];
    let (ok, err) = refused_start(&args);
    assert!(!ok);
    assert!(
        err.contains(&*socket.to_string_lossy()) && err.contains("listening"),
        "{err}"
    );
    assert!(curl("/health").status.success());

    // A crash leaves the socket file behind; the next start replaces it.
    first.kill();
    assert!(socket.exists());
    let mut second = start();
    wait_until(&mut second, || curl("/health").status.success());
    let info = String::from_utf8(curl("/nix-cache-info").stdout).unwrap();
    assert!(info.starts_with("StoreDir: /nix/store\n"), "{info}");

    // Anything that is not a socket is never removed.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let bind_file = format!("unix:{}", file.display());
    let args = [
        "--bind".as_ref(),
        bind_file.as_ref(),
        "--store-root".as_ref(),
        store.root().as_os_str(),
    ];
    let (ok, err) = refused_start(&args);
    assert!(!ok && err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}
