//! Slow or stalled downloads never delay anything else (issue 11, part 1):
//! with many clients that stopped reading a NAR, narinfo requests (which
//! need the DB) still succeed and the server's thread count stays bounded
//! by its configuration; a stalled client is disconnected after
//! `--send-timeout-secs`. No timing is asserted: every wait is a poll with a
//! generous deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use larder_tests::server::LarderServer;
use larder_tests::{TestStore, narinfo_url};
use rand::RngCore;

/// A store holding one 24 MiB file of random bytes: far more than the
/// socket buffers hold, so a client that stops reading blocks the server.
fn big_store() -> (TestStore, String) {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let mut data = vec![0u8; 24 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(&file, &data).unwrap();
    let path = store.add([&file]).remove(0);
    (store, path)
}

/// The NAR URL (`/nar/...`) the narinfo of `path` names.
fn nar_url(server: &LarderServer, path: &str) -> String {
    let reply = server.get(&narinfo_url(path), &[]);
    assert_eq!(reply.status, 200, "{reply:?}");
    let text = reply.text();
    let url = text
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap_or_else(|| panic!("no URL in {text}"));
    format!("/{url}")
}

/// A download that reads the status line and a little, then stops reading.
fn stall(server: &LarderServer, target: &str, extra: &str) -> TcpStream {
    let addr = server.url().trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: in /proc/PID/status")
}

#[test]
fn narinfo_answers_while_many_downloads_stall() {
    let (store, path) = big_store();
    // Small pools, so that "bounded by configuration" is visible: 2 HTTP
    // workers, 4 file readers, 2 DB threads, plus zstd's and actix's own.
    let server = LarderServer::start(
        &store,
        &[
            "--workers",
            "2",
            "--read-threads",
            "4",
            "--db-threads",
            "2",
            "--zstd-threads",
            "1",
            "--path-info-ttl-ms",
            "0",
            "--send-timeout-secs",
            "600",
        ],
    );
    let nar = nar_url(&server, &path);
    let mut stalled: Vec<TcpStream> = (0..180).map(|_| stall(&server, &nar, "")).collect();
    // Compressed downloads stall too (zstd's path).
    stalled.extend((0..20).map(|_| stall(&server, &nar, "Accept-Encoding: zstd\r\n")));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    for _ in 0..50 {
        let reply = agent
            .get(&format!("{}{}", server.url(), narinfo_url(&path)))
            .call()
            .expect("narinfo while downloads stall");
        assert_eq!(reply.status(), 200);
    }
    assert_eq!(server.metric("larder_active_streams"), 200.0);
    // Old code: one blocking thread per stalled download (200+). Now: the
    // configured pools and a fixed few.
    let count = threads(server.pid());
    assert!(count <= 30, "{count} threads with 200 stalled downloads");
    drop(stalled);
}

#[test]
fn a_stalled_download_is_disconnected_after_the_send_timeout() {
    let (store, path) = big_store();
    let server = LarderServer::start(&store, &["--send-timeout-secs", "2"]);
    let nar = nar_url(&server, &path);
    let mut stalled = stall(&server, &nar, "");
    assert_eq!(server.metric("larder_active_streams"), 1.0);
    // The server drops the stream while the client still reads nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric("larder_active_streams") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "a stalled download was not disconnected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        server.log().contains("client went away mid-stream"),
        "{}",
        server.log()
    );
    // The client, reading again, gets what was buffered and then an error
    // or EOF, never the whole NAR.
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    assert!(got < 24 << 20, "the whole NAR arrived after a disconnect");
    // The server still serves others.
    assert_eq!(server.get(&narinfo_url(&path), &[]).status, 200);
}
