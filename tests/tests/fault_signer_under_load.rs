//! The signer killed (-9), stopped (SIGSTOP) and restarted while clients
//! keep asking for narinfos. Every answer is what `--signer-down` says
//! (`absent`: 404; `unavailable`: 503 with Retry-After) or a narinfo
//! carrying the signer's signature: never an unsigned narinfo, never
//! another 5xx. After each restart, signed narinfos come back without
//! restarting the server.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::views::eventually;
use larder_tests::{TestStore, narinfo_url};

const CLIENTS: usize = 4;

/// Answers seen, by status (and for 200: signed or not).
type Tally = Mutex<BTreeMap<String, u64>>;

fn hammer(server: &LarderServer, paths: &[String], stop: &AtomicBool, tally: &Tally, key: &str) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let key_name = key.split(':').next().unwrap();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{}{}", server.url(), narinfo_url(&paths[i % paths.len()]));
        i += 1;
        let outcome = match agent.get(&url).call() {
            Ok(r) => {
                let text = r.into_string().unwrap();
                let signed = text
                    .lines()
                    .any(|l| l.starts_with(&format!("Sig: {key_name}:")));
                if signed { "200 signed" } else { "200 UNSIGNED" }.to_owned()
            }
            Err(ureq::Error::Status(503, r)) if r.header("retry-after").is_some() => {
                "503 retry-after".to_owned()
            }
            Err(ureq::Error::Status(code, _)) => code.to_string(),
            Err(e) => format!("transport error: {e}"),
        };
        *tally.lock().unwrap().entry(outcome).or_default() += 1;
    }
}

fn signed_again(server: &LarderServer, path: &str, key: &str) -> bool {
    let key_name = key.split(':').next().unwrap();
    let reply = server.get(&narinfo_url(path), &[]);
    reply.status == 200 && reply.text().contains(&format!("Sig: {key_name}:"))
}

fn run_faults(mode: &str, allowed_down: &str) {
    let store = TestStore::new();
    let files = tempfile::tempdir().unwrap();
    let names: Vec<_> = (0..40)
        .map(|i| {
            let f = files.path().join(format!("load-{mode}-{i}"));
            std::fs::write(&f, format!("{mode} {i}\n")).unwrap();
            f
        })
        .collect();
    let paths = store.add(&names);
    let mut signer = TestSigner::start(&store, &[]);
    let socket = signer.socket.to_str().unwrap().to_owned();
    // No memo and a one-entry signature cache: nearly every narinfo asks
    // the signer.
    let server = LarderServer::start(
        &store,
        &[
            "--signer-socket",
            &socket,
            "--signer-down",
            mode,
            "--signer-timeout-ms",
            "500",
            "--signer-retry-after-secs",
            "1",
            "--signer-key-check-secs",
            "1",
            "--path-info-ttl-ms",
            "0",
            "--signature-cache-entries",
            "1",
        ],
    );
    let key = signer.public_key.clone();
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let pause = |secs| std::thread::sleep(Duration::from_secs(secs));
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| hammer(&server, &paths, &stop, &tally, &key));
        }
        pause(1);
        for round in 0..2 {
            signer.kill();
            pause(2);
            signer.restart();
            eventually("signatures after a restart", || {
                signed_again(&server, &paths[round], &key)
            });
            pause(1);
            signer.signal("STOP");
            pause(3);
            signer.signal("CONT");
            eventually("signatures after SIGCONT", || {
                signed_again(&server, &paths[round + 1], &key)
            });
            signer.signal("STOP");
            pause(1);
            // Stopped, then killed and restarted (a hung signer replaced).
            signer.restart();
            eventually("signatures after replacing a stopped signer", || {
                signed_again(&server, &paths[round + 2], &key)
            });
        }
        stop.store(true, Ordering::Relaxed);
    });
    let tally = tally.into_inner().unwrap();
    eprintln!("{mode}: {tally:?}");
    for (outcome, count) in &tally {
        assert!(
            outcome == "200 signed" || outcome == allowed_down,
            "{mode}: {count} answers {outcome:?}: {tally:?}"
        );
    }
    assert!(tally.get("200 signed").copied().unwrap_or(0) > 0);
    assert!(
        tally.get(allowed_down).copied().unwrap_or(0) > 0,
        "{mode}: the signer was never seen down: {tally:?}"
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
    let start = Instant::now();
    assert!(signed_again(&server, &paths[39], &key));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn signer_faults_under_load_with_signer_down_absent() {
    run_faults("absent", "404");
}

#[test]
fn signer_faults_under_load_with_signer_down_unavailable() {
    run_faults("unavailable", "503 retry-after");
}
