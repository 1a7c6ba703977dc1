//! `larder-sync receive` against the real Nix 2.8: a CI runner's plain
//! `nix copy --to http://…` with a netrc token lands a closure in the cache
//! host's store, rooted, and larder-server with larder-signer then serves
//! it to a client that requires signatures. A push of paths the host
//! already has (which Nix skips on the narinfo's 200) roots them for the
//! pusher, renews old roots and survives the host's GC. Bad tokens and bad uploads
//! are refused with 4xx and leave nothing behind; kill -9 of the receiver
//! at random points never leaves the store inconsistent.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use larder_store::db::StoreDb;
use larder_tests::fixtures::{copy_with_sigs, export_file_cache, read_narinfos};
use larder_tests::receive::{
    NO_NARINFO_CACHE, PUSHER, TOKEN, TestReceiver, chain_closure, copy_unrooted, push,
};
use larder_tests::server::LarderServer;
use larder_tests::signer::TestSigner;
use larder_tests::{TestStore, narinfo_url, run, run_stdout, shell_derivation};
use rand::Rng;

/// How many of `paths` are valid in `store`.
fn valid_count(store: &TestStore, paths: &[String]) -> usize {
    let db = StoreDb::open(&store.location()).expect("open host DB");
    paths
        .iter()
        .filter(|p| {
            let path = store.location().parse_path(p).expect("store path");
            db.query_valid_blocking(&path).expect("query")
        })
        .count()
}

/// Every path the store holds.
fn all_paths(store: &TestStore) -> String {
    run_stdout(store.nix("nix").args(["path-info", "--all"]))
}

fn assert_rooted(receiver: &TestReceiver, paths: &[String]) {
    for p in paths {
        let base = p.trim_start_matches("/nix/store/");
        let link = receiver.pusher_roots().join(base);
        assert_eq!(
            fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display())),
            Path::new(p)
        );
    }
}

#[test]
fn ci_push_lands_rooted_and_is_served_signed() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let paths = chain_closure(&ci, "ci", 20);
    assert!(paths.len() >= 21, "{paths:?}");
    let top = paths.last().unwrap().clone();
    let receiver = TestReceiver::start(&host, &[]);
    let netrc = receiver.netrc(PUSHER, TOKEN);

    let out = push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&top));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(valid_count(&host, &paths), paths.len());
    assert_rooted(&receiver, &paths);
    assert!(
        receiver.staging_entries().is_empty(),
        "{:?}",
        receiver.staging_entries()
    );
    // The receiver's narinfo now says "already there": a second push is a no-op.
    let again = receiver.request("GET", &narinfo_url(&top)).call().unwrap();
    assert_eq!(again.status(), 200);
    assert!(
        push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&top))
            .status
            .success()
    );

    // A fresh client substitutes the closure from larder-server + larder-signer,
    // trusting only the signer's key.
    let signer = TestSigner::start(&host, &[]);
    let server = LarderServer::start(&host, &["--signer-socket", signer.socket.to_str().unwrap()]);
    let out = copy_with_sigs(server.url(), &top, &signer.public_key);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// The mtime of `path`'s root for [`PUSHER`].
fn root_mtime(receiver: &TestReceiver, path: &str) -> std::time::SystemTime {
    let link = receiver
        .pusher_roots()
        .join(path.trim_start_matches("/nix/store/"));
    fs::symlink_metadata(&link)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", link.display()))
}

