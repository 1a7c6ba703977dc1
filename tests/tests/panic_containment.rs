//! A panic costs one connection and one log line, in both HTTP processes.
//!
//! actix-http (3.11 to 3.20 at least) unwraps `HeaderName::from_bytes` in
//! its request decoder, which refuses a header name over 64 KiB that
//! httparse accepts: such a request panics inside the connection's task
//! (`docs/reliability.md`). Until actix-http answers it with a 431 (the
//! ignored test in `attack_corpus.rs`), larder's promise is containment:
//! tokio ends only that task, the other connections of the same worker go
//! on being served, and larder's panic hook turns each panic into one
//! `panic:` log line and one count of `larder_panics_total`, never a
//! backtrace an attacker could repeat at will into the journal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use larder_tests::TestStore;
use larder_tests::receive::{PUSHER, TOKEN, TestReceiver, base64_basic};
use larder_tests::server::LarderServer;

/// A request whose header name httparse accepts and `http` refuses.
fn poisoned_request() -> Vec<u8> {
    format!(
        "GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n{}: 1\r\nConnection: close\r\n\r\n",
        "X".repeat(70_000)
    )
    .into_bytes()
}

/// One keep-alive exchange of `GET /nix-cache-info` with `headers` (each
/// ending in CRLF) on `conn`: the status.
fn ask(conn: &mut BufReader<TcpStream>, headers: &str) -> u16 {
    conn.get_mut()
        .write_all(format!("GET /nix-cache-info HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .unwrap();
    let mut status_line = String::new();
    conn.read_line(&mut status_line).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).unwrap();
    status
}

/// Open `n` keep-alive connections to `addr`, each answered once.
fn hold(addr: &str, n: usize, headers: &str) -> Vec<BufReader<TcpStream>> {
    (0..n)
        .map(|_| {
            let stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut conn = BufReader::new(stream);
            assert_eq!(ask(&mut conn, headers), 200, "{addr}");
            conn
        })
        .collect()
}

/// Send the poisoned request `times` times to `addr`, each on a connection
/// of its own; whatever comes back must not be a 5xx.
fn poison(addr: &str, times: usize) {
    for _ in 0..times {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // The server may close before it read everything: a failed write
        // is an answer too.
        let _ = stream.write_all(&poisoned_request());
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
        assert!(
            answer.is_empty() || head.starts_with("HTTP/1.1 4"),
            "{addr} answered {head:?}"
        );
    }
}

/// The log holds exactly `times` one-line panic reports and no default
/// panic output.
fn assert_panics_logged(log: &str, times: usize) {
    assert_eq!(log.matches("panic: the task").count(), times, "{log}");
    assert!(!log.contains("panicked at"), "{log}");
    assert!(!log.contains("stack backtrace"), "{log}");
}

#[test]
fn a_panicking_request_costs_only_its_connection_on_the_server() {
    let store = TestStore::new();
    // One worker: the poisoned requests land on the worker that holds the
    // other connections.
    let server = LarderServer::start_with_env(
        &store,
        &["--workers", "1"],
        &[("RUST_BACKTRACE", "1".as_ref())],
    );
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut held = hold(&addr, 8, "");
    poison(&addr, 3);
    for conn in &mut held {
        assert_eq!(ask(conn, ""), 200, "a held connection died with the panic");
    }
    assert_eq!(server.get("/nix-cache-info", &[]).status, 200);
    assert_eq!(server.metric("larder_panics_total"), 3.0);
    assert_panics_logged(&server.log(), 3);
}

#[test]
fn a_panicking_request_costs_only_its_connection_on_receive() {
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let addr = receiver.url().trim_start_matches("http://").to_owned();
    let auth = format!("Authorization: Basic {}\r\n", base64_basic(PUSHER, TOKEN));
    let mut held = hold(&addr, 8, &auth);
    poison(&addr, 3);
    for conn in &mut held {
        assert_eq!(
            ask(conn, &auth),
            200,
            "a held connection died with the panic"
        );
    }
    assert_panics_logged(&receiver.log(), 3);
}
