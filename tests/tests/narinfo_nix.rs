//! narinfo and signatures against the real Nix: we parse every narinfo that
//! `nix copy --to file://` writes, and a narinfo we sign is accepted by
//! `nix copy --from` with `require-sigs`, while a wrong signature is refused.

use std::fs;

use larder_signer::signing_key::SecretKey;
use larder_store::fingerprint::fingerprint;
use larder_store::public_key::PublicKey;
use larder_store::signature::Signature;
use larder_tests::fixtures::{
    copy_with_sigs, export_file_cache, file_uri, read_narinfos, sign_file_cache, three_path_closure,
};
use larder_tests::{TestStore, nix_command, run, run_stdout};

/// True when `sig` is by `key` (same name) over `fingerprint`, checked
/// with ed25519-dalek directly: an oracle independent of larder's code.
fn verifies(key: &PublicKey, fingerprint: &str, sig: &Signature) -> bool {
    use ed25519_dalek::{Verifier, VerifyingKey};
    let Ok(key_bytes) = VerifyingKey::from_bytes(key.bytes()) else {
        return false;
    };
    sig.key_name() == key.name()
        && key_bytes
            .verify(
                fingerprint.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(sig.bytes()),
            )
            .is_ok()
}

#[test]
fn parses_every_narinfo_nix_writes() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    for compression in ["none", "xz", "zstd", "bzip2"] {
        let dir = tempfile::tempdir().unwrap();
        export_file_cache(&store, &top, dir.path(), compression);
        let infos = read_narinfos(dir.path());
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

#[test]
fn nix_accepts_our_signatures_and_refuses_wrong_ones() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let dir = tempfile::tempdir().unwrap();
    export_file_cache(&store, &top, dir.path(), "none");

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

    sign_file_cache(dir.path(), |fp| vec![key.sign(fp).to_string()]);
    let ok = copy_with_sigs(&file_uri(dir.path()), &top, &key.public().to_string());
    assert!(
        ok.status.success(),
        "nix refused our signatures: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Signed by another key with the same name: Nix must refuse.
    let impostor = SecretKey::generate("larder-test-1").unwrap();
    sign_file_cache(dir.path(), |fp| vec![impostor.sign(fp).to_string()]);
    let refused = copy_with_sigs(&file_uri(dir.path()), &top, &key.public().to_string());
    assert!(!refused.status.success(), "nix accepted a wrong signature");
}

#[test]
fn our_keys_work_with_nix_and_nix_signatures_verify_with_ours() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
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
    assert!(verifies(&ours.public(), &fp, &sig));
    assert_eq!(
        ours.sign(&fp),
        sig,
        "ed25519 is deterministic: same signature as Nix"
    );
}
