//! Slowloris on request heads and stalled readers on NAR bodies at the
//! same time as a real `nix copy --from` the server: the copy succeeds and
//! its paths are byte-identical. Bounded: 200 slow heads (each sends a
//! header byte every 500 ms and reconnects when the server drops it) and
//! 50 downloads that stop reading, on loopback, for the copy's duration.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use larder_tests::fixtures::three_path_closure;
use larder_tests::server::LarderServer;
use larder_tests::{TestStore, narinfo_url, nix_command, run, run_stdout};
use rand::RngCore;

const SLOW_HEADS: usize = 200;
const STALLED: usize = 50;

fn slow_head(addr: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n")
        .ok()?;
    Some(s)
}

fn stall(addr: &str, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    s
}

#[test]
fn nix_copy_succeeds_under_slowloris_and_stalled_readers() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let dir = tempfile::tempdir().unwrap();
    let big_file = dir.path().join("big.bin");
    let mut data = vec![0u8; 24 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(&big_file, &data).unwrap();
    let big = store.add([&big_file]).remove(0);
    let server = LarderServer::start(&store, &[]);
    let addr = server.url().trim_start_matches("http://").to_owned();
    let narinfo = server.get(&narinfo_url(&big), &[]).text();
    let nar = format!(
        "/{}",
        narinfo
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap()
    );

    let stop = AtomicBool::new(false);
    let reconnects = AtomicUsize::new(0);
    let client = tempfile::tempdir().unwrap();
    let copied = std::thread::scope(|s| {
        s.spawn(|| {
            let mut heads: Vec<Option<TcpStream>> =
                (0..SLOW_HEADS).map(|_| slow_head(&addr)).collect();
            while !stop.load(Ordering::Relaxed) {
                for h in heads.iter_mut() {
                    let alive = h.as_mut().is_some_and(|s| s.write_all(b"X").is_ok());
                    if !alive {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        *h = slow_head(&addr);
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let stalled: Vec<TcpStream> = (0..STALLED).map(|_| stall(&addr, &nar)).collect();
        let out = nix_command("nix")
            .args(["copy", "--no-check-sigs", "--from", server.url(), "--to"])
            .arg(client.path())
            .args([&top, &big])
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        drop(stalled);
        out
    });
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let closure = run_stdout(store.nix("nix-store").args(["-qR", &top, &big]));
    for path in closure.lines() {
        let original = run(store.nix("nix").args(["store", "dump-path", path])).stdout;
        let copy = run(nix_command("nix").arg("--store").arg(client.path()).args([
            "store",
            "dump-path",
            path,
        ]))
        .stdout;
        assert!(original == copy, "{path}");
    }
    eprintln!(
        "slow heads reconnected {} times",
        reconnects.load(Ordering::Relaxed)
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
