//! Where larder-server listens: a unix socket, and under systemd
//! (readiness through `$NOTIFY_SOCKET`, socket activation with
//! `--bind systemd` through the real `systemd-socket-activate`).

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use larder_tests::TestStore;
use larder_tests::process::{Running, binary, wait_until};
use larder_tests::server::LarderServer;

#[test]
fn tells_systemd_it_is_ready() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // A deadline, so that a server that never notifies fails the test.
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let server =
        LarderServer::start_with_env(&store, &[], &[("NOTIFY_SOCKET", socket_path.as_os_str())]);
    let mut buf = [0; 64];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
    assert_eq!(server.get("/health", &[]).status, 200);
}

#[test]
fn serves_on_a_socket_systemd_passes() {
    let store = TestStore::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut activator = Running::spawn(
        "systemd-socket-activate",
        Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .arg(binary("larder-server"))
            .args(["--bind", "systemd", "--store-root"])
            .arg(store.root()),
    );
    let url = format!("http://127.0.0.1:{port}/nix-cache-info");
    let mut body = String::new();
    wait_until(&mut activator, || match ureq::get(&url).call() {
        Ok(r) => {
            body = r.into_string().unwrap();
            true
        }
        Err(_) => false,
    });
    assert!(body.starts_with("StoreDir: /nix/store\n"), "{body}");
}

#[test]
fn bind_systemd_without_a_socket_is_a_clear_error() {
    let store = TestStore::new();
    let out = Command::new(binary("larder-server"))
        .args(["--bind", "systemd", "--store-root"])
        .arg(store.root())
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LISTEN_FDS") && err.contains(".socket"),
        "{err}"
    );
}

#[test]
fn serves_on_a_unix_socket() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("larder.sock");
    let mut server = Running::spawn(
        "larder-server",
        Command::new(binary("larder-server"))
            .arg("--bind")
            .arg(format!("unix:{}", socket.display()))
            .arg("--store-root")
            .arg(store.root()),
    );
    let curl = |path: &str| {
        Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(&socket)
            .arg(format!("http://larder{path}"))
            .output()
            .unwrap()
    };
    wait_until(&mut server, || curl("/health").status.success());
    let info = String::from_utf8(curl("/nix-cache-info").stdout).unwrap();
    assert!(info.starts_with("StoreDir: /nix/store\n"), "{info}");
}
