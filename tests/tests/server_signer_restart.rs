//! Signatures made ahead and kept across restarts (issue 13): with a
//! cache dir, a restarted larder-server reads back the signatures of the
//! signer's current key set instead of asking again, a path registered
//! while the server runs is signed before anyone asks for it, and after a
//! key rotation no signature by the old key is ever served, restart or not.

use std::process::Command;
use std::time::{Duration, Instant};

use larder_tests::fixtures::three_path_closure;
use larder_tests::process::binary;
use larder_tests::server::LarderServer;
use larder_tests::signer::{TestSigner, generate_key};
use larder_tests::{TestStore, hash_part, run_stdout, shell_derivation};

/// Poll `ok` for at most 30 s.
fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_server(store: &TestStore, signer: &TestSigner, cache: &std::path::Path) -> LarderServer {
    LarderServer::start(
        store,
        &[
            "--signer-socket",
            signer.socket.to_str().unwrap(),
            "--signer-key-check-secs",
            "1",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    )
}

/// The server's signature-cache misses: signatures it had to ask for.
const MISSES: &str = r#"larder_signature_cache_total{result="miss"}"#;

/// Build a new path named `name` and wait until the running `server` has
/// signed it ahead; its narinfo then comes signed without a cache miss.
fn signed_ahead_on_arrival(store: &TestStore, server: &LarderServer, name: &str) -> String {
    let prefetch = r#"larder_signature_cache_total{result="prefetch"}"#;
    let before = server.metric(prefetch);
    let new = store
        .build_expr(&shell_derivation(name, "echo late > $out"))
        .remove(0);
    eventually("the new path is signed ahead", || {
        server.metric(prefetch) > before
    });
    let misses_before = server.metric(MISSES);
    assert!(narinfo(server, &new).contains("Sig: larder-test-1:"));
    assert_eq!(server.metric(MISSES), misses_before, "signed ahead");
    new
}

/// Sign requests the signer answered so far (`sign` and `sign-batch`).
fn signer_requests(signer: &TestSigner) -> f64 {
    ["sign", "sign-batch"]
        .iter()
        .map(|op| {
            signer_metric(
                signer,
                &format!("larder_signer_requests_total{{op=\"{op}\"}}"),
            )
        })
        .sum()
}

/// A value of the signer's own metrics.
fn signer_metric(signer: &TestSigner, series: &str) -> f64 {
    let out = run_stdout(
        Command::new(binary("larder-signer"))
            .args(["request", "--metrics", "--socket"])
            .arg(&signer.socket),
    );
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = reply["metrics"].as_str().unwrap().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

fn closure(store: &TestStore, top: &str) -> Vec<String> {
    run_stdout(store.nix("nix-store").args(["-qR", top]))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Lines in the cache dir's signature logs.
/// Distinct signatures kept in the cache dir's logs: a path signed twice
/// (by a request and by sign-ahead) writes two lines with one entry key.
fn kept_lines(cache: &std::path::Path) -> usize {
    let mut keys = std::collections::HashSet::new();
    for log in std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".log"))
    {
        let text = std::fs::read_to_string(log).unwrap();
        keys.extend(
            text.lines()
                .filter_map(|l| l.split(' ').next())
                .map(str::to_owned),
        );
    }
    keys.len()
}

fn narinfo(server: &LarderServer, path: &str) -> String {
    let reply = server.get(&format!("/{}.narinfo", hash_part(path)), &[]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

#[test]
fn a_restarted_server_serves_kept_signatures_without_asking_the_signer() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let paths = closure(&store, &top);
    let mut signer = TestSigner::start(&store, &[]);
    let cache = tempfile::tempdir().unwrap();

    let server = start_server(&store, &signer, cache.path());
    // Signed ahead: every path of the store, without a narinfo request.
    let prefetch = r#"larder_signature_cache_total{result="prefetch"}"#;
    eventually("the store's paths are signed ahead", || {
        server.metric(prefetch) >= paths.len() as f64
    });
    let signed: Vec<String> = paths.iter().map(|p| narinfo(&server, p)).collect();
    assert!(signed.iter().all(|n| n.contains("Sig: larder-test-1:")));
    // A path registered now is signed before anyone asks.
    let new = signed_ahead_on_arrival(&store, &server, "late-arrival");
    eventually("every signature is in the cache dir", || {
        kept_lines(cache.path()) > paths.len()
    });
    drop(server);

    // Restarted: the signatures come back from the cache dir.
    let asked = signer_requests(&signer);
    let server = start_server(&store, &signer, cache.path());
    eventually("the kept signatures are read back", || {
        server.log().contains("signatures read back")
    });
    for (path, before) in paths.iter().zip(&signed) {
        assert_eq!(&narinfo(&server, path), before);
    }
    assert!(narinfo(&server, &new).contains("Sig: larder-test-1:"));
    assert_eq!(server.metric(MISSES), 0.0);
    assert_eq!(signer_requests(&signer), asked, "nothing signed again");
    drop(server);

    // Rotation while the server is down: the file holds another key now.
    let keys = tempfile::tempdir().unwrap();
    let (new_key, new_public) = generate_key(keys.path(), "larder-test-9");
    std::fs::copy(&new_key, &signer.key_file).unwrap();
    signer.restart();
    let server = start_server(&store, &signer, cache.path());
    for path in &paths {
        let text = narinfo(&server, path);
        assert!(text.contains("Sig: larder-test-9:"), "{text}");
        assert!(!text.contains("Sig: larder-test-1:"), "{text}");
    }
    assert!(server.get("/", &[]).text().contains(&new_public));
    // Only the new key set's file is left.
    let logs = std::fs::read_dir(cache.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("signatures-")
        })
        .count();
    assert_eq!(logs, 1);
}

#[test]
fn rotation_while_running_reaches_the_kept_signatures_too() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = TestSigner::start(&store, &[]);
    let cache = tempfile::tempdir().unwrap();
    let server = start_server(&store, &signer, cache.path());
    assert!(narinfo(&server, &top).contains("Sig: larder-test-1:"));

    let keys = tempfile::tempdir().unwrap();
    let (new_key, new_public) = generate_key(keys.path(), "larder-test-9");
    std::fs::copy(&new_key, &signer.key_file).unwrap();
    signer.signal("HUP");
    eventually("the server follows the rotation", || {
        server.get("/", &[]).text().contains(&new_public)
    });
    let text = narinfo(&server, &top);
    assert!(text.contains("Sig: larder-test-9:"), "{text}");
    assert!(!text.contains("Sig: larder-test-1:"), "{text}");
    eventually("the new key's signatures are in the cache dir", || {
        kept_lines(cache.path()) > 0
    });
    drop(server);

    // Restarted: what it kept is by the new key only.
    let server = start_server(&store, &signer, cache.path());
    eventually("the kept signatures are read back", || {
        server.log().contains("signatures read back")
    });
    let text = narinfo(&server, &top);
    assert!(text.contains("Sig: larder-test-9:"), "{text}");
    assert!(!text.contains("Sig: larder-test-1:"), "{text}");
}

