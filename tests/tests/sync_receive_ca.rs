//! Content-addressed paths through `larder-sync receive` (found by the
//! hostile-input pass): a `CA:` field that does not make the narinfo's
//! store path, or whose hash is not the uploaded contents', used to reach
//! `nix copy` and come back as a 500 ("ca hash mismatch", "claims to be
//! content-addressed but isn't"); a pushed `.drv` was "built" instead of
//! imported (500). Now the first two are 4xx before any import, and every
//! kind of CA path real Nix makes, `.drv` included, arrives.

use std::path::Path;

use larder_store::Sha256Hash;
use larder_tests::receive::{NO_NARINFO_CACHE, PUSHER, TOKEN, TestReceiver};
use larder_tests::{TestStore, hash_part, nix_command, run, run_stdout};

/// Status and body of a hand-made request.
fn send(req: ureq::Request, body: &[u8]) -> (u16, String) {
    match req.send_bytes(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

/// The NAR of store path `path` of `store` (a chroot store: its files are
/// under the store's root).
fn dump(store: &TestStore, path: &str) -> Vec<u8> {
    run(nix_command("nix-store")
        .arg("--dump")
        .arg(store.real_path(path)))
    .stdout
}

/// The `CA:` field Nix recorded for `path`.
fn ca_of(store: &TestStore, path: &str) -> String {
    let out = run_stdout(store.nix("nix").args(["path-info", "--json"]).arg(path));
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    info[0]["ca"].as_str().expect("a CA path").to_owned()
}

/// Upload `nar` and a narinfo for `path` with `ca` and `references`
/// (basenames); the narinfo PUT's status and body.
fn upload(
    receiver: &TestReceiver,
    path: &str,
    nar: &[u8],
    ca: &str,
    references: &str,
) -> (u16, String) {
    let nar_hash = Sha256Hash::digest(nar).to_nix32();
    let url = format!("nar/{nar_hash}.nar");
    let (code, body) = send(receiver.request("PUT", &format!("/{url}")), nar);
    assert_eq!(code, 200, "NAR upload: {body}");
    let narinfo = format!(
        "StorePath: {path}\nURL: {url}\nCompression: none\nNarHash: sha256:{nar_hash}\nNarSize: {}\nReferences: {references}\nCA: {ca}\n",
        nar.len()
    );
    send(
        receiver.request("PUT", &format!("/{}.narinfo", hash_part(path))),
        narinfo.as_bytes(),
    )
}

fn valid(store: &TestStore, path: &str) -> bool {
    store
        .nix("nix-store")
        .args(["--check-validity", path])
        .output()
        .unwrap()
        .status
        .success()
}

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn every_kind_of_ca_path_real_nix_makes_arrives() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f.txt", "flat contents\n");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    write(&tree, "a", "tree contents\n");
    let add = |args: &[&str], p: &Path| {
        run_stdout(ci.nix("nix-store").args(args).arg(p))
            .trim()
            .to_owned()
    };
    let paths = [
        add(&["--add-fixed", "sha256"], &file),
        add(&["--add-fixed", "md5"], &file),
        add(&["--add-fixed", "sha512"], &file),
        add(&["--add-fixed", "--recursive", "sha1"], &tree),
        add(&["--add"], &tree),
    ];
    // A derivation: a text path (the .drv) referring to another (toFile).
    let drv = run_stdout(ci.nix("nix-instantiate").args([
        "-E",
        r#"derivation { name = "ca-drv"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "cat ${builtins.toFile "ca-dep" "dep"} > $out" ]; }"#,
    ]))
    .trim()
    .to_owned();
    let receiver = TestReceiver::start(&host, &[]);
    let netrc = receiver.netrc(PUSHER, TOKEN);
    // Every path, then the derivation with what it refers to.
    let push_all = || {
        for (derivation, targets) in [(false, paths.to_vec()), (true, vec![drv.clone()])] {
            let mut cmd = ci.nix("nix");
            cmd.args(["copy", "--to", &receiver.url(), "--netrc-file"])
                .arg(&netrc)
                .args(NO_NARINFO_CACHE);
            if derivation {
                cmd.arg("--derivation");
            }
            run(cmd.args(&targets));
        }
    };
    push_all();
    let deps = run_stdout(ci.nix("nix-store").args(["-qR", &drv]));
    for p in paths.iter().map(String::as_str).chain(deps.lines()) {
        assert!(valid(&host, p), "{p} did not arrive");
    }
    assert!(!receiver.log().contains("status=500"), "{}", receiver.log());

    // Pushed again once every root is gone: the receiver's narinfo 200s
    // (StorePath, URL, NarHash, NarSize and an empty References line: no
    // CA, no references) are enough for Nix 2.8 to skip every CA path
    // and `.drv`, text paths with references included; nothing is
    // uploaded and each is rooted again.
    let roots = host.root().join("nix/var/nix/gcroots/larder/receive-ci");
    std::fs::remove_dir_all(&roots).unwrap();
    let imported = |log: &str| log.matches("imported /nix/store/").count();
    let before = imported(&receiver.log());
    push_all();
    assert_eq!(imported(&receiver.log()), before, "{}", receiver.log());
    for p in paths.iter().map(String::as_str).chain(deps.lines()) {
        let link = roots.join(p.trim_start_matches("/nix/store/"));
        assert!(std::fs::symlink_metadata(&link).is_ok(), "{p} not rooted");
    }
}

#[test]
fn a_ca_field_that_does_not_fit_the_path_or_the_contents_is_4xx_before_import() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let x = write(dir.path(), "x", "the real contents\n");
    let y = write(dir.path(), "y", "other contents\n");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    write(&tree, "a", "tree\n");
    let other_tree = dir.path().join("other");
    std::fs::create_dir(&other_tree).unwrap();
    write(&other_tree, "a", "other tree\n");
    let add = |args: &[&str], p: &Path| {
        run_stdout(ci.nix("nix-store").args(args).arg(p))
            .trim()
            .to_owned()
    };
    let flat = add(&["--add-fixed", "sha256"], &x);
    let flat_md5 = add(&["--add-fixed", "md5"], &x);
    let rec_sha1 = add(&["--add-fixed", "--recursive", "sha1"], &tree);
    let source = add(&["--add"], &tree);
    let text = run_stdout(ci.nix("nix-instantiate").args([
        "--eval",
        "--read-write-mode",
        "-E",
        r#"builtins.toFile "ca-text" "text contents""#,
    ]))
    .trim()
    .trim_matches('"')
    .to_owned();
    let receiver = TestReceiver::start(&host, &[]);
    let y_nar = {
        let other = TestStore::new();
        let p = run_stdout(other.nix("nix-store").arg("--add").arg(&y));
        dump(&other, p.trim())
    };
    let other_tree_nar = {
        let other = TestStore::new();
        let p = run_stdout(other.nix("nix-store").arg("--add").arg(&other_tree));
        dump(&other, p.trim())
    };
    let some_hash = Sha256Hash::digest(b"unrelated").to_nix32();
    let cases: Vec<(&str, String, Vec<u8>, String, String)> = vec![
        // The path is not the one its CA makes.
        (
            "flat sha256, another hash",
            flat.clone(),
            dump(&ci, &flat),
            format!("fixed:sha256:{some_hash}"),
            String::new(),
        ),
        (
            "text, another hash",
            text.clone(),
            dump(&ci, &text),
            format!("text:sha256:{some_hash}"),
            String::new(),
        ),
        (
            "recursive sha1, zero hash",
            rec_sha1.clone(),
            dump(&ci, &rec_sha1),
            format!("fixed:r:sha1:{}", "0".repeat(40)),
            String::new(),
        ),
        (
            "flat md5, zero hash",
            flat_md5.clone(),
            dump(&ci, &flat_md5),
            format!("fixed:md5:{}", "0".repeat(32)),
            String::new(),
        ),
        (
            "source path claiming a reference it was not made with",
            source.clone(),
            dump(&ci, &source),
            ca_of(&ci, &source),
            flat.rsplit('/').next().unwrap().to_owned(),
        ),
        // The path fits its CA, the uploaded contents do not.
        (
            "flat sha256, other file",
            flat.clone(),
            y_nar.clone(),
            ca_of(&ci, &flat),
            String::new(),
        ),
        (
            "flat md5, other file",
            flat_md5.clone(),
            y_nar.clone(),
            ca_of(&ci, &flat_md5),
            String::new(),
        ),
        (
            "text, other file",
            text.clone(),
            y_nar.clone(),
            ca_of(&ci, &text),
            String::new(),
        ),
        (
            "recursive sha1, other tree",
            rec_sha1.clone(),
            other_tree_nar.clone(),
            ca_of(&ci, &rec_sha1),
            String::new(),
        ),
        (
            "flat sha256, a directory",
            flat.clone(),
            other_tree_nar.clone(),
            ca_of(&ci, &flat),
            String::new(),
        ),
        (
            "flat sha256 with a reference",
            flat.clone(),
            dump(&ci, &flat),
            ca_of(&ci, &flat),
            text.rsplit('/').next().unwrap().to_owned(),
        ),
    ];
    for (what, path, nar, ca, refs) in &cases {
        let (code, body) = upload(&receiver, path, nar, ca, refs);
        assert!(
            (400..500).contains(&code),
            "{what}: {code} {body}\n{}",
            receiver.log()
        );
        assert!(body.contains("CA"), "{what}: {body}");
        assert_eq!(body.trim().lines().count(), 1, "{what}: {body}");
        assert!(!valid(&host, path), "{what}: imported");
    }
    assert!(
        receiver.staging_entries().is_empty(),
        "staging left {:?}",
        receiver.staging_entries()
    );
    assert!(!receiver.log().contains("status=500"), "{}", receiver.log());
    assert!(!receiver.log().contains("nix copy"), "{}", receiver.log());
}
