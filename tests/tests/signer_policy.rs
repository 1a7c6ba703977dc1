//! larder-signer as a real process on a real store: it signs only what the
//! store holds, the real Nix accepts its signatures, and it refuses to start
//! with a key file others can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use larder_store::fingerprint::Fingerprint;
use larder_store::signer_proto::{Reply, Request};
use larder_tests::fixtures::{
    copy_with_sigs, export_file_cache, file_uri, sign_file_cache, three_path_closure,
};
use larder_tests::process::binary;
use larder_tests::signer::{TestSigner, generate_key};
use larder_tests::{TestStore, run_stdout};

/// One request through the operator tool, as an operator would send it
/// (a batch, which the tool does not send, straight over the socket).
fn ask(signer: &TestSigner, request: &Request) -> Reply {
    let mut cmd = Command::new(binary("larder-signer"));
    cmd.arg("request").arg("--socket").arg(&signer.socket);
    match request {
        Request::SignBatch { .. } | Request::LogKey => return ask_socket(signer, request),
        Request::Sign { fingerprint, .. } => cmd.args(["--fingerprint", fingerprint]),
        Request::Metrics => cmd.arg("--metrics"),
        Request::PublicKeys => &mut cmd,
    };
    let out = cmd.output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("reply {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}

fn ask_socket(signer: &TestSigner, request: &Request) -> Reply {
    use larder_store::signer_proto::{encode_frame, read_frame_blocking};
    let mut stream = std::os::unix::net::UnixStream::connect(&signer.socket).unwrap();
    std::io::Write::write_all(&mut stream, &encode_frame(request).unwrap()).unwrap();
    read_frame_blocking(&mut stream).unwrap()
}

fn refusal_code(reply: Reply) -> String {
    match reply {
        Reply::Refused(r) => r.code.as_str().to_owned(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn true_fingerprint(store: &TestStore, path: &str) -> Fingerprint {
    let json: serde_json::Value = serde_json::from_str(&run_stdout(store.nix("nix").args([
        "path-info",
        "--json",
        path,
    ])))
    .unwrap();
    let loc = store.location();
    let text = larder_store::fingerprint::fingerprint(
        "/nix/store",
        &loc.parse_path(path).unwrap(),
        &json[0]["narHash"].as_str().unwrap().parse().unwrap(),
        json[0]["narSize"].as_u64().unwrap(),
        &json[0]["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| loc.parse_path(r.as_str().unwrap()).unwrap())
            .collect::<Vec<_>>(),
    );
    Fingerprint::parse("/nix/store", &text).unwrap()
}

#[test]
fn signs_only_what_the_store_holds() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = TestSigner::start(&store, &[]);
    let good = true_fingerprint(&store, &top);

    match ask(&signer, &Request::PublicKeys) {
        Reply::PublicKeys(keys) => assert_eq!(keys, vec![signer.public_key.clone()]),
        other => panic!("{other:?}"),
    }
    let sign = |fp: &Fingerprint| Request::Sign {
        fingerprint: fp.to_string(),
        keys: None,
    };
    assert!(matches!(ask(&signer, &sign(&good)), Reply::Signatures(s) if s.len() == 1));

    let mut wrong_hash = good.clone();
    wrong_hash.nar_hash = larder_store::Sha256Hash::digest(b"forged");
    assert_eq!(
        refusal_code(ask(&signer, &sign(&wrong_hash))),
        "hash-mismatch"
    );

    let mut wrong_size = good.clone();
    wrong_size.nar_size += 8;
    assert_eq!(
        refusal_code(ask(&signer, &sign(&wrong_size))),
        "size-mismatch"
    );

    let mut missing_ref = good.clone();
    missing_ref.references.clear();
    assert_eq!(
        refusal_code(ask(&signer, &sign(&missing_ref))),
        "references-mismatch"
    );

    let mut extra_ref = good.clone();
    extra_ref.references.push(good.path.clone());
    assert_eq!(
        refusal_code(ask(&signer, &sign(&extra_ref))),
        "references-mismatch"
    );

    let mut absent = good.clone();
    absent.path = "00000000000000000000000000000000-absent".parse().unwrap();
    assert_eq!(refusal_code(ask(&signer, &sign(&absent))), "not-in-store");

    for garbage in ["", "garbage", "1;/etc/passwd;sha256:x;1;", "1;;;;"] {
        let req = Request::Sign {
            fingerprint: garbage.to_owned(),
            keys: None,
        };
        assert_eq!(
            refusal_code(ask(&signer, &req)),
            "bad-fingerprint",
            "{garbage:?}"
        );
    }

    // The refusals are counted, per code.
    match ask(&signer, &Request::Metrics) {
        Reply::Metrics(text) => {
            assert!(
                text.contains(r#"larder_signer_refusals_total{code="hash-mismatch"} 1"#),
                "{text}"
            );
            assert!(
                text.contains(r#"larder_signer_refusals_total{code="bad-fingerprint"} 4"#),
                "{text}"
            );
            assert!(
                text.contains(r#"larder_signer_signatures_total{key="larder-test-1"} 1"#),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_batch_is_checked_fingerprint_by_fingerprint() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = TestSigner::start(&store, &[]);
    let good = true_fingerprint(&store, &top);
    let mut forged = good.clone();
    forged.nar_hash = larder_store::Sha256Hash::digest(b"forged");
    let batch = |fingerprints: Vec<String>, keys: Option<Vec<String>>| Request::SignBatch {
        fingerprints,
        keys,
    };

    let reply = ask(
        &signer,
        &batch(
            vec![good.to_string(), forged.to_string(), "garbage".into()],
            None,
        ),
    );
    let Reply::Batch(replies) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(replies.len(), 3);
    // The same signature as a single `sign` gives.
    let single = ask(
        &signer,
        &Request::Sign {
            fingerprint: good.to_string(),
            keys: None,
        },
    );
    assert_eq!(replies[0], single);
    assert_eq!(refusal_code(replies[1].clone()), "hash-mismatch");
    assert_eq!(refusal_code(replies[2].clone()), "bad-fingerprint");

    // A key the signer lacks refuses the whole batch; so does an oversized one.
    let unknown = batch(vec![good.to_string()], Some(vec!["nope".into()]));
    assert_eq!(refusal_code(ask(&signer, &unknown)), "unknown-key");
    let max = larder_store::signer_proto::MAX_BATCH;
    let huge = batch(vec![good.to_string(); max + 1], None);
    assert_eq!(refusal_code(ask(&signer, &huge)), "malformed");
}

#[test]
fn the_real_nix_accepts_the_signers_signatures() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let signer = TestSigner::start(&store, &[]);
    let cache = tempfile::tempdir().unwrap();
    export_file_cache(&store, &top, cache.path(), "none");
    sign_file_cache(cache.path(), |fp| {
        match ask(
            &signer,
            &Request::Sign {
                fingerprint: fp.to_owned(),
                keys: None,
            },
        ) {
            Reply::Signatures(sigs) => sigs,
            other => panic!("signer refused a true fingerprint {fp}: {other:?}"),
        }
    });
    let out = copy_with_sigs(&file_uri(cache.path()), &top, &signer.public_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn peers_outside_the_allow_list_are_refused() {
    let store = TestStore::new();
    // The test runs as root (uid 0); only uid 4242 may ask.
    let signer = TestSigner::start(&store, &["--allow-uid", "4242"]);
    assert_eq!(
        refusal_code(ask(&signer, &Request::PublicKeys)),
        "forbidden"
    );
}

#[test]
fn refuses_to_start_with_a_readable_key_or_a_bad_one() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = generate_key(dir.path(), "k");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let serve = |key: &Path| {
        Command::new(binary("larder-signer"))
            .arg("serve")
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .arg("--key-file")
            .arg(key)
            .arg("--store-root")
            .arg(store.root())
            .output()
            .unwrap()
    };
    let out = serve(&key);
    let err = String::from_utf8_lossy(&out.stderr);
    // A configuration error exits 2, like a usage error.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&key.display().to_string()) && err.contains("chmod 600"),
        "{err}"
    );

    let truncated = dir.path().join("truncated.sec");
    let text = std::fs::read_to_string(&key).unwrap();
    std::fs::write(&truncated, &text[..text.len() / 2]).unwrap();
    std::fs::set_permissions(&truncated, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = serve(&truncated);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("truncated.sec") && err.contains("not a Nix secret key"),
        "{err}"
    );
    assert!(
        !err.contains(&text[5..20]),
        "the key must never be echoed: {err}"
    );
}

/// One raw exchange: write `bytes`, then read a reply frame if one comes
/// (`None`: the signer hung up without one).
fn raw_exchange(signer: &TestSigner, bytes: &[u8], half_close: bool) -> Option<Reply> {
    use larder_store::signer_proto::read_frame_blocking;
    let mut stream = std::os::unix::net::UnixStream::connect(&signer.socket).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(&mut stream, bytes).unwrap();
    if half_close {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    read_frame_blocking(&mut stream).ok()
}

/// The hostile pass's `sign-batch` corpus: every batch gets a defined
/// answer (a batch of the same length, or one refusal), every bad frame a
/// refusal or a hang-up, and the signer keeps serving throughout.
#[test]
fn hostile_batches_and_frames_get_defined_answers_and_the_signer_keeps_serving() {
    use larder_store::signer_proto::{MAX_BATCH, MAX_FRAME, encode_frame};
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let dir = tempfile::tempdir().unwrap();
    // Ten keys with realistic names: a full batch's reply would carry
    // 10 240 signatures, over a megabyte.
    let mut extra = Vec::new();
    for i in 2..=10 {
        let (key, _) = generate_key(dir.path(), &format!("cache.example.org-{i}"));
        extra.push(key.to_str().unwrap().to_owned());
    }
    let args: Vec<&str> = extra
        .iter()
        .flat_map(|k| ["--key-file", k.as_str()])
        .collect();
    let signer = TestSigner::start(&store, &args);
    let parsed = true_fingerprint(&store, &top);
    let good = parsed.to_string();
    let Reply::Signatures(single) = ask_socket(
        &signer,
        &Request::Sign {
            fingerprint: good.clone(),
            keys: None,
        },
    ) else {
        panic!("the true fingerprint was refused")
    };
    assert_eq!(single.len(), 10);
    let batch = |fingerprints: Vec<String>| Request::SignBatch {
        fingerprints,
        keys: None,
    };
    let alive = |what: &str| {
        assert!(
            matches!(ask_socket(&signer, &Request::PublicKeys), Reply::PublicKeys(k) if k.len() == 10),
            "signer stopped answering after {what}"
        );
    };

    // 0, 1 and many (all duplicates of one path) fingerprints.
    assert_eq!(ask_socket(&signer, &batch(vec![])), Reply::Batch(vec![]));
    assert_eq!(
        ask_socket(&signer, &batch(vec![good.clone()])),
        Reply::Batch(vec![Reply::Signatures(single.clone())])
    );
    // 1024 fingerprints signed by ten keys do not fit in one reply frame:
    // a refusal that says how many do (it used to hang up without one).
    let fits = match ask_socket(&signer, &batch(vec![good.clone(); MAX_BATCH])) {
        Reply::Refused(r) => {
            assert_eq!(r.code.as_str(), "malformed", "{}", r.reason);
            let n = r.reason.split("at most ").nth(1).unwrap_or_default();
            n.split(' ').next().unwrap().parse::<usize>().unwrap()
        }
        other => panic!("{:.200}", format!("{other:?}")),
    };
    assert!((100..MAX_BATCH).contains(&fits), "{fits}");
    match ask_socket(&signer, &batch(vec![good.clone(); fits])) {
        Reply::Batch(replies) => {
            assert_eq!(replies.len(), fits);
            assert!(
                replies
                    .iter()
                    .all(|r| *r == Reply::Signatures(single.clone()))
            );
        }
        other => panic!("{:.200}", format!("{other:?}")),
    }
    alive("a full batch");
    // 1025: one refusal.
    assert_eq!(
        refusal_code(ask_socket(
            &signer,
            &batch(vec![good.clone(); MAX_BATCH + 1])
        )),
        "malformed"
    );
    alive("an oversized batch");

    // Malformed fingerprints and paths not valid in the store, mixed with
    // good ones: one answer each, in order.
    let not_in_store = good.replacen(
        &parsed.path.hash().to_string(),
        "00000000000000000000000000000000",
        1,
    );
    let hostile = [
        (String::new(), "bad-fingerprint"),
        ("1;".into(), "bad-fingerprint"),
        (good.replace("sha256:", "sha256:X"), "bad-fingerprint"),
        (
            good.replacen("/nix/store/", "/tmp/store/", 1),
            "bad-fingerprint",
        ),
        (
            good.replacen("/nix/store/", "/nix/store/../", 1),
            "bad-fingerprint",
        ),
        (format!("{good};extra"), "bad-fingerprint"),
        (good.replacen("1;", "2;", 1), "bad-fingerprint"),
        (format!("{good}\n"), "bad-fingerprint"),
        ("x".repeat(100_000), "bad-fingerprint"),
        (not_in_store, "not-in-store"),
    ];
    let mut fingerprints = vec![good.clone()];
    fingerprints.extend(hostile.iter().map(|(f, _)| f.clone()));
    fingerprints.push(good.clone());
    let Reply::Batch(replies) = ask_socket(&signer, &batch(fingerprints.clone())) else {
        panic!("mixed batch not answered as a batch")
    };
    assert_eq!(replies.len(), fingerprints.len());
    assert_eq!(replies[0], Reply::Signatures(single.clone()));
    assert_eq!(
        replies[replies.len() - 1],
        Reply::Signatures(single.clone())
    );
    for ((f, code), reply) in hostile.iter().zip(&replies[1..]) {
        assert_eq!(refusal_code(reply.clone()), *code, "{:.80}", f);
    }
    alive("malformed fingerprints");

    // Frames that lie: a length over the limit, a body shorter than its
    // length (then EOF), a length shorter than the JSON, no JSON at all.
    let frame = encode_frame(&batch(vec![good.clone(); 4])).unwrap();
    let over = (MAX_FRAME + 1).to_be_bytes();
    let mut short = frame.clone();
    short.truncate(frame.len() - 10);
    let mut cut = frame.clone();
    cut[..4].copy_from_slice(&10u32.to_be_bytes());
    let mut not_json = 8u32.to_be_bytes().to_vec();
    not_json.extend_from_slice(b"\x00\xff\x00\xff\x00\xff\x00\xff");
    for (what, bytes) in [
        ("length over MAX_FRAME", over.to_vec()),
        ("body shorter than its length", short),
        ("length shorter than the body", cut),
        ("no JSON", not_json),
        ("half a header", vec![0, 0]),
    ] {
        if let Some(reply) = raw_exchange(&signer, &bytes, true) {
            assert_eq!(refusal_code(reply), "malformed", "{what}");
        }
        alive(what);
    }
    // A frame that stops mid-body and stays open ties up only its own
    // connection.
    let mut stalled = std::os::unix::net::UnixStream::connect(&signer.socket).unwrap();
    std::io::Write::write_all(&mut stalled, &frame[..frame.len() / 2]).unwrap();
    alive("a stalled frame");
    // A client that sends a full batch and leaves before the answer.
    for _ in 0..5 {
        let mut gone = std::os::unix::net::UnixStream::connect(&signer.socket).unwrap();
        let big = encode_frame(&batch(vec![good.clone(); MAX_BATCH])).unwrap();
        std::io::Write::write_all(&mut gone, &big).unwrap();
        drop(gone);
    }
    alive("clients that left mid-batch");
    drop(stalled);
    alive("the stalled client left");
}