/// The hostile pass's signature-log corpus, end to end: lines planted in
/// the cache dir (a forged signature for a real path, a line for a key
/// outside the set, garbage, a torn last line) are never served after a
/// restart; the server starts, warns, and serves the signer's signature.
#[test]
fn planted_lines_in_the_signature_log_are_never_served() {
    use larder_store::narinfo::NarInfo;
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = TestSigner::start(&store, &[]);
    let cache = tempfile::tempdir().unwrap();
    let server = start_server(&store, &signer, cache.path());
    let true_text = narinfo(&server, &top);
    let info: NarInfo = true_text.parse().unwrap();
    let true_sig = info
        .sigs
        .iter()
        .find(|s| s.starts_with("larder-test-1:"))
        .unwrap()
        .clone();
    let entry = larder_store::Sha256Hash::digest(info.fingerprint().as_bytes()).to_base16();
    eventually("top's signature is kept", || {
        std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".log"))
            .any(|p| std::fs::read_to_string(p).unwrap().contains(&entry))
    });
    drop(server);
    let log = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".log"))
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let kept = text
        .lines()
        .find(|l| l.starts_with(&entry))
        .unwrap()
        .to_owned();

    // A signature by the right key name over other bytes, with the line's
    // own trailer kept (and, for the old format, none): later lines win.
    use base64::Engine;
    let forged_sig = format!(
        "larder-test-1:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 64])
    );
    let forged = kept.replace(&true_sig, &forged_sig);
    assert_ne!(forged, kept);
    let forged_old_format = format!("{entry} {forged_sig}");
    let foreign = format!(
        "{entry} other-key:{}",
        &forged_sig["larder-test-1:".len()..]
    );
    let planted = format!(
        "{forged}\n{forged_old_format}\n{foreign}\n\u{0}garbage\u{ff}\n{}",
        &kept[..40]
    );
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, planted.as_bytes()).unwrap();
    drop(file);

    let server = start_server(&store, &signer, cache.path());
    eventually("the kept signatures are read back", || {
        server.log().contains("signatures read back")
    });
    let text = narinfo(&server, &top);
    assert!(
        !text.contains(&forged_sig),
        "a planted signature is served:\n{text}"
    );
    assert!(!text.contains("other-key:"), "{text}");
    assert_eq!(text, true_text);
    assert!(
        server.log().contains("rewriting the file without them"),
        "{}",
        server.log()
    );
    // The file holds no planted line any more.
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(
        !after.contains(&forged_sig) && !after.contains("garbage"),
        "{after}"
    );
}

