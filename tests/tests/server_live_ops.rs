//! Live operations on a running larder-server and larder-signer, with the
//! real Nix 2.8 as the client: key rotation reaches the server without a
//! restart (by restarting the signer with an added key, or by SIGHUP to the
//! signer), a hung signer trips the server's circuit breaker and `/health`
//! says so, SIGHUP does not kill the server, and SIGTERM lets a running
//! download finish.

use std::io::Read;
use std::time::{Duration, Instant};

use larder_tests::fixtures::three_path_closure;
use larder_tests::server::LarderServer;
use larder_tests::signer::{TestSigner, generate_key};
use larder_tests::{TestStore, hash_part, run_stdout, shell_derivation};

/// Poll `ok` for at most 30 s.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_server(store: &TestStore, signer: &TestSigner, extra: &[&str]) -> LarderServer {
    let mut flags = vec![
        "--signer-socket",
        signer.socket.to_str().unwrap(),
        "--signer-key-check-secs",
        "1",
    ];
    flags.extend_from_slice(extra);
    LarderServer::start(store, &flags)
}

/// A new client (its own narinfo disk cache: Nix keeps narinfos, with the
/// signatures they had, for `narinfo-cache-positive-ttl`) that trusts only
/// `key` copies `path`, with `require-sigs`.
fn assert_copies(server: &LarderServer, path: &str, key: &str) {
    let cache = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = larder_tests::nix_command("nix")
        .env("XDG_CACHE_HOME", cache.path())
        .args(["copy", "--from", server.url(), "--to"])
        .arg(dest.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", key])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

#[test]
fn a_signer_restarted_with_an_added_key_reaches_a_running_server() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let mut signer = TestSigner::start(&store, &[]);
    let server = start_server(&store, &signer, &[]);
    // Signatures by the old key are cached now.
    assert_copies(&server, &top, &signer.public_key);

    let keys = tempfile::tempdir().unwrap();
    let (new_key, new_public) = generate_key(keys.path(), "larder-test-2");
    signer.set_extra(&["--key-file", new_key.to_str().unwrap()]);
    signer.restart();

    eventually("the landing page shows the rotated-in key", || {
        server.get("/", &[]).text().contains(&new_public)
    });
    let narinfo = server.get(&format!("/{}.narinfo", hash_part(&top)), &[]);
    assert!(
        narinfo.text().contains("Sig: larder-test-2:"),
        "{}",
        narinfo.text()
    );
    // A client that trusts only the new key, no server restart.
    assert_copies(&server, &top, &new_public);
    assert!(server.log().contains("signature cache flushed"));
}

#[test]
fn sighup_makes_the_signer_reload_its_keys_and_servers_follow() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = TestSigner::start(&store, &[]);
    let server = start_server(&store, &signer, &[]);
    assert_copies(&server, &top, &signer.public_key);

    // Rotate the key in place: the file now holds another key.
    let keys = tempfile::tempdir().unwrap();
    let (new_key, new_public) = generate_key(keys.path(), "larder-test-9");
    std::fs::copy(&new_key, &signer.key_file).unwrap();
    signer.signal("HUP");

    eventually("the landing page shows the reloaded key", || {
        server.get("/", &[]).text().contains(&new_public)
    });
    assert!(!server.get("/", &[]).text().contains(&signer.public_key));
    assert_copies(&server, &top, &new_public);
    // The signer lived through SIGHUP on the same socket.
    let reply = run_stdout(
        std::process::Command::new(larder_tests::process::binary("larder-signer"))
            .args(["request", "--socket"])
            .arg(&signer.socket),
    );
    assert!(reply.contains(&new_public), "{reply}");

    // A key file that does not load (readable by others) is not taken: the
    // signer keeps signing with the keys it has.
    std::fs::set_permissions(
        &signer.key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    signer.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    let reply = run_stdout(
        std::process::Command::new(larder_tests::process::binary("larder-signer"))
            .args(["request", "--socket"])
            .arg(&signer.socket),
    );
    assert!(reply.contains(&new_public), "{reply}");
}

#[test]
fn a_hung_signer_costs_one_timeout_and_health_says_down() {
    let store = TestStore::new();
    let signer = TestSigner::start(&store, &[]);
    let server = start_server(
        &store,
        &signer,
        &[
            "--signer-down",
            "unavailable",
            "--signer-timeout-ms",
            "3000",
        ],
    );
    let health = || server.get("/health", &[]).text();
    assert_eq!(
        health(),
        "{\"status\":\"ok\",\"store\":\"ok\",\"signer\":\"up\"}\n"
    );

    signer.signal("STOP");
    // Paths made after the signer hung: the server's sign-ahead cannot
    // have signed them (paths made before could be answered from its
    // signature cache, depending on timing).
    let paths: Vec<String> = (0..6)
        .map(|i| {
            store
                .build_expr(&shell_derivation(
                    &format!("p{i}"),
                    &format!("echo {i} > $out"),
                ))
                .remove(0)
        })
        .collect();
    let url = |p: &String| format!("/{}.narinfo", hash_part(p));
    // One request, or the sign-ahead, waits for the timeout; the rest are
    // turned away by the open breaker without asking the signer.
    assert_eq!(server.get(&url(&paths[0]), &[]).status, 503);
    for p in &paths[1..] {
        assert_eq!(server.get(&url(p), &[]).status, 503);
    }
    let short = server.metric(r#"larder_signer_client_failures_total{kind="short-circuit"}"#);
    let timed_out = server.metric(r#"larder_signer_client_failures_total{kind="unavailable"}"#);
    assert!(
        short >= 3.0 && timed_out < 5.0,
        "short-circuited {short}, asked and failed {timed_out}"
    );
    assert!(health().contains("\"signer\":\"down\""), "{}", health());
    assert_eq!(server.get("/health?signer=required", &[]).status, 503);

    signer.signal("CONT");
    eventually("the probe finds the signer back", || {
        server.get(&url(&paths[5]), &[]).status == 200
    });
    eventually("health says up", || health().contains("\"signer\":\"up\""));
    assert_eq!(server.get("/health?signer=required", &[]).status, 200);
}

#[test]
fn sighup_is_logged_and_ignored_by_the_server() {
    let store = TestStore::new();
    let path = store
        .build_expr(&shell_derivation("hup", "echo 1 > $out"))
        .remove(0);
    let mut server = LarderServer::start(&store, &[]);
    server.signal("HUP");
    eventually("the server logs the SIGHUP", || {
        server.log().contains("SIGHUP ignored")
    });
    assert!(!server.exited(), "{}", server.log());
    let reply = server.get(&format!("/{}.narinfo", hash_part(&path)), &[]);
    assert_eq!(reply.status, 200);
}

#[test]
fn sigterm_drains_then_lets_a_running_download_finish_then_exits() {
    let store = TestStore::new();
    let big = store
        .build_expr(&shell_derivation(
            "big",
            "head -c 67108864 /dev/urandom > $out",
        ))
        .remove(0);
    let nar_size: u64 = run_stdout(store.nix("nix").args(["path-info", "--json", &big]))
        .split("\"narSize\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("narSize");
    let mut server = LarderServer::start(
        &store,
        &["--shutdown-timeout-secs", "60", "--drain-delay-secs", "5"],
    );
    let narinfo = server
        .get(&format!("/{}.narinfo", hash_part(&big)), &[])
        .text();
    let nar_url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL line")
        .to_owned();

    let response = server
        .request("GET", &format!("/{nar_url}"))
        .call()
        .unwrap();
    let mut body = response.into_reader();
    let mut first = vec![0u8; 1 << 16];
    body.read_exact(&mut first).unwrap();
    // A load balancer's keep-alive connection, open before the signal.
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut balancer = std::net::TcpStream::connect(&addr).expect("connect");
    assert!(health_on(&mut balancer).starts_with("HTTP/1.1 200"));
    // 64 MiB cannot sit in socket buffers: the server is still sending.
    server.signal("TERM");
    // For the drain delay, /health says draining, on open connections and
    // new ones alike, and everything else is still served.
    // Every answer while draining closes its connection, so idle
    // keep-alive connections do not hold the graceful stop.
    let draining = |reply: &str| {
        reply.starts_with("HTTP/1.1 503")
            && reply.contains("{\"status\":\"draining\"")
            && reply.to_ascii_lowercase().contains("connection: close")
    };
    eventually("/health says draining", || {
        draining(&health_on(&mut balancer))
    });
    let mut fresh = std::net::TcpStream::connect(&addr).expect("still accepting while draining");
    assert!(draining(&health_on(&mut fresh)));
    assert_eq!(server.get("/nix-cache-info", &[]).status, 200);
    // Both connections stay open on this side: the server closed them.
    let _still_held = (balancer, fresh);
    eventually("the server stops accepting", || {
        ureq::get(&format!("{}/health", server.url()))
            .timeout(Duration::from_secs(2))
            .call()
            .is_err()
    });
    let mut rest = Vec::new();
    body.read_to_end(&mut rest).expect("the download completes");
    assert_eq!(first.len() as u64 + rest.len() as u64, nar_size);
    let status = server.wait_exit();
    assert!(status.success(), "{status}\n{}", server.log());
}

/// `GET /health` on an open keep-alive connection: the whole response.
fn health_on(stream: &mut std::net::TcpStream) -> String {
    use std::io::Write;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.ends_with(b"}\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}
