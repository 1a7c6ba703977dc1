//! The send timeout holds on the TLS listener too (issue 11, part 1,
//! checked by the hostile-input pass): a TLS client that stops reading a
//! NAR is disconnected after `--send-timeout-secs`, as a plain TCP one is
//! (`server_slow_clients`) and a unix-socket one is
//! (`server_unix_send_timeout`). No timing is asserted: every wait is a
//! poll with a generous deadline.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use larder_tests::process::{Running, binary, free_port, wait_until};
use larder_tests::{TestStore, narinfo_url, run};
use rand::RngCore;

fn self_signed(dir: &Path) {
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=larder-test"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem")));
}

/// `curl -sk https://127.0.0.1:PORT{path}`'s body, if it succeeded.
fn curl(port: u16, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sfk", "--max-time", "20"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn active_streams(port: u16) -> Option<f64> {
    curl(port, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix("larder_active_streams "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_stalled_tls_download_is_disconnected_after_the_send_timeout() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let mut data = vec![0u8; 24 << 20];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(&file, &data).unwrap();
    let path = store.add([&file]).remove(0);
    self_signed(dir.path());
    let port = free_port();
    let log = dir.path().join("server.log");
    let mut server = Running::spawn(
        "larder-server",
        Command::new(binary("larder-server"))
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("--store-root")
            .arg(store.root())
            .arg("--tls-cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.path().join("key.pem"))
            .args([
                "--send-timeout-secs",
                "2",
                "--log",
                "larder_server=debug,info",
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    wait_until(&mut server, || curl(port, "/health").is_some());
    let narinfo = curl(port, &narinfo_url(&path)).expect("narinfo");
    let url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL")
        .to_owned();

    // A TLS client whose output nobody reads: once its pipe is full it
    // stops reading the socket.
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    write!(stdin, "GET /{url} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    stdin.flush().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while active_streams(port) != Some(1.0) {
        server.assert_alive();
        assert!(Instant::now() < deadline, "the TLS download never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The server drops the stream while the client still reads nothing.
    let deadline = Instant::now() + Duration::from_secs(120);
    while active_streams(port) != Some(0.0) {
        server.assert_alive();
        assert!(
            Instant::now() < deadline,
            "a stalled TLS download was not disconnected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("client went away mid-stream"), "{text}");
    let _ = client.kill();
    let _ = client.wait();
}