/// Names under the receiver's GC-root dir (every pusher's roots).
fn roots_made(receiver: &TestReceiver) -> Vec<String> {
    let dir = receiver.pusher_roots();
    fs::read_dir(dir.parent().unwrap())
        .map(|d| {
            d.flatten()
                .flat_map(|e| fs::read_dir(e.path()).into_iter().flatten().flatten())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `nix copy --to` asks for every narinfo first and uploads nothing for a
/// path answered 200: such a path, valid on the host but rooted by
/// nothing, must be rooted for the pusher by that answer, or the host's GC
/// deletes what was "pushed". A re-push renews the roots' time.
#[test]
fn a_push_of_paths_already_on_the_host_roots_them() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let paths = chain_closure(&ci, "there", 4);
    let top = paths.last().unwrap().clone();
    copy_unrooted(&ci, &host, std::slice::from_ref(&top));
    // A control: unrooted on the host and never pushed, so the GC takes it.
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("unpushed"), "x").unwrap();
    let unpushed = host.add([src.path().join("unpushed")]).remove(0);
    let metrics_addr = format!("127.0.0.1:{}", larder_tests::process::free_port());
    let receiver = TestReceiver::start(&host, &["--metrics-listen", &metrics_addr]);
    let already_there = || -> f64 {
        let text = ureq::get(&format!("http://{metrics_addr}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("larder_receive_already_there_total{pusher=\"ci\"} ")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no already_there series:\n{text}"))
    };
    assert_eq!(already_there(), 0.0);

    // Asked without a token, with a bad one, or for a path the host lacks:
    // no 200, no root.
    let anonymous = ureq::get(&format!("{}{}", receiver.url(), narinfo_url(&top))).call();
    assert!(
        matches!(anonymous, Err(ureq::Error::Status(401, _))),
        "{anonymous:?}"
    );
    let basic = larder_tests::receive::base64_basic(PUSHER, "not-the-token-at-all");
    for method in ["GET", "HEAD"] {
        let bad = ureq::request(method, &format!("{}{}", receiver.url(), narinfo_url(&top)))
            .set("Authorization", &format!("Basic {basic}"))
            .call();
        assert!(matches!(bad, Err(ureq::Error::Status(401, _))), "{bad:?}");
    }
    let absent = "/0000000000000000000000000000000a.narinfo";
    let missing = receiver.request("GET", absent).call();
    assert!(
        matches!(missing, Err(ureq::Error::Status(404, _))),
        "{missing:?}"
    );
    assert!(
        roots_made(&receiver).is_empty(),
        "{:?}",
        roots_made(&receiver)
    );
    // A root that cannot be made (the pusher's root dir is a file here) is
    // a 500, never a 200 that says "kept".
    fs::write(receiver.pusher_roots(), "in the way").unwrap();
    let unrootable = receiver.request("GET", &narinfo_url(&top)).call();
    assert!(
        matches!(unrootable, Err(ureq::Error::Status(500, _))),
        "{unrootable:?}"
    );
    assert!(receiver.log().contains("GC root for"), "{}", receiver.log());
    fs::remove_file(receiver.pusher_roots()).unwrap();

    let netrc = receiver.netrc(PUSHER, TOKEN);
    let out = push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&top));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing was uploaded, everything is rooted, and the GC keeps it.
    assert!(!receiver.log().contains("imported /nix/store/"));
    // The 200 that skipped the upload says the path is there and no more:
    // not its references, deriver, signatures or CA (the host has them).
    for query in ["--references", "--deriver"] {
        let on_host = run_stdout(host.nix("nix-store").args(["-q", query, &top]));
        assert!(on_host.contains("/nix/store/"), "{query}: {on_host}");
    }
    let answer = receiver
        .request("GET", &narinfo_url(&top))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        answer.starts_with(&format!("StorePath: {top}\n")),
        "{answer}"
    );
    assert!(answer.contains("\nNarHash: sha256:"), "{answer}");
    assert!(answer.contains("\nReferences: \n"), "{answer}");
    let others = paths.iter().filter(|p| **p != top).map(String::as_str);
    for hidden in ["Deriver:", "Sig:", "CA:"].into_iter().chain(others) {
        assert!(!answer.contains(hidden), "{hidden} in {answer}");
    }
    assert_rooted(&receiver, &paths);
    assert!(already_there() >= paths.len() as f64);
    run(host.nix("nix-store").arg("--gc"));
    assert_eq!(valid_count(&host, &paths), paths.len());
    assert_eq!(valid_count(&host, std::slice::from_ref(&unpushed)), 0);

    // A re-push is a fresh arrival: it renews a root made long ago.
    let old = std::time::SystemTime::now() - Duration::from_secs(30 * 86400);
    let secs = old.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for p in &paths {
        let link = receiver
            .pusher_roots()
            .join(p.trim_start_matches("/nix/store/"));
        run(std::process::Command::new("touch")
            .args(["-h", "-d", &format!("@{secs}")])
            .arg(&link));
    }
    assert!(root_mtime(&receiver, &top) < old + Duration::from_secs(2));
    let out = push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&top));
    assert!(out.status.success());
    for p in &paths {
        assert!(
            root_mtime(&receiver, p) > old + Duration::from_secs(86400),
            "{p}"
        );
    }
    // HEAD roots as GET does.
    let unpushed_too = receiver.request("HEAD", &narinfo_url(&unpushed)).call();
    assert!(
        matches!(unpushed_too, Err(ureq::Error::Status(404, _))),
        "collected, so absent: {unpushed_too:?}"
    );
    let fresh = host.add([src.path().join("unpushed")]).remove(0);
    let head = receiver
        .request("HEAD", &narinfo_url(&fresh))
        .call()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_rooted(&receiver, std::slice::from_ref(&fresh));
}

