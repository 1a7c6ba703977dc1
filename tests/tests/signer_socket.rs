//! larder-signer and its socket: a second signer never takes over a live
//! one's socket (nor does `check` pass), a stale socket left by a crash is
//! replaced, and a signer removes the socket on exit only while it is still
//! its own.

use std::process::{Command, Stdio};

use larder_tests::process::{Running, binary};
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, run_stdout};

fn public_keys(socket: &std::path::Path) -> String {
    run_stdout(
        Command::new(binary("larder-signer"))
            .args(["request", "--socket"])
            .arg(socket),
    )
}

#[test]
fn a_second_signer_refuses_a_live_socket_and_replaces_a_stale_one() {
    let store = TestStore::new();
    let mut first = TestSigner::start(&store, &[]);

    let second = first
        .serve_command()
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{text}");
    assert!(text.contains("already running"), "{text}");
    // The first is still reachable on its socket.
    assert!(public_keys(&first.socket).contains(&first.public_key));

    // `check` says the same.
    let check = first.serve_command();
    let args: Vec<_> = check.get_args().skip(1).map(|a| a.to_owned()).collect();
    let out = Command::new(binary("larder-signer"))
        .arg("check")
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("already running"),
        "{text}"
    );

    // SIGKILL leaves a stale socket: a new signer replaces it.
    first.kill();
    assert!(first.socket.exists());
    let mut replacement = Running::spawn("larder-signer", &mut first.serve_command());
    larder_tests::process::wait_until(&mut replacement, || {
        Command::new(binary("larder-signer"))
            .args(["request", "--socket"])
            .arg(&first.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    replacement.kill();
}

#[test]
fn a_signer_removes_only_its_own_socket_on_exit() {
    let store = TestStore::new();
    let mut old = TestSigner::start(&store, &[]);
    // Someone moves the old socket aside and starts another signer on the path.
    let aside = old.socket_dir().join("aside.sock");
    std::fs::rename(&old.socket, &aside).unwrap();
    let mut new = Running::spawn("larder-signer", &mut old.serve_command());
    let socket = old.socket.clone();
    larder_tests::process::wait_until(&mut new, || socket.exists());

    // The old one exits cleanly: the path is not its socket any more.
    old.signal("TERM");
    assert!(old.wait_exit().success());
    assert!(
        old.socket.exists(),
        "the old signer deleted the new one's socket"
    );
    assert!(public_keys(&old.socket).contains(&old.public_key));

    // The new one removes its own socket on SIGTERM.
    new.signal("TERM");
    assert!(new.wait_exit().success());
    assert!(!old.socket.exists());
}
