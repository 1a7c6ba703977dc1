//! The send timeout holds on a unix socket too (issue 11, part 1, found by
//! the hostile-input pass): `TCP_USER_TIMEOUT` does not exist there, so a
//! client of `--bind unix:PATH` that stopped reading used to keep its
//! download, and its slot, forever. Now it is disconnected after
//! `--send-timeout-secs`, while a client that reads gets every byte. No
//! timing is asserted: every wait is a poll with a generous deadline.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use larder_tests::process::{Running, binary, wait_until};
use larder_tests::{TestStore, narinfo_url};
use rand::RngCore;

/// A store holding one 8 MiB file of random bytes: far more than a unix
/// socket's buffers hold, so a client that stops reading blocks the server.
fn big_store() -> (TestStore, String) {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let mut data = vec![0u8; 8 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(&file, &data).unwrap();
    let path = store.add([&file]).remove(0);
    (store, path)
}

struct UnixServer {
    process: Running,
    socket: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl UnixServer {
    fn start(store: &TestStore, flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("larder.sock");
        let log = dir.path().join("server.log");
        let mut process = Running::spawn(
            "larder-server",
            Command::new(binary("larder-server"))
                .arg("--bind")
                .arg(format!("unix:{}", socket.display()))
                .arg("--store-root")
                .arg(store.root())
                .args(flags)
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(&log).unwrap()),
        );
        wait_until(&mut process, || {
            UnixStream::connect(&socket)
                .is_ok_and(|s| get(s, "/health").starts_with("HTTP/1.1 200"))
        });
        UnixServer {
            process,
            socket,
            log,
            _dir: dir,
        }
    }

    fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(&self.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A whole response (status line, headers, body) to `GET target`.
fn get(mut stream: UnixStream, target: &str) -> String {
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: larder\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

fn nar_url(server: &UnixServer, path: &str) -> String {
    let reply = get(server.connect(), &narinfo_url(path));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let url = reply
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap_or_else(|| panic!("no URL in {reply}"));
    format!("/{url}")
}

fn nar_size(store: &Path, path: &str) -> u64 {
    let out = larder_tests::run_stdout(
        larder_tests::nix_command("nix")
            .args(["path-info", "--json", "--store"])
            .arg(store)
            .arg(path),
    );
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    info[0]["narSize"].as_u64().expect("narSize")
}

/// Everything the stream still gives until EOF or an error.
fn drain(stream: &mut UnixStream) -> u64 {
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got += n as u64,
        }
    }
}

#[test]
fn a_stalled_unix_socket_client_is_disconnected_and_a_reading_one_is_not() {
    let (store, path) = big_store();
    let size = nar_size(store.root(), &path);
    let mut server = UnixServer::start(&store, &["--send-timeout-secs", "2"]);
    let nar = nar_url(&server, &path);

    let mut stalled = server.connect();
    write!(stalled, "GET {nar} HTTP/1.1\r\nHost: larder\r\n\r\n").unwrap();
    let mut head = [0u8; 512];
    let n = stalled.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    // The server gives up on it while it still reads nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server
        .log()
        .contains("accepted no bytes within the send timeout")
    {
        server.process.assert_alive();
        assert!(
            Instant::now() < deadline,
            "a stalled unix-socket download was not disconnected:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Reading again, the client gets what was buffered and then EOF or an
    // error, never the whole NAR.
    let got = n as u64 + drain(&mut stalled);
    assert!(got < size, "the stalled client got all {got} bytes");

    // A client that reads gets the whole NAR, with the same timeout, and
    // the server still answers afterwards.
    let mut reading = server.connect();
    write!(
        reading,
        "GET {nar} HTTP/1.1\r\nHost: larder\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let total = drain(&mut reading);
    assert!(
        total > size,
        "a reading client got only {total} bytes of {size}"
    );
    let health = get(server.connect(), "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // With every client gone, nothing is left running: SIGTERM stops the
    // server (a watch of a closed socket once spun and held the shutdown).
    drop(stalled);
    drop(reading);
    server.process.signal("TERM");
    let status = server.process.wait_exit();
    assert!(status.success(), "{status}\n{}", server.log());
}
