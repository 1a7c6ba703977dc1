//! narinfo and signatures against the real Nix: we parse every narinfo that
//! `nix copy --to file://` writes, and a narinfo we sign is accepted by
//! `nix copy --from` with `require-sigs`, while a wrong signature is refused.

use std::fs;
use std::path::Path;

use larder_store::narinfo::NarInfo;
use larder_store::signature::{PublicKey, SecretKey, Signature, fingerprint};
use larder_tests::{TestStore, nix_command, run, run_stdout, shell_derivation};

/// A small closure: `top` refers to `mid`, which refers to `leaf`.
fn closure(store: &TestStore) -> String {
    let leaf = shell_derivation("leaf", "echo leaf > $out");
    let mid = format!(
        r#"derivation {{ name = "mid"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; leaf = {leaf}; args = ["-c" "mkdir $out; echo $leaf > $out/ref; echo x > $out/f"]; }}"#
    );
    let top = format!(
        r#"derivation {{ name = "top"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; mid = {mid}; args = ["-c" "echo $mid > $out"]; }}"#
    );
    store.build_expr(&top).remove(0)
}

fn export(store: &TestStore, path: &str, dir: &Path, compression: &str) {
    run(store
        .nix("nix")
        .args(["copy", "--to"])
        .arg(format!(
            "file://{}?compression={compression}",
            dir.display()
        ))
        .arg(path));
}

fn narinfos(dir: &Path) -> Vec<(std::path::PathBuf, NarInfo)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "narinfo") {
            let text = fs::read_to_string(&p).unwrap();
            let info: NarInfo = text
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()));
            // What we render is what Nix wrote, byte for byte.
            assert_eq!(info.to_string(), text, "{}", p.display());
            out.push((p, info));
        }
    }
    out
}

#[test]
fn parses_every_narinfo_nix_writes() {
    let store = TestStore::new();
    let top = closure(&store);
    for compression in ["none", "xz", "zstd", "bzip2"] {
        let dir = tempfile::tempdir().unwrap();
        export(&store, &top, dir.path(), compression);
        let infos = narinfos(dir.path());
        assert_eq!(infos.len(), 3, "the closure has three paths");
        for (_, info) in &infos {
            assert_eq!(info.compression, compression);
            let full = format!("{}/{}", info.store_dir, info.store_path);
            let json: serde_json::Value =
                serde_json::from_str(&run_stdout(store.nix("nix").args([
                    "path-info",
                    "--json",
                    &full,
                ])))
                .unwrap();
            assert_eq!(json[0]["narHash"], info.nar_hash.to_sri());
            assert_eq!(json[0]["narSize"], info.nar_size);
            let refs: Vec<String> = info
                .references
                .iter()
                .map(|r| format!("/nix/store/{r}"))
                .collect();
            assert_eq!(json[0]["references"], serde_json::json!(refs));
            assert!(info.deriver.is_some(), "built paths have a deriver");
        }
    }
}

/// Replace every narinfo's signatures with `key`'s, as larder-signer will.
fn resign(dir: &Path, key: &SecretKey) {
    for (p, mut info) in narinfos(dir) {
        let fp = fingerprint(
            &info.store_dir,
            &info.store_path,
            &info.nar_hash,
            info.nar_size,
            &info.references,
        );
        info.sigs = vec![key.sign(&fp).to_string()];
        fs::write(p, info.to_string()).unwrap();
    }
}

fn copy_from(dir: &Path, path: &str, trusted: &PublicKey) -> std::process::Output {
    let dest = tempfile::tempdir().unwrap();
    nix_command("nix")
        .args(["copy", "--from"])
        .arg(format!("file://{}", dir.display()))
        .arg("--to")
        .arg(dest.path())
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &trusted.to_string()])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn nix_accepts_our_signatures_and_refuses_wrong_ones() {
    let store = TestStore::new();
    let top = closure(&store);
    let dir = tempfile::tempdir().unwrap();
    export(&store, &top, dir.path(), "none");

    // A key made by the real Nix loads, and its public half matches Nix's.
    let secret_text = run_stdout(nix_command("nix").args([
        "key",
        "generate-secret",
        "--key-name",
        "larder-test-1",
    ]));
    let key: SecretKey = secret_text.parse().unwrap();
    let keyfile = dir.path().join("key.sec");
    fs::write(&keyfile, &secret_text).unwrap();
    let nix_public = run_stdout(
        nix_command("nix")
            .args(["key", "convert-secret-to-public"])
            .stdin(fs::File::open(&keyfile).unwrap()),
    );
    assert_eq!(key.public().to_string(), nix_public.trim());

    resign(dir.path(), &key);
    let ok = copy_from(dir.path(), &top, &key.public());
    assert!(
        ok.status.success(),
        "nix refused our signatures: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Signed by another key with the same name: Nix must refuse.
    let impostor = SecretKey::generate("larder-test-1").unwrap();
    resign(dir.path(), &impostor);
    let refused = copy_from(dir.path(), &top, &key.public());
    assert!(!refused.status.success(), "nix accepted a wrong signature");
}

#[test]
fn our_keys_work_with_nix_and_nix_signatures_verify_with_ours() {
    let store = TestStore::new();
    let top = closure(&store);
    let dir = tempfile::tempdir().unwrap();

    // Our generated key file, read by the real Nix.
    let ours = SecretKey::generate("larder-test-2").unwrap();
    let keyfile = dir.path().join("ours.sec");
    fs::write(&keyfile, ours.to_key_file().as_bytes()).unwrap();
    let nix_public = run_stdout(
        nix_command("nix")
            .args(["key", "convert-secret-to-public"])
            .stdin(fs::File::open(&keyfile).unwrap()),
    );
    assert_eq!(ours.public().to_string(), nix_public.trim());

    // Nix signs with our key file; we verify Nix's signature.
    run(store
        .nix("nix")
        .args(["store", "sign", "--key-file"])
        .arg(&keyfile)
        .arg(&top));
    let json: serde_json::Value = serde_json::from_str(&run_stdout(store.nix("nix").args([
        "path-info",
        "--json",
        &top,
    ])))
    .unwrap();
    let sig: Signature = json[0]["signatures"][0].as_str().unwrap().parse().unwrap();
    let path = store.location().parse_path(&top).unwrap();
    let refs: Vec<_> = json[0]["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| store.location().parse_path(r.as_str().unwrap()).unwrap())
        .collect();
    let fp = fingerprint(
        "/nix/store",
        &path,
        &json[0]["narHash"].as_str().unwrap().parse().unwrap(),
        json[0]["narSize"].as_u64().unwrap(),
        &refs,
    );
    assert!(ours.public().verify(&fp, &sig));
    assert_eq!(
        ours.sign(&fp),
        sig,
        "ed25519 is deterministic: same signature as Nix"
    );
}
