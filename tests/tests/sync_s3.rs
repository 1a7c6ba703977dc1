//! `larder-sync export`, `watch --to s3://…` and `s3-gc` against a real
//! Garage on loopback ([`larder_tests::garage`]), read back by the real Nix
//! 2.8 over the bucket's web endpoint with `require-sigs`.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::process::Output;
use std::time::{Duration, Instant};

use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::{copy_with_sigs, three_path_closure};
use larder_tests::garage::{ACCESS_KEY, BUCKET, SECRET_KEY, TestGarage};
use larder_tests::process::ClosedPort;
use larder_tests::signer::TestSigner;
use larder_tests::sync::SyncSetup;
use larder_tests::{TestStore, hash_part, run, run_stdout, shell_derivation};

/// `larder-sync ARGS` with the Garage's credentials in the environment.
fn sync(setup: &SyncSetup, garage: &TestGarage, args: &[&str]) -> Output {
    setup
        .command(args)
        .envs(garage.env())
        .output()
        .expect("run larder-sync")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "larder-sync failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn closure(store: &TestStore, path: &str) -> Vec<String> {
    run_stdout(store.nix("nix-store").args(["-qR", path]))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The narinfo of `path` in the bucket, parsed.
fn narinfo(garage: &TestGarage, path: &str) -> Option<NarInfo> {
    let body = garage.web_body(&format!("/{}.narinfo", hash_part(path)))?;
    Some(String::from_utf8(body).unwrap().parse().unwrap())
}

/// Every narinfo in the bucket names a NAR that is there.
fn assert_no_narinfo_without_nar(garage: &TestGarage) {
    let keys: BTreeSet<String> = garage.keys().into_iter().collect();
    // `<hash32>.narinfo`: what Nix reads (other keys are no narinfo to it).
    for key in keys
        .iter()
        .filter(|k| k.ends_with(".narinfo") && k.len() == 40)
    {
        let body = garage.web_body(&format!("/{key}")).unwrap();
        let info: NarInfo = String::from_utf8(body).unwrap().parse().unwrap();
        assert!(
            keys.contains(&info.url),
            "{key} names {} which is not in the bucket: {keys:?}",
            info.url
        );
    }
}

/// What the signed-export tests start with: a store holding a
/// three-path closure (`top`), its signer, a Garage and a sync setup.
struct Signed {
    store: TestStore,
    top: String,
    signer: TestSigner,
    garage: TestGarage,
    setup: SyncSetup,
}

impl Signed {
    fn start() -> Signed {
        let store = TestStore::new();
        let top = three_path_closure(&store);
        let signer = TestSigner::start(&store, &[]);
        let garage = TestGarage::start();
        let setup = SyncSetup::new(&store);
        Signed {
            store,
            top,
            signer,
            garage,
            setup,
        }
    }

    /// The store, the closure's top path, the Garage and the sync setup.
    fn parts(&self) -> (&TestStore, &str, &TestGarage, &SyncSetup) {
        (&self.store, &self.top, &self.garage, &self.setup)
    }

    /// The signer's socket, as a flag value.
    fn socket(&self) -> &str {
        self.signer.socket.to_str().unwrap()
    }
}

#[test]
fn an_exported_closure_is_substituted_from_the_web_endpoint_with_require_sigs() {
    let signed = Signed::start();
    let (store, top, garage, setup) = signed.parts();
    let (socket, uri) = (signed.socket(), garage.uri());
    let printed = ok(sync(
        setup,
        garage,
        &["export", "--to", &uri, "--signer-socket", socket, top],
    ));
    let paths = closure(store, top);
    assert_eq!(paths.len(), 3);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    // References first: the last exported is the top.
    assert_eq!(
        printed.lines().last(),
        Some(format!("exported {top}").as_str())
    );

    let keys = garage.keys();
    assert!(keys.contains(&"nix-cache-info".to_owned()), "{keys:?}");
    for p in &paths {
        let info = narinfo(garage, p).unwrap_or_else(|| panic!("no narinfo for {p}: {keys:?}"));
        assert_eq!(info.compression, "zstd");
        let file_hash = info.file_hash.expect("FileHash");
        assert_eq!(info.url, format!("nar/{}.nar.zst", file_hash.to_nix32()));
        // The NAR is the store's, byte for byte, and FileHash/FileSize hold.
        let file = garage.web_body(&format!("/{}", info.url)).unwrap();
        assert_eq!(Some(file.len() as u64), info.file_size);
        assert_eq!(larder_store::Sha256Hash::digest(&file), file_hash);
        let nar = zstd::decode_all(&file[..]).unwrap();
        // `nix-store --dump` reads the filesystem path, not the store's
        // (chroot) location: `nix store dump-path` goes through the store.
        let dumped = run(store.nix("nix").args(["store", "dump-path", p])).stdout;
        assert!(nar == dumped, "NAR of {p} differs from nix-store --dump");
        assert_eq!(info.sigs.len(), 1, "{:?}", info.sigs);
        // The listing is Nix's.
        let ls = garage
            .web_body(&format!("/{}.ls", hash_part(p)))
            .expect(".ls");
        let ls: serde_json::Value = serde_json::from_slice(&ls).unwrap();
        assert_eq!(ls["version"], 1);
        if let Some(drv) = &info.deriver {
            // nix-build kept a log; the bucket has it, as text.
            let log = garage.web_body(&format!("/log/{drv}"));
            assert!(log.is_some(), "no log/{drv} in {keys:?}");
        }
    }
    assert!(!keys.iter().any(|k| k.starts_with("tmp/")), "{keys:?}");

    let out = copy_with_sigs(&garage.web_url(), top, &signed.signer.public_key);
    assert!(
        out.status.success(),
        "nix copy from the bucket failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Unsigned by a trusted key: refused.
    let other = "other:DfraOZ3WNDYaof6JYAECNWlJrpPoPC/jNTk61DtK03E=";
    assert!(
        !copy_with_sigs(&garage.web_url(), top, other)
            .status
            .success()
    );

    // A second export writes nothing new.
    let again = ok(sync(setup, garage, &["export", "--to", &uri, top]));
    assert_eq!(again, "");
}

#[test]
fn an_export_killed_mid_upload_leaves_no_narinfo_without_its_nar() {
    let store = TestStore::new();
    let leaf = shell_derivation("s3-leaf", "echo leaf > $out");
    let big = format!(
        r#"derivation {{ name = "s3-big"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; leaf = {leaf}; args = ["-c" "mkdir $out; echo $leaf > $out/ref; head -c 50000000 /dev/urandom > $out/blob"]; }}"#
    );
    let top = store.build_expr(&big).remove(0);
    let garage = TestGarage::start();
    let setup = SyncSetup::new(&store);
    // Parts of 5 MiB: ten parts for the 50 MB blob.
    let uri = format!("{}&part-size-mib=5", garage.uri());
    let mut export = setup.spawn(&["export", "--to", &uri, &top], &garage.env());
    // Kill it once the leaf is complete, while the big NAR uploads.
    let leaf_path = closure(&store, &top)
        .into_iter()
        .find(|p| p.ends_with("-s3-leaf"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while narinfo(&garage, &leaf_path).is_none() {
        assert!(
            !export.process.exited(),
            "export ended early:\n{}",
            export.log()
        );
        assert!(Instant::now() < deadline, "leaf never exported");
        std::thread::sleep(Duration::from_millis(20));
    }
    export.process.kill();
    assert_no_narinfo_without_nar(&garage);
    assert!(
        narinfo(&garage, &top).is_none(),
        "the big path's narinfo appeared before the kill; export was too fast to test"
    );
    // A new export finishes the job, and Nix reads it.
    ok(sync(&setup, &garage, &["export", "--to", &uri, &top]));
    assert_no_narinfo_without_nar(&garage);
    assert_copies_from_bucket(&garage, &top);
}

/// A plain `nix copy --from` the bucket's web endpoint (signatures not
/// checked: that is the export test's job) fetches `path` and its closure.
fn assert_copies_from_bucket(garage: &TestGarage, path: &str) {
    let out = larder_tests::nix_command("nix")
        .args([
            "copy",
            "--no-check-sigs",
            "--from",
            &garage.web_url(),
            "--to",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unsigned_export_is_re_signed_in_place_by_a_later_export_with_the_signer() {
    // A first export without --signer-socket writes narinfos clients with
    // require-sigs refuse; an export with the signer used to count them as
    // present and leave them unsigned for good.
    let signed = Signed::start();
    let (store, top, garage, setup) = signed.parts();
    let (socket, uri) = (signed.socket(), garage.uri());
    ok(sync(setup, garage, &["export", "--to", &uri, top]));
    let paths = closure(store, top);
    for p in &paths {
        assert!(narinfo(garage, p).unwrap().sigs.is_empty(), "{p}");
    }
    let nars_before: BTreeSet<String> = garage
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("nar/"))
        .collect();
    assert!(
        !copy_with_sigs(&garage.web_url(), top, &signed.signer.public_key)
            .status
            .success()
    );

    let printed = ok(sync(
        setup,
        garage,
        &["export", "--to", &uri, "--signer-socket", socket, top],
    ));
    assert_eq!(printed.matches("re-signed ").count(), 3, "{printed}");
    assert!(!printed.contains("exported "), "{printed}");
    let key_name = signed.signer.public_key.split(':').next().unwrap();
    for p in &paths {
        let sigs = narinfo(garage, p).unwrap().sigs;
        assert!(
            sigs.iter().any(|s| s.starts_with(&format!("{key_name}:"))),
            "{p}: {sigs:?}"
        );
    }
    // Only the narinfos were rewritten: the NARs are the same objects.
    let nars_after: BTreeSet<String> = garage
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("nar/"))
        .collect();
    assert_eq!(nars_after, nars_before);
    assert_no_narinfo_without_nar(garage);
    let out = copy_with_sigs(&garage.web_url(), top, &signed.signer.public_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Signed now: a third export finds everything present.
    let printed = ok(sync(
        setup,
        garage,
        &["export", "--to", &uri, "--signer-socket", socket, top],
    ));
    assert_eq!(printed, "");
}

/// `kept` and `gone` (and their closures) exported to a fresh Garage,
/// and a GC-root directory in larder's layout whose one source roots
/// `kept`: the Garage, the sync setup and the root directory.
fn exported_with_a_root(
    store: &TestStore,
    kept: &str,
    gone: &str,
) -> (TestGarage, SyncSetup, String) {
    let garage = TestGarage::start();
    let setup = SyncSetup::new(store);
    let uri = garage.uri();
    ok(sync(&setup, &garage, &["export", "--to", &uri, kept, gone]));
    let roots = setup.dir.path().join("gcroots");
    std::fs::create_dir_all(roots.join("receive-ci")).unwrap();
    symlink(kept, roots.join("receive-ci").join("kept")).unwrap();
    let roots = roots.to_str().unwrap().to_owned();
    (garage, setup, roots)
}

#[test]
fn bucket_gc_removes_an_unrooted_closure_and_keeps_a_rooted_one() {
    let store = TestStore::new();
    let kept = store.build_expr(&shell_derivation("s3-kept", "echo kept > $out"));
    let gone = store.build_expr(&format!(
        r#"derivation {{ name = "s3-gone"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; dep = {}; args = ["-c" "echo $dep > $out"]; }}"#,
        shell_derivation("s3-gone-dep", "echo dep > $out")
    ));
    let (kept, gone) = (kept[0].clone(), gone[0].clone());
    let gone_closure = closure(&store, &gone);
    assert_eq!(gone_closure.len(), 2);
    let (garage, setup, roots) = exported_with_a_root(&store, &kept, &gone);
    let uri = garage.uri();
    let before = garage.keys();
    let roots_arg = roots.as_str();

    // Everything is younger than the default grace period: nothing goes.
    let young = ok(sync(
        &setup,
        &garage,
        &["s3-gc", "--to", &uri, "--gc-root-dir", roots_arg],
    ));
    assert_eq!(young, "");
    assert_eq!(garage.keys(), before);

    // Dry run: lists the unrooted closure, deletes nothing.
    let dry = ok(gc(&setup, &garage, roots_arg, true));
    assert_eq!(garage.keys(), before);
    for p in &gone_closure {
        let line = format!("would delete {}.narinfo", hash_part(p));
        assert!(dry.contains(&line), "{line} not in:\n{dry}");
    }
    assert!(!dry.contains(hash_part(&kept)), "{dry}");

    let real = ok(gc(&setup, &garage, roots_arg, false));
    assert_eq!(
        real.replace("deleted ", "would delete "),
        dry,
        "the real run deletes what the dry run listed"
    );
    // Narinfos go first.
    let lines: Vec<&str> = real.lines().collect();
    let first_nar = lines.iter().position(|l| l.contains("nar/")).unwrap();
    let last_narinfo = lines.iter().rposition(|l| l.ends_with(".narinfo")).unwrap();
    assert!(last_narinfo < first_nar, "{real}");
    let after = garage.keys();
    for p in &gone_closure {
        let h = hash_part(p);
        assert!(
            !after.iter().any(|k| k.contains(h)),
            "{h} left in {after:?}"
        );
    }
    assert!(narinfo(&garage, &kept).is_some());
    assert_no_narinfo_without_nar(&garage);
    // 4 objects are left: nix-cache-info, and kept's narinfo, .ls and NAR
    // (no log: `kept` has its deriver's log too, when Nix kept one).
    assert!(after.len() >= 4, "{after:?}");
    assert_copies_from_bucket(&garage, &kept);

    // No roots at all: refused, nothing deleted.
    let empty = setup.dir.path().join("no-roots");
    let out = gc(&setup, &garage, empty.to_str().unwrap(), false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to empty the bucket"));
    assert_eq!(garage.keys(), after);

    // Only dangling roots (their paths are gone from this store, or the
    // directory belongs to another store): keeping nothing would empty the
    // bucket just the same, so it is refused too.
    let dangling = setup.dir.path().join("dangling-roots");
    std::fs::create_dir_all(dangling.join("receive-ci")).unwrap();
    symlink(
        "/nix/store/00000000000000000000000000000000-gone",
        dangling.join("receive-ci").join("gone"),
    )
    .unwrap();
    let out = gc(&setup, &garage, dangling.to_str().unwrap(), false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to empty the bucket"), "{err}");
    assert!(err.contains("valid path"), "{err}");
    assert_eq!(garage.keys(), after);
}

#[test]
fn a_watcher_pushes_new_paths_to_the_bucket() {
    let store = TestStore::new();
    let signer = TestSigner::start(&store, &[]);
    let garage = TestGarage::start();
    let setup = SyncSetup::new(&store);
    let uri = garage.uri();
    let socket = signer.socket.to_str().unwrap().to_owned();
    let mut cmd = setup.command(&[
        "watch-exec",
        "--to",
        &uri,
        "--signer-socket",
        &socket,
        "--drain-timeout-secs",
        "120",
        "--",
        "true",
    ]);
    // Build while a watcher runs: paths registered after it started.
    let mut watcher = setup.spawn(
        &[
            "watch",
            "--to",
            &uri,
            "--signer-socket",
            &socket,
            "--poll-interval-ms",
            "100",
        ],
        &garage.env(),
    );
    setup.wait_for_status(&mut watcher, |s| s.contains("watcher: alive"));
    let top = three_path_closure(&store);
    let deadline = Instant::now() + Duration::from_secs(120);
    while narinfo(&garage, &top).is_none() {
        assert!(Instant::now() < deadline, "not pushed:\n{}", watcher.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(watcher);
    let out = copy_with_sigs(&garage.web_url(), &top, &signer.public_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // watch-exec on the same queue: nothing left to push, exits with the command's status.
    let out = cmd.envs(garage.env()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_uris_and_credentials_are_clear_errors_that_name_the_fix() {
    let store = TestStore::new();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("s3-file.txt"), "s3\n").unwrap();
    let path = store.add([files.path().join("s3-file.txt")]);
    let garage = TestGarage::start();
    let setup = SyncSetup::new(&store);
    let uri = garage.uri();
    let fails = |args: &[&str], env: &[(&str, &str)]| -> String {
        let out = setup
            .command(args)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !err.contains(SECRET_KEY) && !err.contains("wrong-secret"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // One line naming the fix: no retry chatter, no second line.
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        err
    };
    let p = path[0].as_str();
    // No credentials.
    let err = fails(&["export", "--to", &uri, p], &[]);
    assert!(err.contains("AWS_ACCESS_KEY_ID is not set"), "{err}");
    // A credentials file that does not exist.
    let err = fails(
        &["export", "--to", &uri, p],
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY_FILE", "/nonexistent/secret"),
        ],
    );
    assert!(
        err.contains("AWS_SECRET_ACCESS_KEY_FILE=/nonexistent/secret"),
        "{err}"
    );
    // A wrong secret.
    let wrong = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
    ];
    let err = fails(&["export", "--to", &uri, p], &wrong);
    assert!(err.contains("refused the credentials"), "{err}");
    // The watcher checks before it starts.
    let err = fails(&["watch", "--to", &uri], &wrong);
    assert!(err.contains("refused the credentials"), "{err}");
    // Every route, with a wrong secret or an unknown key id.
    let unknown_id = [
        ("AWS_ACCESS_KEY_ID", "GK00000000000000000000dead"),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    for env in [&wrong, &unknown_id] {
        for args in [
            vec!["export", "--to", &uri, p],
            vec!["s3-gc", "--to", &uri, "--root", p, "--grace-secs", "0"],
            vec!["watch-exec", "--to", &uri, "--", "true"],
        ] {
            let err = fails(&args, env);
            assert!(err.contains("refused the credentials"), "{args:?}: {err}");
        }
    }
    // Good credentials from files (as systemd's LoadCredential gives them).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("id"), format!("{ACCESS_KEY}\n")).unwrap();
    std::fs::write(dir.path().join("secret"), format!("{SECRET_KEY}\n")).unwrap();
    let out = setup
        .command(&["export", "--to", &uri, p])
        .env("AWS_ACCESS_KEY_ID_FILE", dir.path().join("id"))
        .env("AWS_SECRET_ACCESS_KEY_FILE", dir.path().join("secret"))
        .output()
        .unwrap();
    ok(out);
    // Nothing listens at the endpoint.
    let closed = ClosedPort::new();
    let nowhere = format!(
        "s3://localhost?endpoint=http://127.0.0.1:{}&region=garage",
        closed.port
    );
    let creds = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    let err = fails(&["export", "--to", &nowhere, p], &creds);
    assert!(err.contains("cannot connect to the endpoint"), "{err}");
    // A bucket that does not exist.
    let missing = format!(
        "s3://no-such-bucket?endpoint={}&region=garage",
        garage.endpoint()
    );
    let err = fails(&["export", "--to", &missing, p], &creds);
    assert!(err.contains("no-such-bucket"), "{err}");
    // Malformed URIs.
    let err = fails(&["export", "--to", "s3://Bad_Bucket", p], &creds);
    assert!(err.contains("bucket name"), "{err}");
    let err = fails(
        &["export", "--to", "s3://cache?endpoint=localhost:3900", p],
        &creds,
    );
    assert!(err.contains("not an http(s):// URL"), "{err}");
    let err = fails(&["s3-gc", "--to", "file:///tmp/x"], &creds);
    assert!(err.contains("s3://BUCKET"), "{err}");
    // The S3 API's address confused with the bucket's website (a 404 to
    // the PUT of nix-cache-info), and a region the server does not use.
    let web = format!(
        "s3://{BUCKET}?endpoint=http://127.0.0.1:{}&region=garage",
        garage.web_port
    );
    let err = fails(&["export", "--to", &web, p], &creds);
    assert!(err.contains("website endpoint"), "{err}");
    let region = format!("s3://{BUCKET}?endpoint={}", garage.endpoint());
    let err = fails(&["export", "--to", &region, p], &creds);
    assert!(err.contains("region="), "{err}");
    // Credentials put into the URI, where they would reach `ps`, logs and
    // the queue file: refused, and the error does not repeat them.
    for bad in [
        format!(
            "s3://{ACCESS_KEY}:{SECRET_KEY}@{BUCKET}?endpoint={}&region=garage",
            garage.endpoint()
        ),
        format!(
            "s3://{BUCKET}?endpoint=http://{ACCESS_KEY}:{SECRET_KEY}@127.0.0.1:{}&region=garage",
            garage.s3_port
        ),
        format!(
            "s3://{BUCKET}?endpoint={}&region=garage&secret={SECRET_KEY}",
            garage.endpoint()
        ),
    ] {
        for args in [
            &["export", "--to", bad.as_str(), p][..],
            &["watch", "--to", bad.as_str()][..],
        ] {
            let err = fails(args, &creds);
            assert!(!err.contains(ACCESS_KEY), "{err}");
        }
    }
}

/// `s3-gc --grace-secs 0 --gc-root-dir ROOTS [--dry-run]`.
fn gc(setup: &SyncSetup, garage: &TestGarage, roots: &str, dry: bool) -> Output {
    let uri = garage.uri();
    let mut args = vec!["s3-gc", "--to", &uri, "--gc-root-dir", roots];
    args.extend(["--grace-secs", "0"]);
    if dry {
        args.push("--dry-run");
    }
    sync(setup, garage, &args)
}

fn planted(out: Output) {
    assert!(
        out.status.success(),
        "curl: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hostile pass's bucket corpus: objects no export writes. The GC
/// never crashes on them, never deletes what a rooted path needs, deletes
/// nothing on a dry run; a re-export repairs a rooted path whose narinfo is
/// garbage, oversized or names a NAR that is gone.
#[test]
fn hostile_bucket_contents_never_cost_a_rooted_path() {
    let store = TestStore::new();
    let kept = store.build_expr(&shell_derivation("s3-h-kept", "echo kept > $out"))[0].clone();
    let gone = store.build_expr(&shell_derivation("s3-h-gone", "echo gone > $out"))[0].clone();
    let (garage, setup, roots) = exported_with_a_root(&store, &kept, &gone);
    let uri = garage.uri();
    let kept_info = narinfo(&garage, &kept).unwrap();
    let kept_key = format!("{}.narinfo", hash_part(&kept));

    // 1. Odd keys and narinfos larder never writes, none rooted.
    let fake = "0000000000000000000000000000000a";
    let odd = [
        ("readme.txt", b"not ours".to_vec()),
        ("other/thing.narinfo", b"not ours either".to_vec()),
        ("nar/odd key%#.nar", b"unreferenced".to_vec()),
        ("tmp/left over ü", b"abandoned".to_vec()),
        ("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.narinfo", b"\xff\x00garbage".to_vec()),
        (
            &format!("{fake}.narinfo") as &str,
            format!("StorePath: /nix/store/{fake}-x\nURL: nix-cache-info\nCompression: none\nNarHash: sha256:0000000000000000000000000000000000000000000000000000\nNarSize: 1\n").into_bytes(),
        ),
    ];
    for (key, body) in &odd {
        planted(garage.put(key, body));
    }
    let before = garage.keys();
    for (key, _) in &odd {
        assert!(
            before.contains(&(*key).to_owned()),
            "{key} not in {before:?}"
        );
    }
    let dry = ok(gc(&setup, &garage, &roots, true));
    assert_eq!(garage.keys(), before, "a dry run deleted something:\n{dry}");
    // The longest grace period allowed keeps everything; a longer one is
    // a usage error.
    let with_grace = |grace: &str| {
        sync(
            &setup,
            &garage,
            &[
                "s3-gc",
                "--to",
                &uri,
                "--gc-root-dir",
                &roots,
                "--grace-secs",
                grace,
            ],
        )
    };
    let year = ok(with_grace("31536000"));
    assert_eq!(garage.keys(), before, "a year's grace deleted:\n{year}");
    let out = with_grace(&u64::MAX.to_string());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(garage.keys(), before);
    let real = ok(gc(&setup, &garage, &roots, false));
    let after = garage.keys();
    for gone_key in [
        "nar/odd key%#.nar",
        "tmp/left over ü",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.narinfo",
    ] {
        assert!(
            !after.contains(&gone_key.to_owned()),
            "{gone_key} survived:\n{real}\n{after:?}"
        );
    }
    for stays in ["readme.txt", "other/thing.narinfo", "nix-cache-info"] {
        assert!(
            after.contains(&stays.to_owned()),
            "{stays} deleted:\n{real}"
        );
    }
    assert!(narinfo(&garage, &gone).is_none());
    assert_no_narinfo_without_nar(&garage);
    assert_copies_from_bucket(&garage, &kept);

    // 2. The rooted narinfo names its NAR as `./nar/…`, which Nix resolves
    // to the same object: the GC must not take it as unnamed.
    ok(sync(&setup, &garage, &["export", "--to", &uri, &gone]));
    let dotted = kept_info.to_string().replace("URL: nar/", "URL: ./nar/");
    planted(garage.put(&kept_key, dotted.as_bytes()));
    assert_copies_from_bucket(&garage, &kept);
    let real = ok(gc(&setup, &garage, &roots, false));
    assert!(
        garage.keys().contains(&kept_info.url),
        "rooted NAR deleted:\n{real}"
    );
    assert_copies_from_bucket(&garage, &kept);

    // 3. An oversized rooted narinfo: no crash, every NAR kept; then a
    // re-export replaces it.
    planted(garage.put(&kept_key, &vec![b'x'; 3 << 20]));
    let real = ok(gc(&setup, &garage, &roots, false));
    assert!(
        garage.keys().contains(&kept_info.url),
        "rooted NAR deleted:\n{real}"
    );
    let again = ok(sync(&setup, &garage, &["export", "--to", &uri, &kept]));
    assert!(again.contains(&kept), "{again}");
    assert_copies_from_bucket(&garage, &kept);

    // 4. A garbage rooted narinfo, then one whose NAR is gone: each
    // re-export repairs the path.
    planted(garage.put(&kept_key, b"StorePath: nonsense\n"));
    ok(sync(&setup, &garage, &["export", "--to", &uri, &kept]));
    assert_copies_from_bucket(&garage, &kept);
    planted(garage.delete(&narinfo(&garage, &kept).unwrap().url));
    let again = ok(sync(&setup, &garage, &["export", "--to", &uri, &kept]));
    assert!(again.contains(&kept), "not exported again: {again}");
    assert_no_narinfo_without_nar(&garage);
    assert_copies_from_bucket(&garage, &kept);
}

/// A key the S3 client cannot represent (`a//b`): the GC stops with an
/// error naming it, deletes nothing, and works again once it is gone.
#[test]
fn a_key_the_s3_client_cannot_list_stops_gc_with_its_name() {
    let store = TestStore::new();
    let kept = store.build_expr(&shell_derivation("s3-h-list", "echo k > $out"))[0].clone();
    let garage = TestGarage::start();
    let setup = SyncSetup::new(&store);
    ok(sync(
        &setup,
        &garage,
        &["export", "--to", &garage.uri(), &kept],
    ));
    let roots = setup.dir.path().join("gcroots");
    std::fs::create_dir_all(roots.join("receive-ci")).unwrap();
    symlink(&kept, roots.join("receive-ci").join("kept")).unwrap();
    let roots = roots.to_str().unwrap().to_owned();
    planted(garage.put("tmp//double", b"x"));
    let before = garage.keys();
    assert!(before.contains(&"tmp//double".to_owned()), "{before:?}");
    let out = gc(&setup, &garage, &roots, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("tmp//double"), "{err}");
    assert_eq!(garage.keys(), before);
    planted(garage.delete("tmp//double"));
    ok(gc(&setup, &garage, &roots, false));
    assert_copies_from_bucket(&garage, &kept);
}

/// The hostile pass's URI and credential corpus through every route that
/// takes an `s3://` target (export, s3-gc, watch, watch-exec, watch
/// without its target check): one line on
/// stderr, a failing exit status (2 for a bad URI), no panic, and never
/// the secret, wherever it was put.
#[test]
fn hostile_s3_uris_and_credentials_fail_in_one_line_on_every_route() {
    let store = TestStore::new();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("s3-h.txt"), "h\n").unwrap();
    let path = store.add([files.path().join("s3-h.txt")]).remove(0);
    let setup = SyncSetup::new(&store);
    const SECRET: &str = "Zq7S3CR3Tv4lue";
    let e = "endpoint=http://127.0.0.1:1";
    let routes = |uri: &str| -> Vec<Vec<String>> {
        [
            vec!["export", "--to", uri, &path],
            vec!["s3-gc", "--to", uri, "--root", &path],
            vec!["watch", "--to", uri],
            vec!["watch-exec", "--to", uri, "--", "true"],
            vec!["watch", "--no-target-check", "--to", uri],
        ]
        .into_iter()
        .map(|args| args.into_iter().map(str::to_owned).collect())
        .collect()
    };
    let fails = |args: &[String], env: &[(&str, &str)]| -> (Option<i32>, String) {
        let mut cmd = setup.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let out = cmd
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("LARDER_SYNC_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains(SECRET), "{args:?} repeats the secret: {err}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        (out.status.code(), err)
    };
    let creds = [
        ("AWS_ACCESS_KEY_ID", "GK0000"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ];
    let uris = [
        format!("s3://cache?endpoint=http://GK0000:{SECRET}@127.0.0.1:1"),
        format!("s3://GK0000:{SECRET}@cache?{e}"),
        format!("s3://cache?endpoint=http%3A%2F%2FGK0000%3A{SECRET}%40h"),
        "s3://cache?endpoint=http://".into(),
        "s3://cache?endpoint=http://:80".into(),
        format!("s3://cache?{e}&{e}"),
        format!("s3://cache?{e}&region="),
        format!("s3://cache?{e}&compression-level=20"),
        format!("s3://cache?{e}&part-size-mib=4"),
        format!("s3://a..b?{e}"),
        format!("s3://cache?{e}&token={SECRET}"),
    ];
    let mut runs = 0;
    for uri in &uris {
        for args in routes(uri) {
            let (code, err) = fails(&args, &creds);
            assert_eq!(code, Some(2), "{args:?}: {err}");
            runs += 1;
        }
    }
    // Credentials: refused before any request, naming the variable.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let secret_file = file("secret", format!("{SECRET}\n").as_bytes());
    let empty = file("empty", b"\n");
    let binary = file("binary", b"\xff\xfe\x00");
    let huge = file("huge", &vec![b'k'; 1 << 20]);
    let id = ("AWS_ACCESS_KEY_ID", "GK0000");
    let secret = ("AWS_SECRET_ACCESS_KEY", SECRET);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![id], "AWS_SECRET_ACCESS_KEY is not set"),
        (
            vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", "/nonexistent/s")],
            "/nonexistent/s",
        ),
        (vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &empty)], "is empty"),
        (
            vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &binary)],
            "not UTF-8",
        ),
        (
            vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &huge)],
            "larger than",
        ),
        (
            vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", "/dev/zero")],
            "not a regular file",
        ),
        (
            vec![id, secret, ("AWS_SECRET_ACCESS_KEY_FILE", &secret_file)],
            "both",
        ),
        (
            vec![id, ("AWS_SECRET_ACCESS_KEY", "Zq7S3CR3Tv4lue\nx")],
            "control",
        ),
    ];
    let uri = format!("s3://cache?{e}&region=garage");
    for (env, says) in &cases {
        // --no-target-check reads no credentials before the first push.
        for args in routes(&uri).into_iter().take(4) {
            let (_, err) = fails(&args, env);
            assert!(err.contains(says), "{args:?} {env:?}: {err}");
            runs += 1;
        }
    }
    assert_eq!(runs, uris.len() * 5 + cases.len() * 4);
}
