//! The receiver's staging disk full (a size-limited tmpfs under
//! `--staging-dir`, below `--max-staging-mib`): an upload gets 503 with
//! `Retry-After` (Nix retries it; it used to be a 500), nothing half
//! written stays in the staging dir or the store, and once there is room
//! the same push succeeds.

use larder_store::Sha256Hash;
use larder_tests::mounts::Tmpfs;
use larder_tests::receive::{NO_NARINFO_CACHE, PUSHER, TOKEN, TestReceiver, file_nar, push};
use larder_tests::views::eventually;
use larder_tests::{TestStore, nix_command, run, shell_derivation};
use rand::RngCore;

fn valid(store: &TestStore, path: &str) -> bool {
    store
        .nix("nix-store")
        .args(["--check-validity", path])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_full_staging_disk_answers_503_and_keeps_nothing_half() {
    let host = TestStore::new();
    let mut receiver = TestReceiver::start(&host, &[]);
    let tmpfs = Tmpfs::mount(&receiver.staging, "2m");
    receiver.restart();

    // A hand-made upload of 3 MiB: 503, one line, Retry-After.
    let mut contents = vec![0u8; 3 << 20];
    rand::thread_rng().fill_bytes(&mut contents);
    let nar = file_nar(&contents);
    let url = format!("/nar/{}.nar", Sha256Hash::digest(&nar).to_nix32());
    let response = receiver.request("PUT", &url).send_bytes(&nar);
    let (code, retry_after, body) = match response {
        Err(ureq::Error::Status(code, r)) => (
            code,
            r.header("retry-after").map(str::to_owned),
            r.into_string().unwrap_or_default(),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("disk is full"), "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    eventually("the partial upload is removed", || {
        receiver.staging_entries().is_empty()
    });

    // A real push of a path that does not fit fails, and leaves nothing.
    let builder = TestStore::new();
    let big = builder
        .build_expr(&shell_derivation(
            "too-big",
            "head -c 3000000 /dev/urandom > $out",
        ))
        .remove(0);
    let small = builder
        .build_expr(&shell_derivation("fits", "echo small > $out"))
        .remove(0);
    let netrc = receiver.netrc(PUSHER, TOKEN);
    let uri = format!("{}?compression=none", receiver.url());
    // One attempt: Nix retries a 503 five times with backoff, for minutes.
    let out = nix_command("nix")
        .args(["copy", "--store"])
        .arg(builder.root())
        .args(["--to", &uri, "--option", "netrc-file"])
        .arg(&netrc)
        .args(NO_NARINFO_CACHE)
        .args(["--option", "download-attempts", "1", &big])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a push larger than the disk succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!valid(&host, &big));
    eventually("nothing staged", || receiver.staging_entries().is_empty());

    // What fits still goes through meanwhile.
    let out = push(&builder, &uri, &netrc, std::slice::from_ref(&small));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(valid(&host, &small));

    // Room again: the same push succeeds, whole.
    run(std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&receiver.staging));
    let out = push(&builder, &uri, &netrc, std::slice::from_ref(&big));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(host.nix("nix-store").args(["--verify-path", &big]));
    assert!(!receiver.log().contains("panicked"));
    receiver.kill();
    drop(tmpfs);
}