#[test]
fn wrong_or_missing_token_is_401_and_imports_nothing() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let path = ci
        .build_expr(&shell_derivation("secret-less", "echo x > $out"))
        .remove(0);
    let receiver = TestReceiver::start(&host, &[]);

    for netrc in [
        receiver.netrc(PUSHER, "not-the-token"),
        receiver.netrc("someone-else", TOKEN),
    ] {
        // Nix 2.8 reads the 401 on /nix-cache-info, tries to PUT one,
        // gets 401 again and gives up: "does not appear to be a binary cache".
        let out = push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&path));
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("binary cache"), "{stderr}");
        assert!(!stderr.contains(TOKEN) && !receiver.log().contains(TOKEN));
    }
    assert!(receiver.log().contains("status=401"), "{}", receiver.log());
    // No credentials at all (no netrc), and a wrong Bearer token.
    let url = format!("{}/nix-cache-info", receiver.url());
    match ureq::get(&url).call() {
        Err(ureq::Error::Status(401, r)) => {
            assert_eq!(r.header("WWW-Authenticate"), Some("Basic realm=\"larder\""));
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let nar_put = ureq::put(&format!("{}/nar/x.nar", receiver.url()))
        .set("Authorization", "Bearer wrong")
        .send_bytes(b"nope");
    assert!(
        matches!(nar_put, Err(ureq::Error::Status(401, _))),
        "{nar_put:?}"
    );
    let bearer = ureq::get(&url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert!(
        bearer
            .into_string()
            .unwrap()
            .contains("StoreDir: /nix/store")
    );
    assert_eq!(all_paths(&host), "");
    assert!(receiver.staging_entries().is_empty());
}

/// Status and body of a hand-made request.
fn send(req: ureq::Request, body: &[u8]) -> (u16, String) {
    match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

#[test]
fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let dep = ci
        .build_expr(&shell_derivation("dep", "echo dep > $out"))
        .remove(0);
    let user = ci
        .build_expr(&format!(
            r#"derivation {{ name = "user"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; dep = {}; args = ["-c" "echo $dep > $out"]; }}"#,
            shell_derivation("dep", "echo dep > $out")
        ))
        .remove(0);
    let big = ci
        .build_expr(&shell_derivation("big", "head -c 3000000 /dev/zero > $out"))
        .remove(0);
    let cache = tempfile::tempdir().unwrap();
    export_file_cache(&ci, &user, cache.path(), "none");
    let xz = tempfile::tempdir().unwrap();
    export_file_cache(&ci, &big, xz.path(), "xz");
    let infos = read_narinfos(cache.path());
    let info_of = |p: &str| {
        infos
            .iter()
            .find(|(_, i)| p.ends_with(&i.store_path.to_string()))
            .map(|(_, i)| i.clone())
            .unwrap()
    };
    let (dep_info, user_info) = (info_of(&dep), info_of(&user));
    let nar_of =
        |info: &larder_store::narinfo::NarInfo| fs::read(cache.path().join(&info.url)).unwrap();
    let receiver = TestReceiver::start(&host, &["--max-nar-size-mib", "1"]);
    let put = |path: &str| receiver.request("PUT", path);
    let check_clean = |what: &str| {
        assert!(
            receiver.staging_entries().is_empty(),
            "{what}: staging left {:?}",
            receiver.staging_entries()
        );
        assert_eq!(all_paths(&host), "", "{what}: something was imported");
    };

    // Tampered NAR bytes: the URL names the hash of other bytes.
    // (a byte of the file's contents: the NAR stays well-formed).
    let mut tampered = nar_of(&dep_info);
    let at = tampered
        .windows(4)
        .position(|w| w == b"dep\n")
        .expect("the file's contents");
    tampered[at] ^= 1;
    let (code, body) = send(put(&format!("/{}", dep_info.url)), &tampered);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("hash"), "{body}");
    check_clean("tampered NAR");

    // gzip bytes under a .nar name (what Nix 2.8 sends for
    // ?compression=gzip): refused, naming the likely cause.
    let gzip = run(std::process::Command::new("sh").arg("-c").arg(format!(
        "gzip -c < {}",
        cache.path().join(&dep_info.url).display()
    )))
    .stdout;
    let (code, body) = send(put(&format!("/{}", dep_info.url)), &gzip);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("not a valid NAR") && body.contains("gzip"),
        "{body}"
    );
    check_clean("gzip under .nar");

    // Right NAR, wrong NarSize (and then wrong NarHash).
    for (field, bad) in [
        ("NarSize", {
            let mut i = dep_info.clone();
            i.nar_size += 1;
            i
        }),
        ("NarHash", {
            let mut i = dep_info.clone();
            i.nar_hash = user_info.nar_hash;
            i
        }),
    ] {
        let (code, body) = send(put(&format!("/{}", dep_info.url)), &nar_of(&dep_info));
        assert_eq!(code, 200, "{body}");
        let (code, body) = send(put(&narinfo_url(&dep)), bad.to_string().as_bytes());
        assert_eq!(code, 400, "{field}: {body}");
        assert!(body.contains(field), "{body}");
        check_clean(field);
    }

    // A missing reference: `user` before `dep`.
    let (code, _) = send(put(&format!("/{}", user_info.url)), &nar_of(&user_info));
    assert_eq!(code, 200);
    let (code, body) = send(put(&narinfo_url(&user)), user_info.to_string().as_bytes());
    assert_eq!(code, 409, "{body}");
    assert!(body.contains(&dep), "{body}");
    check_clean("missing reference");

    // Garbage narinfo.
    let (code, body) = send(put(&narinfo_url(&dep)), b"this is not\na narinfo\n");
    assert_eq!(code, 400, "{body}");
    check_clean("garbage narinfo");

    // A NAR over --max-nar-size-mib once decompressed (3 MB of zeros, a few KiB of xz).
    let big_info = read_narinfos(xz.path()).remove(0).1;
    let compressed = fs::read(xz.path().join(&big_info.url)).unwrap();
    assert!(compressed.len() < 1 << 20);
    let (code, body) = send(put(&format!("/{}", big_info.url)), &compressed);
    assert_eq!(code, 413, "{body}");
    check_clean("oversize NAR");

    // Unsupported compression, and names that are not store paths.
    let br = dep_info.url.replace(".nar", ".nar.br");
    let (code, body) = send(put(&format!("/{br}")), b"whatever");
    assert_eq!(code, 415, "{body}");
    let (code, body) = send(
        put("/not-a-store-path-hash.narinfo"),
        user_info.to_string().as_bytes(),
    );
    assert_eq!(code, 400, "{body}");
    let bad_name = dep_info
        .to_string()
        .replace(&format!("-{}", dep_info.store_path.name()), "-bad!name");
    let (code, body) = send(put(&narinfo_url(&dep)), bad_name.as_bytes());
    assert_eq!(code, 400, "{body}");
    let (code, _) = send(put("/realisations/sha256:abc!out.doi"), b"{}");
    assert_eq!(code, 422);
    let (code, _) = send(receiver.request("DELETE", &narinfo_url(&dep)), b"");
    assert_eq!(code, 405);
    check_clean("bad names");

    // After all that, the real push still works.
    let netrc = receiver.netrc(PUSHER, TOKEN);
    let out = push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&user));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(valid_count(&host, &[dep.clone(), user.clone()]), 2);
    let metrics_ok = receiver.log().contains("imported /nix/store/");
    assert!(metrics_ok);
    assert!(receiver.staging_entries().is_empty());
}