/// A full cache dir: the server still answers with the signer's
/// signatures (kept in memory), warns once, and a restart on the full dir
/// reads back what had fit.
#[test]
fn a_full_cache_dir_costs_only_the_kept_copy() {
    use larder_tests::mounts::Tmpfs;
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let paths = closure(&store, &top);
    let signer = TestSigner::start(&store, &[]);
    let cache = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(cache.path(), "256k");
    // Started on an empty disk (its NAR cache index needs room to start),
    // then filled to the last block.
    let server = start_server(&store, &signer, cache.path());
    let filler = cache.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    drop(file);
    for p in &paths {
        assert!(narinfo(&server, p).contains("Sig: larder-test-1:"), "{p}");
    }
    // More new signatures than fit in the room left in the log's last
    // page (~240 bytes a line, 4 KiB pages): some append needs a block,
    // however many lines the log held when the disk filled up.
    let new = (0..24)
        .map(|i| {
            let drv = shell_derivation(&format!("full-disk-{i}"), &format!("echo {i} > $out"));
            format!("({drv})")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let new = store.build_expr(&format!("[ {new} ]"));
    assert_eq!(new.len(), 24);
    for path in &new {
        eventually("new paths are signed on a full disk", || {
            server
                .get(&format!("/{}.narinfo", hash_part(path)), &[])
                .text()
                .contains("Sig: larder-test-1:")
        });
    }
    eventually("the failing appends are reported", || {
        server.log().contains("cannot append to the signature log")
    });
    assert_eq!(
        server
            .log()
            .matches("cannot append to the signature log")
            .count(),
        1,
        "warned once per outage:\n{}",
        server.log()
    );
    drop(server);
    let server = start_server(&store, &signer, cache.path());
    assert!(narinfo(&server, &top).contains("Sig: larder-test-1:"));
}

/// A corrupt row in the store DB (here a `narSize` of NULL, which Nix
/// itself would read as 0) costs only that row's signature: sign-ahead
/// logs it and goes on. It read the store a page of rows at a time, and
/// the corrupt row failed its page at every poll, so no path registered
/// later was ever signed ahead.
#[test]
fn a_corrupt_row_does_not_stop_signing_ahead() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let paths = closure(&store, &top);
    let bad = paths.iter().find(|p| **p != top).unwrap().clone();
    let sql = format!("UPDATE ValidPaths SET narSize = NULL WHERE path = '{bad}';");
    run_stdout(
        Command::new("sqlite3")
            .arg(store.location().db_path())
            .arg(&sql),
    );
    let signer = TestSigner::start(&store, &[]);
    let cache = tempfile::tempdir().unwrap();
    let server = start_server(&store, &signer, cache.path());
    let prefetch = r#"larder_signature_cache_total{result="prefetch"}"#;
    eventually("the good paths are signed ahead", || {
        server.metric(prefetch) >= (paths.len() - 1) as f64
    });
    eventually("the corrupt row is logged", || {
        server.log().contains("corrupt row skipped")
    });
    signed_ahead_on_arrival(&store, &server, "after-the-bad-row");
    // The bad row is a clear error of its own, not a signature.
    let reply = server.get(&format!("/{}.narinfo", hash_part(&bad)), &[]);
    assert!(reply.status >= 500, "{} {}", reply.status, reply.text());
}

/// Hundreds of paths at once, at start and while running: signed ahead in
/// batches of at most 64 (one round trip each), every path exactly once.
#[test]
fn hundreds_of_new_paths_are_signed_once_in_batches() {
    let store = TestStore::new();
    let files = tempfile::tempdir().unwrap();
    let make = |from: usize, n: usize| -> Vec<String> {
        let names: Vec<std::path::PathBuf> = (from..from + n)
            .map(|i| {
                let f = files.path().join(format!("f{i}"));
                std::fs::write(&f, format!("file {i}\n")).unwrap();
                f
            })
            .collect();
        store.add(&names)
    };
    let n = 300;
    assert_eq!(make(0, n).len(), n);
    let signer = TestSigner::start(&store, &[]);
    let cache = tempfile::tempdir().unwrap();
    let server = start_server(&store, &signer, cache.path());
    let prefetch = r#"larder_signature_cache_total{result="prefetch"}"#;
    let signatures = r#"larder_signer_signatures_total{key="larder-test-1"}"#;
    eventually("the store is signed ahead", || {
        server.metric(prefetch) >= n as f64
    });
    assert_eq!(signer_metric(&signer, signatures), n as f64);
    let batches = n.div_ceil(64) as f64;
    assert!(
        signer_requests(&signer) <= batches,
        "{}",
        signer_requests(&signer)
    );

    // As many again while it runs: the next polls sign them, still in
    // batches (how many depends on how the registrations fall across
    // polls, one partial batch per poll), and each once.
    let before = signer_requests(&signer);
    assert_eq!(make(n, n).len(), n);
    eventually("the new paths are signed ahead", || {
        server.metric(prefetch) >= (2 * n) as f64
    });
    assert_eq!(signer_metric(&signer, signatures), (2 * n) as f64);
    let asked = signer_requests(&signer) - before;
    assert!(asked < (n / 4) as f64, "{asked} round trips for {n} paths");
}
