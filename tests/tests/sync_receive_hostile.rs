//! `larder-sync receive` under attack: each case a security tester found,
//! kept as a test against the real binary on loopback. Bytes that are not
//! a NAR, bad `CA:` fields, claim theft between pushers, request
//! smuggling, stalled and short bodies (raw TCP), one token taking every
//! upload slot, and flags that used to panic at startup.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;

use larder_store::Sha256Hash;
use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::{export_file_cache, read_narinfos};
use larder_tests::process::binary;
use larder_tests::receive::{
    OTHER, OTHER_TOKEN, PUSHER, TOKEN, TestReceiver, base64_basic, file_nar, send,
};
use larder_tests::{TestStore, narinfo_url, shell_derivation};

/// `/nar/<nix32 sha256 of bytes>.nar`.
fn nar_path(bytes: &[u8]) -> String {
    format!("/nar/{}.nar", Sha256Hash::digest(bytes).to_nix32())
}

fn basic(user: &str, token: &str) -> String {
    format!("Basic {}", base64_basic(user, token))
}

/// One request on a fresh connection, `body` sent as given; returns
/// everything the receiver answered until it closed (or 60 s passed).
fn raw(receiver: &TestReceiver, head: &str, body: &[u8], half_close: bool) -> String {
    let addr = receiver.url().trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    if half_close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn store_paths(store: &TestStore) -> Vec<String> {
    fs::read_dir(store.root().join("nix/store"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".links")
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn invalid_nars_and_content_addresses_are_4xx_before_any_import() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let dep = ci
        .build_expr(&shell_derivation("dep", "echo dep > $out"))
        .remove(0);
    let cache = tempfile::tempdir().unwrap();
    export_file_cache(&ci, &dep, cache.path(), "none");
    let info: NarInfo = read_narinfos(cache.path()).remove(0).1;
    let nar = fs::read(cache.path().join(&info.url)).unwrap();
    let receiver = TestReceiver::start(&host, &[]);
    let put = |path: &str| receiver.request("PUT", path);
    let clean = |what: &str| {
        assert!(
            receiver.staging_entries().is_empty(),
            "{what}: staging left {:?}",
            receiver.staging_entries()
        );
        assert!(
            store_paths(&host).is_empty(),
            "{what}: the store got {:?}",
            store_paths(&host)
        );
    };

    let mut trailing = nar.clone();
    trailing.extend_from_slice(&[0; 8]);
    let mut bad_padding = nar.clone();
    bad_padding[13] = b'x';
    for (what, bytes) in [
        ("garbage", b"this is not a NAR at all, only text\n".to_vec()),
        ("truncated", nar[..nar.len() - 8].to_vec()),
        ("trailing bytes", trailing),
        ("bad padding", bad_padding),
        ("empty", Vec::new()),
    ] {
        let (code, body) = send(put(&nar_path(&bytes)), &bytes);
        assert_eq!(code, 400, "{what}: {body}");
        assert!(body.contains("NAR"), "{what}: {body}");
        clean(what);
    }

    // CA: garbage syntax, an unknown algorithm, a recursive SHA-256 that is
    // not the NAR's hash: 400 at the narinfo, the staged NAR is released.
    let other = Sha256Hash::digest(b"other").to_nix32();
    for ca in [
        "garbage".to_owned(),
        format!("fixed:sha3:{other}"),
        "text:sha256:short".to_owned(),
        format!("fixed:r:sha256:{other}"),
    ] {
        let (code, body) = send(put(&format!("/{}", info.url)), &nar);
        assert_eq!(code, 200, "{body}");
        let bad = NarInfo {
            ca: Some(ca.clone()),
            ..info.clone()
        };
        let (code, body) = send(put(&narinfo_url(&dep)), bad.to_string().as_bytes());
        assert_eq!(code, 400, "CA {ca}: {body}");
        assert!(body.contains("CA"), "{body}");
        clean(&ca);
    }

    // A path traversal in the NAR URL is a bad URL, not a compression.
    let (code, body) = send(put("/nar/..%2f..%2fetc%2fpasswd"), b"x");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bad NAR URL"), "{body}");

    // A log for a derivation the store does not hold.
    let drv = format!("{}-x.drv", "0".repeat(32));
    let (code, body) = send(put(&format!("/log/{drv}")), b"log\n");
    assert_eq!(code, 409, "{body}");
}

#[test]
fn a_pusher_cannot_release_another_pushers_staged_nar() {
    let ci = TestStore::new();
    let host = TestStore::new();
    let dep = ci
        .build_expr(&shell_derivation("dep", "echo claimed > $out"))
        .remove(0);
    let cache = tempfile::tempdir().unwrap();
    export_file_cache(&ci, &dep, cache.path(), "none");
    let info: NarInfo = read_narinfos(cache.path()).remove(0).1;
    let nar = fs::read(cache.path().join(&info.url)).unwrap();
    let mut receiver = TestReceiver::start(&host, &[]);
    receiver.add_second_pusher();
    let as_other = |method: &str, path: &str| {
        ureq::request(method, &format!("{}{path}", receiver.url()))
            .set("Authorization", &basic(OTHER, OTHER_TOKEN))
    };

    let (code, body) = send(receiver.request("PUT", &format!("/{}", info.url)), &nar);
    assert_eq!(code, 200, "{body}");
    // B names A's NAR in a bogus narinfo, then in a good one: both refused,
    // A's NAR stays staged.
    let bogus = NarInfo {
        nar_size: info.nar_size + 1,
        ..info.clone()
    };
    for i in [&bogus, &info] {
        let (code, body) = send(
            as_other("PUT", &narinfo_url(&dep)),
            i.to_string().as_bytes(),
        );
        assert_eq!(code, 400, "{body}");
        assert_eq!(receiver.staging_entries().len(), 1);
    }
    // A's own narinfo still imports it.
    let (code, body) = send(
        receiver.request("PUT", &narinfo_url(&dep)),
        info.to_string().as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    assert!(receiver.staging_entries().is_empty());
}

#[test]
fn smuggling_stalls_and_short_bodies_over_raw_tcp() {
    let host = TestStore::new();
    let mut receiver = TestReceiver::start(
        &host,
        &[
            "--upload-idle-timeout-secs",
            "1",
            "--max-concurrent-uploads",
            "2",
        ],
    );
    let auth = basic(PUSHER, TOKEN);
    let hash = "0".repeat(32);

    // Transfer-Encoding and Content-Length together: 400, closed, and the
    // bytes after the body are never answered as a second request.
    let head = format!(
        "PUT /{hash}.narinfo HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
    );
    let smuggled = format!(
        "0\r\n\r\nGET /nix-cache-info HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    );
    let answer = raw(&receiver, &head, smuggled.as_bytes(), false);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    // actix may have parsed the smuggled request already: it is refused too.
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        answer.matches("HTTP/1.1 400").count(),
        "{answer}"
    );
    assert!(!answer.contains("StoreDir"), "{answer}");

    // Small bodies announcing 100 bytes, sending 2, then silence: 408.
    for path in [format!("/{hash}.narinfo"), format!("/{hash}.ls")] {
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 100\r\n\r\n"
        );
        let answer = raw(&receiver, &head, b"ab", false);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
    }

    // Content-Length larger than what arrives, then a half-close: 400,
    // nothing staged.
    let nar = file_nar(b"short body\n");
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
        nar_path(&nar),
        nar.len() + 16
    );
    let answer = raw(&receiver, &head, &nar, true);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(receiver.staging_entries().is_empty());

    // 1 byte every 200 ms never pauses for the idle timeout (1 s), but
    // averages under the minimum rate: 408 once past the first idle period.
    let nar = file_nar(&[b'z'; 4096]);
    let addr = receiver.url().trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
        nar_path(&nar),
        nar.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    for byte in &nar {
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
        if s.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(receiver.staging_entries().is_empty());

    // One token trickling: it holds at most half the slots (1 of 2), so
    // another pusher's upload goes through at once.
    receiver.kill();
    let mut receiver = TestReceiver::start(
        &host,
        &[
            "--upload-idle-timeout-secs",
            "120",
            "--max-concurrent-uploads",
            "2",
        ],
    );
    receiver.add_second_pusher();
    let addr = receiver.url().trim_start_matches("http://").to_owned();
    let held: Vec<TcpStream> = (0..2)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            let n = file_nar(format!("slow {i}").as_bytes());
            write!(
                s,
                "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
                nar_path(&n),
                n.len()
            )
            .unwrap();
            s.write_all(&n[..8]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let fast = file_nar(b"fast\n");
    let (code, body) = send(
        ureq::request("PUT", &format!("{}{}", receiver.url(), nar_path(&fast)))
            .timeout(Duration::from_secs(60))
            .set("Authorization", &basic(OTHER, OTHER_TOKEN)),
        &fast,
    );
    assert_eq!(code, 200, "{body}");
    drop(held);
}

/// Flags and files that used to panic or exit 1: usage errors exit 2
/// with a message naming the flag or file, never a panic.
#[test]
fn bad_flags_and_config_exit_2_without_a_panic() {
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sync.toml");
    fs::write(&config, "listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--upload-timeout-secs".into(), "9223372036854775808".into()],
            "upload-timeout-secs",
        ),
        (
            vec!["--upload-timeout-secs".into(), "0".into()],
            "upload-timeout-secs",
        ),
        (
            vec!["--max-concurrent-uploads".into(), "100000000".into()],
            "max-concurrent-uploads",
        ),
        (
            vec!["--max-nar-size-mib".into(), "0".into()],
            "max-nar-size-mib",
        ),
        // Plain symlinks there would root nothing: the host's GC would
        // take every pushed path.
        (
            vec![
                "--gc-root-dir".into(),
                dir.path().join("roots").to_string_lossy().into_owned(),
            ],
            "outside the store's GC-root directory",
        ),
    ];
    let run = |tokens: &std::path::Path, args: &[String]| {
        Command::new(binary("larder-sync"))
            .arg("--store-root")
            .arg(host.root())
            .arg("receive")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--staging-dir")
            .arg(dir.path().join("staging"))
            .arg("--tokens")
            .arg(tokens)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    for (args, needle) in cases {
        let out = run(&receiver.tokens, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let out = Command::new(binary("larder-sync"))
        .arg("--config")
        .arg(&config)
        .args(["receive", "--tokens"])
        .arg(&receiver.tokens)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("listen") && stderr.contains(&*config.to_string_lossy()),
        "{stderr}"
    );
}