/// A background `nix copy` of `paths` from `ci` to the receiver, one
/// attempt per request: Nix 2.8 retries a broken PUT with headers and no
/// body, so the pusher's retry is the test's next push.
fn spawn_push_once(
    ci: &TestStore,
    receiver: &TestReceiver,
    netrc: &std::path::Path,
    paths: &[String],
) -> std::process::Child {
    larder_tests::nix_command("nix")
        .args(["copy", "--store"])
        .arg(ci.root())
        .args(["--to", &receiver.url(), "--option", "netrc-file"])
        .arg(netrc)
        .args(["--option", "download-attempts", "1"])
        .args(NO_NARINFO_CACHE)
        .args(paths)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// How many requests the receiver has logged so far (across restarts).
fn requests_seen(receiver: &TestReceiver) -> usize {
    receiver.log().matches("request pusher=").count()
}

#[test]
fn kill_9_at_random_points_never_corrupts_the_store() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let paths = chain_closure(&ci, "crash", 19);
    assert_eq!(paths.len(), 20);
    let top = paths.last().unwrap().clone();
    let mut receiver = TestReceiver::start(&host, &["--upload-idle-timeout-secs", "3"]);
    let netrc = receiver.netrc(PUSHER, TOKEN);
    let mut rng = rand::thread_rng();
    let (mut hits, mut rounds) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    while hits < 20 {
        rounds += 1;
        assert!(
            Instant::now() < deadline,
            "only {hits} kills hit a push in {rounds} rounds"
        );
        let seen = requests_seen(&receiver);
        let mut copy = spawn_push_once(&ci, &receiver, &netrc, std::slice::from_ref(&top));
        // A random point of the push, whatever its speed: once the k-th of
        // its ~100 requests (5 a path) has reached the receiver, and up to
        // 50 ms into what follows.
        let k = rng.gen_range(1..95);
        let wait = Instant::now() + Duration::from_secs(30);
        while requests_seen(&receiver) < seen + k
            && copy.try_wait().unwrap().is_none()
            && Instant::now() < wait
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
        if copy.try_wait().unwrap().is_none() {
            hits += 1;
        }
        let daemons = import_daemons(&receiver);
        receiver.kill();
        receiver.restart();
        let _ = copy.wait();
        // The crashed receiver's nix-daemon children end at the end of
        // their input; until then their temporary roots hold paths.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemons.iter().all(|pid| exited(*pid)) {
            assert!(
                Instant::now() < deadline,
                "nix-daemon children outlived the receiver"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if valid_count(&host, &paths) == paths.len() {
            // Everything arrived: forget it all so the next round pushes
            // the whole closure again.
            // No roots dir: the kill came after the import and before
            // the first root (the retry below roots them).
            match fs::remove_dir_all(receiver.pusher_roots()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("{e}"),
                _ => {}
            }
            run(host.nix("nix-store").arg("--gc"));
        }
    }
    // The pusher's retry completes.
    let mut done = false;
    for _ in 0..5 {
        if push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&top))
            .status
            .success()
        {
            done = true;
            break;
        }
    }
    assert!(done, "the push never completed after the crashes");
    assert_eq!(valid_count(&host, &paths), paths.len());
    assert_rooted(&receiver, &paths);
    let verify = run(host.nix("nix-store").args(["--verify", "--check-contents"]));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !stderr.contains("modified") && !stderr.contains("error"),
        "{stderr}"
    );
    eprintln!("{hits} kills hit a push in {rounds} rounds");
}

