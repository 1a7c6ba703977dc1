//! `larder-server --check-config` means "the server would start": every
//! case it refuses, the real start refuses too, with the same message
//! naming the setting (they run the same checks, `startup::check`). And
//! `larder-signer check` likewise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use larder_tests::process::{binary, free_port};
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, run, shell_derivation};

/// Run `larder-server` with `args`; its exit code and output. A server
/// that does not exit within 20 s is killed and reported as started.
fn server(store: &TestStore, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(binary("larder-server"))
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        .arg("--store-root")
        .arg(store.root())
        .args(args)
        .env_remove("LARDER_SERVER_CONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap())
}

/// `--check-config` and the real start both refuse, naming `needle`.
fn both_refuse(store: &TestStore, args: &[&str], needle: &str) {
    let mut check = args.to_vec();
    check.push("--check-config");
    let (code, text) = server(store, &check);
    assert!(
        code.is_some_and(|c| c != 0),
        "--check-config {args:?} said OK: {text}"
    );
    assert!(text.contains(needle), "{needle:?} not in: {text}");
    let (code, text) = server(store, args);
    assert!(
        code.is_some_and(|c| c != 0),
        "the server started with {args:?}: {text}"
    );
    assert!(text.contains(needle), "{needle:?} not in: {text}");
}

fn cert(dir: &Path, name: &str) {
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=larder-test"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .stderr(Stdio::null()));
}

fn store_with_a_path() -> TestStore {
    let store = TestStore::new();
    store.build_expr(&shell_derivation("one", "echo 1 > $out"));
    store
}

#[test]
fn tls_problems_are_refused_by_check_and_start() {
    let store = store_with_a_path();
    let dir = tempfile::tempdir().unwrap();
    cert(dir.path(), "a");
    cert(dir.path(), "b");
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let ok = ["--tls-cert", &p("a.crt"), "--tls-key", &p("a.key")];
    let (code, text) = server(&store, &[&ok[..], &["--check-config"]].concat());
    assert_eq!(code, Some(0), "{text}");

    // A key readable by others.
    std::fs::set_permissions(p("b.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    both_refuse(
        &store,
        &["--tls-cert", &p("b.crt"), "--tls-key", &p("b.key")],
        "chmod 600",
    );
    std::fs::set_permissions(p("b.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // A "certificate" file with no certificate in it.
    both_refuse(
        &store,
        &["--tls-cert", &p("a.key"), "--tls-key", &p("a.key")],
        "no certificate",
    );
    // One pair's certificate with the other's key.
    both_refuse(
        &store,
        &["--tls-cert", &p("a.crt"), "--tls-key", &p("b.key")],
        "tls-cert",
    );
    // Files that are not files (reading them hung the check for ever) or
    // far too large for PEM.
    both_refuse(
        &store,
        &["--tls-cert", "/dev/zero", "--tls-key", &p("a.key")],
        "not a regular file",
    );
    both_refuse(
        &store,
        &[
            "--tls-cert",
            &p("a.crt"),
            "--tls-key",
            dir.path().to_str().unwrap(),
        ],
        "not a regular file",
    );
    std::fs::write(p("huge.crt"), vec![b'A'; 2 << 20]).unwrap();
    both_refuse(
        &store,
        &["--tls-cert", &p("huge.crt"), "--tls-key", &p("a.key")],
        "more than a PEM file's",
    );
}

#[test]
fn a_cache_dir_that_cannot_be_made_is_refused() {
    let store = store_with_a_path();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("cache");
    both_refuse(
        &store,
        &["--cache-dir", under_file.to_str().unwrap()],
        "cache-dir",
    );
    both_refuse(&store, &["--cache-dir", "relative/cache"], "absolute path");
    // Missing but creatable: fine, the server creates it.
    let fresh = dir.path().join("new/cache");
    let (code, text) = server(
        &store,
        &["--cache-dir", fresh.to_str().unwrap(), "--check-config"],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(!fresh.exists(), "--check-config creates nothing");
}

#[test]
fn a_store_dir_that_matches_nothing_in_the_db_is_refused() {
    let store = store_with_a_path();
    both_refuse(
        &store,
        &["--store-dir", "/gnu/store"],
        "store-dir /gnu/store",
    );
    // The signer makes the same check.
    let signer = TestSigner::start(&store, &[]);
    let out = Command::new(binary("larder-signer"))
        .args(["check", "--store-dir", "/gnu/store", "--key-file"])
        .arg(&signer.key_file)
        .arg("--store-root")
        .arg(store.root())
        .arg("--socket")
        .arg(signer.socket_dir().join("other.sock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("store-dir"),
        "{text}"
    );
}

#[test]
fn a_signer_key_file_that_is_a_fifo_is_refused_not_waited_on() {
    let store = store_with_a_path();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("key.fifo");
    run(Command::new("mkfifo").args(["-m", "600"]).arg(&fifo));
    // `output()` would wait for ever if the check read the FIFO.
    let mut child = Command::new(binary("larder-signer"))
        .args(["check", "--key-file"])
        .arg(&fifo)
        .arg("--store-root")
        .arg(store.root())
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("larder-signer check hangs on a FIFO key file");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("not a regular file"),
        "{text}"
    );
}

#[test]
fn absurd_numbers_are_refused_with_the_valid_range() {
    let store = store_with_a_path();
    for (flag, value, range) in [
        ("--workers", "3000000000", "0..=1024"),
        ("--request-timeout-secs", "0", "1..=3600"),
        ("--signer-timeout-ms", "0", "1..=600000"),
        ("--max-connections", "0", "1..=1000000"),
        ("--send-timeout-secs", "99999999999999", "0..=86400"),
    ] {
        both_refuse(&store, &[flag, value], range);
    }
    // From the environment too.
    let out = Command::new(binary("larder-server"))
        .arg("--check-config")
        .env("LARDER_SERVER_WORKERS", "99999999999")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("0..=1024"), "{text}");
}

#[test]
fn a_cache_dir_the_servers_user_cannot_create_is_refused() {
    use std::os::unix::process::CommandExt;
    const NOBODY: (u32, u32) = (65534, 65534);
    let store = store_with_a_path();
    std::fs::set_permissions(store.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // As root first: creates the DB's WAL index an unprivileged reader needs.
    let (code, text) = server(&store, &["--check-config"]);
    assert_eq!(code, Some(0), "{text}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |cache: &Path| {
        Command::new(larder_tests::process::binary_for_any_user("larder-server"))
            .arg("--check-config")
            .arg("--store-root")
            .arg(store.root())
            .arg("--cache-dir")
            .arg(cache)
            .uid(NOBODY.0)
            .gid(NOBODY.1)
            .output()
            .unwrap()
    };
    // Missing, under root's 0755 directory: nobody cannot create it.
    let out = as_nobody(&dir.path().join("cache"));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot be created"), "{text}");
    // Present but root's: nobody cannot write it.
    let present = dir.path().join("present");
    std::fs::create_dir(&present).unwrap();
    let out = as_nobody(&present);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("not writable"),
        "{text}"
    );
    // Given to nobody: fine.
    std::os::unix::fs::chown(&present, Some(NOBODY.0), Some(NOBODY.1)).unwrap();
    let out = as_nobody(&present);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
