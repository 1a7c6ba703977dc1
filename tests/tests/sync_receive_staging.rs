//! The receiver's staging area under hostile and broken pushers (found by
//! the hostile-input pass): `--max-staging-mib` reached answers 503 (Nix
//! retries it) with one line, and frees up as narinfos arrive; a narinfo
//! refused before it parsed (garbage, another store dir, a StorePath that
//! is not the URL's) used to leave its NAR staged until the sweep, so a
//! few refusals filled the staging area for every pusher.

use larder_store::Sha256Hash;
use larder_tests::TestStore;
use larder_tests::receive::{TestReceiver, file_nar, send};
use rand::RngCore;

/// The NAR of a regular file of `len` random bytes.
fn random_nar(len: usize) -> Vec<u8> {
    let mut contents = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut contents);
    file_nar(&contents)
}

/// A random store path hash part (nix32 of 20 random bytes).
fn random_hash() -> String {
    let mut b = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut b);
    larder_store::nixbase32::encode(&b)
}

/// PUT `nar` as `nar/<sha256>.nar`; its URL and the status.
fn put_nar(receiver: &TestReceiver, nar: &[u8]) -> (String, u16, String) {
    let url = format!("nar/{}.nar", Sha256Hash::digest(nar).to_nix32());
    let (code, body) = send(receiver.request("PUT", &format!("/{url}")), nar);
    (url, code, body)
}

fn narinfo(path_hash: &str, url: &str, nar: &[u8]) -> String {
    format!(
        "StorePath: /nix/store/{path_hash}-staged\nURL: {url}\nCompression: none\nNarHash: sha256:{}\nNarSize: {}\nReferences: \n",
        Sha256Hash::digest(nar).to_nix32(),
        nar.len()
    )
}

/// From a path hash and a NAR URL: the hash to PUT to and a narinfo
/// refused before it parses.
type Refusal = fn(&str, &str) -> (String, String);

#[test]
fn narinfos_refused_before_parsing_leave_nothing_staged() {
    let host = TestStore::new();
    // Room for one 700 KiB NAR at a time.
    let receiver = TestReceiver::start(&host, &["--max-staging-mib", "1"]);
    let refusals: [Refusal; 4] = [
        |hash, url| (hash.to_owned(), format!("URL: {url}\nnot a narinfo line\n")),
        |hash, url| {
            let other = "/tmp/store";
            (
                hash.to_owned(),
                format!(
                    "StorePath: {other}/{hash}-x\nURL: {url}\nCompression: none\nNarHash: sha256:{}\nNarSize: 1\nReferences: \n",
                    Sha256Hash::digest(b"").to_nix32()
                ),
            )
        },
        |hash, url| {
            (
                random_hash(),
                format!(
                    "StorePath: /nix/store/{hash}-x\nURL: {url}\nCompression: none\nNarHash: sha256:{}\nNarSize: 1\nReferences: \n",
                    Sha256Hash::digest(b"").to_nix32()
                ),
            )
        },
        |hash, url| {
            (
                hash.to_owned(),
                format!(
                    "StorePath: /nix/store/{hash}-x\nURL: {url}\nCompression: none\nNarHash: sha256:x\nNarSize: 1\nReferences: ../../etc/passwd\n"
                ),
            )
        },
    ];
    // Twice each: without the release, the second NAR upload finds the
    // staging area full.
    for round in 0..2 {
        for (i, refusal) in refusals.iter().enumerate() {
            let nar = random_nar(700 << 10);
            let (url, code, body) = put_nar(&receiver, &nar);
            assert_eq!(code, 200, "round {round}, case {i}: {body}");
            let (url_hash, text) = refusal(&random_hash(), &url);
            let (code, body) = send(
                receiver.request("PUT", &format!("/{url_hash}.narinfo")),
                text.as_bytes(),
            );
            assert_eq!(code, 400, "round {round}, case {i}: {body}");
            assert!(
                receiver.staging_entries().is_empty(),
                "round {round}, case {i}: staging left {:?}",
                receiver.staging_entries()
            );
        }
    }
}

#[test]
fn a_full_staging_area_is_503_until_a_narinfo_takes_its_nar() {
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &["--max-staging-mib", "1"]);
    let first = random_nar(700 << 10);
    let (url, code, body) = put_nar(&receiver, &first);
    assert_eq!(code, 200, "{body}");
    // A second NAR does not fit beside the first: 503, one line, nothing
    // of it staged.
    let second = random_nar(700 << 10);
    let (_, code, body) = put_nar(&receiver, &second);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body.trim().lines().count(), 1, "{body}");
    assert!(body.contains("staging"), "{body}");
    assert_eq!(receiver.staging_entries().len(), 1);
    // The first NAR's narinfo imports it and frees the room.
    let hash = random_hash();
    let (code, body) = send(
        receiver.request("PUT", &format!("/{hash}.narinfo")),
        narinfo(&hash, &url, &first).as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    assert!(receiver.staging_entries().is_empty());
    let (_, code, body) = put_nar(&receiver, &second);
    assert_eq!(code, 200, "{body}");
}