#[test]
fn a_pusher_that_must_sign_is_refused_unsigned_paths() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let path = ci
        .build_expr(&shell_derivation("signed", "echo s > $out"))
        .remove(0);
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("ci.sec");
    let out = run(larder_tests::nix_command("nix").args([
        "key",
        "generate-secret",
        "--key-name",
        "ci-key",
    ]));
    fs::write(&secret, &out.stdout).unwrap();
    let public = run_stdout(
        larder_tests::nix_command("nix")
            .args(["key", "convert-secret-to-public"])
            .stdin(fs::File::open(&secret).unwrap()),
    );
    let flag = format!("{PUSHER}={}", public.trim());
    let receiver = TestReceiver::start(&host, &["--require-sigs-from", &flag]);
    let netrc = receiver.netrc(PUSHER, TOKEN);

    let out = push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&path));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not signed by this pusher's key (ci-key)"),
        "{stderr}"
    );
    assert_eq!(all_paths(&host), "");
    assert!(receiver.staging_entries().is_empty());

    run(ci
        .nix("nix")
        .args(["store", "sign", "--key-file"])
        .arg(&secret)
        .arg(&path));
    let out = push(&ci, &receiver.url(), &netrc, std::slice::from_ref(&path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(valid_count(&host, std::slice::from_ref(&path)), 1);
}

#[test]
fn concurrent_pushes_build_logs_and_metrics() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let mut paths = larder_tests::sync::build_many(&ci, "twice", 8);
    // Two paths with identical contents: one NAR, one NAR URL, two narinfos.
    for name in ["same-a", "same-b"] {
        paths.extend(ci.build_expr(&shell_derivation(name, "echo same > $out")));
    }
    let logged = ci
        .build_expr(&shell_derivation(
            "logged",
            "echo building-logged; echo x > $out",
        ))
        .remove(0);
    // Pushed like the rest: the receiver takes logs only of derivations
    // its store knows (here, as the deriver of `logged`).
    paths.push(logged.clone());
    let metrics_port = larder_tests::process::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let receiver = TestReceiver::start(&host, &["--metrics-listen", &metrics_addr]);
    let netrc = receiver.netrc(PUSHER, TOKEN);

    // Two runners push the same paths at once: both succeed. Each has its
    // own ~/.cache/nix, as two runners would (two Nix 2.8 processes
    // registering one cache URL at once in a shared binary-cache-v6.sqlite
    // fail with "constraint failed", a client-side race).
    let caches: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let pushes: Vec<_> = caches
        .iter()
        .map(|cache| {
            let cache = cache.path().to_owned();
            let (ci_root, url, netrc, paths) = (
                ci.root().to_owned(),
                receiver.url(),
                netrc.clone(),
                paths.clone(),
            );
            std::thread::spawn(move || {
                larder_tests::nix_command("nix")
                    .env("XDG_CACHE_HOME", cache)
                    .args(["copy", "--store"])
                    .arg(ci_root)
                    .args(["--to", &url, "--option", "netrc-file"])
                    .arg(netrc)
                    .args(NO_NARINFO_CACHE)
                    .args(&paths)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    // The receiver imports every path of both pushes (the second
    // import is a no-op). The *client* may not finish: a Nix 2.8 that
    // finds a path valid that it was about to upload can stop with
    // "coroutine has finished"; its re-run then has nothing to do. Re-run
    // only once both pushes ended: a re-run beside the other push still
    // running can meet the same race (seen: both failed).
    let outs: Vec<_> = pushes.into_iter().map(|p| p.join().unwrap()).collect();
    for out in outs {
        if !out.status.success() {
            let again = push(&ci, &receiver.url(), &netrc, &paths);
            assert!(
                again.status.success(),
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&again.stderr)
            );
        }
    }
    assert_eq!(valid_count(&host, &paths), paths.len());
    assert_rooted(&receiver, &paths);
    assert!(receiver.staging_entries().is_empty());

    // `nix store copy-log` lands where Nix keeps logs, bzip2-compressed.
    let drv = run_stdout(ci.nix("nix-store").args(["-qd", &logged]));
    let drv = drv.trim();
    let out = larder_tests::nix_command("nix")
        .args(["store", "copy-log", "--store"])
        .arg(ci.root())
        .args(["--to", &receiver.url(), "--option", "netrc-file"])
        .arg(&netrc)
        .arg(drv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = drv.trim_start_matches("/nix/store/");
    let log_file = host
        .root()
        .join("nix/var/log/nix/drvs")
        .join(&base[..2])
        .join(format!("{}.bz2", &base[2..]));
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut bzip2::read::BzDecoder::new(fs::File::open(&log_file).unwrap()),
        &mut text,
    )
    .unwrap();
    assert!(text.contains("building-logged"), "{text:?}");

    // A refusal, then the metrics.
    let bad = receiver.request("PUT", "/nar/x.nar.lz4").send_bytes(b"x");
    assert!(matches!(bad, Err(ureq::Error::Status(415, _))), "{bad:?}");
    let metrics = ureq::get(&format!("http://{metrics_addr}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
    };
    // Imports run, not paths: two pushes of one path may both import it.
    assert!(value("larder_receive_uploads_total{pusher=\"ci\"}") >= paths.len() as f64);
    assert_eq!(
        value("larder_receive_rejections_total{reason=\"unsupported_compression\"}"),
        1.0
    );
    assert!(value("larder_receive_bytes_total") > 0.0);
    assert!(value("larder_receive_import_duration_seconds_count") >= paths.len() as f64);
    assert_eq!(value("larder_receive_staging_bytes"), 0.0);
}

/// The `nix-daemon --stdio` children a receiver imports through.
fn import_daemons(receiver: &TestReceiver) -> Vec<u32> {
    let pid = receiver.pid().expect("receiver running");
    let mut children = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let list = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    children.retain(|c| {
        fs::read(format!("/proc/{c}/cmdline"))
            .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|arg| arg == b"--stdio"))
    });
    children
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'))
    })
}

