//! HTTPS with rustls: a self-signed certificate made by openssl, checked
//! by curl and by the real Nix (`nix copy` over https).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use larder_tests::fixtures::three_path_closure;
use larder_tests::process::{Running, binary, wait_until};
use larder_tests::{TestStore, nix_command, run};

fn self_signed(dir: &Path) {
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=larder-test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem")));
}

fn server_command(store: &TestStore, dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(binary("larder-server"));
    cmd.args(["--bind", &format!("127.0.0.1:{port}"), "--store-root"])
        .arg(store.root())
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"));
    cmd
}

#[test]
fn nix_copies_over_https() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // A key others can read is refused, naming the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = server_command(&store, dir.path(), port).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls-key") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut server = Running::spawn(
        "larder-server",
        &mut server_command(&store, dir.path(), port),
    );
    let url = format!("https://127.0.0.1:{port}");
    let curl = |path: &str| {
        Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&cert)
            .arg(format!("{url}{path}"))
            .output()
            .unwrap()
    };
    wait_until(&mut server, || curl("/health").status.success());
    let info = curl("/nix-cache-info");
    assert!(String::from_utf8_lossy(&info.stdout).starts_with("StoreDir: /nix/store\n"));

    let client = tempfile::tempdir().unwrap();
    run(nix_command("nix")
        .env("NIX_SSL_CERT_FILE", &cert)
        .args(["copy", "--no-check-sigs", "--from", &url, "--to"])
        .arg(client.path())
        .arg(&top));
    let copied = run(nix_command("nix")
        .args(["store", "dump-path", "--store"])
        .arg(client.path())
        .arg(&top))
    .stdout;
    let original = run(store.nix("nix").args(["store", "dump-path"]).arg(&top)).stdout;
    assert!(copied == original);

    // larder-sync's check of an https target (before it pushes) trusts the
    // CA bundle Nix trusts: NIX_SSL_CERT_FILE, else SSL_CERT_FILE.
    let work = tempfile::tempdir().unwrap();
    let check = |ca: Option<(&str, &Path)>| {
        let mut cmd = nix_command(binary("larder-sync").to_str().unwrap());
        cmd.arg("--queue")
            .arg(work.path().join("queue.sqlite"))
            .arg("--store-root")
            .arg(store.root())
            .args(["watch-exec", "--to", &url, "--", "true"])
            .env_remove("NIX_SSL_CERT_FILE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("CURL_CA_BUNDLE");
        if let Some((var, file)) = ca {
            cmd.env(var, file);
        }
        cmd.output().unwrap()
    };
    let untrusted = check(None);
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("certificate"),
        "{err}"
    );
    for var in ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"] {
        let trusted = check(Some((var, &cert)));
        assert!(
            trusted.status.success(),
            "{var}: {}",
            String::from_utf8_lossy(&trusted.stderr)
        );
    }
}