/// Imports go through `nix-daemon --stdio` children, which hold Nix's
/// temporary roots on what they imported until they exit: they end soon
/// after a push, so the host's GC is not held back. Killing them at random
/// during a push fails an import at worst; the pusher's retry completes
/// and the store stays consistent.
#[test]
fn import_daemons_end_after_a_push_and_their_death_is_survived() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let first = chain_closure(&ci, "daemon-a", 3);
    let second = chain_closure(&ci, "daemon-b", 30);
    let receiver = TestReceiver::start(&host, &[]);
    let netrc = receiver.netrc(PUSHER, TOKEN);
    let top = |paths: &[String]| paths[paths.len() - 1..].to_vec();
    assert!(
        push(&ci, &receiver.url(), &netrc, &top(&first))
            .status
            .success()
    );
    assert_eq!(valid_count(&host, &first), first.len());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !import_daemons(&receiver).is_empty() {
        assert!(Instant::now() < deadline, "import daemons outlive the push");
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::remove_dir_all(receiver.pusher_roots()).unwrap();
    run(host.nix("nix-store").arg("--gc"));
    assert_eq!(valid_count(&host, &first), 0, "GC held back");

    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for pid in import_daemons(&receiver) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        // One attempt per request, for at most 3 s: a kill fails an
        // import, and Nix's retries back off for minutes.
        let mut copy = spawn_push_once(&ci, &receiver, &netrc, &top(&second));
        let until = Instant::now() + Duration::from_secs(3);
        while copy.try_wait().unwrap().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = copy.kill();
        let _ = copy.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let out = push(&ci, &receiver.url(), &netrc, &top(&second));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(valid_count(&host, &second), second.len());
    assert_rooted(&receiver, &second);
    let verify = run(host.nix("nix-store").args(["--verify", "--check-contents"]));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !stderr.contains("modified") && !stderr.contains("error"),
        "{stderr}"
    );
}

/// `--listen unix:PATH` behind a proxy on the host: the socket is 0660
/// (`--socket-mode`) whatever the umask (the units set 0077, which left
/// nginx with "Permission denied"), so a proxy in the receiver's group
/// connects; a mode with more than read/write bits is refused. Only a
/// socket a crash left is replaced: never a live receiver's, never a file.
#[test]
fn a_unix_socket_gets_its_mode_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let host = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    fs::write(&tokens, format!("{PUSHER} {TOKEN}\n")).unwrap();
    fs::set_permissions(&tokens, fs::Permissions::from_mode(0o600)).unwrap();
    let socket = dir.path().join("receive.sock");
    let receive = |at: &Path, mode: &[&str]| {
        let mut cmd = larder_tests::nix_command("sh");
        cmd.args(["-c", "umask 077; exec \"$@\"", "sh"])
            .arg(larder_tests::process::binary("larder-sync"))
            .arg("--store-root")
            .arg(host.root())
            .args(["receive", "--listen", &format!("unix:{}", at.display())])
            .arg("--tokens")
            .arg(&tokens)
            .arg("--staging-dir")
            .arg(dir.path().join("staging"))
            .args(mode);
        cmd
    };
    let refused = receive(&socket, &["--socket-mode", "0777"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("socket mode"), "{err}");

    let mut process =
        larder_tests::process::Running::spawn("larder-sync", &mut receive(&socket, &[]));
    let info = || {
        std::process::Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(&socket)
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg("http://localhost/nix-cache-info")
            .output()
            .unwrap()
    };
    larder_tests::process::wait_until(&mut process, || info().status.success());
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "{mode:o}");
    assert!(String::from_utf8_lossy(&info().stdout).starts_with("StoreDir: "));

    // A second receiver on a live socket is refused, and the first one
    // keeps answering; a file that is not a socket is never removed.
    let second = receive(&socket, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("listening"),
        "{err}"
    );
    assert!(info().status.success());
    drop(process);
    let file = dir.path().join("not-a-socket");
    fs::write(&file, "keep me").unwrap();
    let on_file = receive(&file, &[]).output().unwrap();
    let err = String::from_utf8_lossy(&on_file.stderr);
    assert!(
        !on_file.status.success() && err.contains("not a socket"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
}
