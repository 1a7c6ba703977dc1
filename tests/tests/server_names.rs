//! Names are bytes: file names and symlink targets that are not UTF-8 (and
//! names with quotes, backslashes and control characters) are exact in
//! every representation larder-server gives. The `.ls` listing is byte for
//! byte what the real Nix 2.8 writes (`nix nar ls --json -R`, and the `.ls`
//! of `write-nar-listing`), one entry per NAR entry; `/serve` links each
//! entry by its raw bytes, percent-encoded, and every link resolves.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use larder_tests::server::LarderServer;
use larder_tests::{TestStore, hash_part, run};

/// Regular files with awkward names and distinct contents.
const FILES: &[(&[u8], &[u8])] = &[
    (b"a\xfe", b"fe"),
    (b"a\xff", b"ff"),
    (b"q\"uote", b"quote"),
    (b"back\\slash", b"backslash"),
    (b"tab\tnl\ncr\r", b"controls"),
    (b"ctl\x01\x08\x0c\x1f", b"more controls"),
    (b"caf\xc3\xa9", b"utf-8"),
    (b"lat\xe9n", b"latin-1"),
    (b"sp ace%41?#&", b"url-special"),
];

fn make_tree(dir: &Path) {
    let os = |b: &[u8]| dir.join(std::ffi::OsStr::from_bytes(b));
    for (name, content) in FILES {
        std::fs::write(os(name), content).unwrap();
    }
    std::fs::set_permissions(os(b"a\xff"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(os(b"sub\xff")).unwrap();
    std::fs::write(os(b"sub\xff/x\xfe"), b"nested").unwrap();
    std::os::unix::fs::symlink(
        std::ffi::OsStr::from_bytes(b"target\xfe\xff\"\\"),
        os(b"link"),
    )
    .unwrap();
}

/// A store holding one path made by [`make_tree`], the temporary directory
/// it was added from (for scratch files), and the path.
fn store_with_names() -> (TestStore, tempfile::TempDir, String) {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("names");
    std::fs::create_dir(&tree).unwrap();
    make_tree(&tree);
    let path = store.add([&tree]).remove(0);
    (store, dir, path)
}

#[test]
fn listings_keep_every_name_exactly_as_nix_does() {
    let (store, dir, path) = store_with_names();
    let server = LarderServer::start(&store, &[]);
    let ls = server.get(&format!("/{}.ls", hash_part(&path)), &[]);
    assert_eq!(ls.status, 200);
    assert_eq!(ls.header("content-type"), Some("application/json"));

    // Nix's own listing of the same NAR.
    let nar = dir.path().join("names.nar");
    std::fs::write(
        &nar,
        run(store.nix("nix").args(["store", "dump-path"]).arg(&path)).stdout,
    )
    .unwrap();
    let nix_ls = run(store
        .nix("nix")
        .args(["nar", "ls", "--json", "-R"])
        .arg(&nar)
        .arg("/"))
    .stdout;
    let mut expected = b"{\"version\":1,\"root\":".to_vec();
    expected.extend_from_slice(nix_ls.strip_suffix(b"\n").unwrap_or(&nix_ls));
    expected.push(b'}');
    assert!(
        ls.body == expected,
        "ours:\n{}\nnix:\n{}",
        String::from_utf8_lossy(&ls.body),
        String::from_utf8_lossy(&expected)
    );

    // The `.ls` Nix uploads with write-nar-listing is the same file.
    let export = dir.path().join("export");
    run(store
        .nix("nix")
        .args(["copy", "--to"])
        .arg(format!(
            "file://{}?write-nar-listing=true&compression=none",
            export.display()
        ))
        .arg(&path));
    let uploaded = std::fs::read(export.join(format!("{}.ls", hash_part(&path)))).unwrap();
    assert!(
        ls.body == uploaded,
        "{}",
        String::from_utf8_lossy(&uploaded)
    );

    // Every name is there once, raw: `a\xfe` and `a\xff` did not merge.
    for (name, _) in FILES {
        let mut quoted = b"\"".to_vec();
        larder_store::nar::write_json_string(name, &mut quoted);
        let needle = &quoted[1..];
        let count = ls
            .body
            .windows(needle.len())
            .filter(|w| w == &needle)
            .count();
        assert_eq!(count, 1, "{}", String::from_utf8_lossy(name));
    }
}

/// The hrefs of a `/serve` directory listing.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

#[test]
fn serve_links_resolve_to_each_raw_name() {
    let (store, _dir, path) = store_with_names();
    let server = LarderServer::start(&store, &[]);
    let root = server.get(&format!("/serve/{}/", hash_part(&path)), &[]);
    assert_eq!(root.status, 200);
    let links = hrefs(&root.text());
    // Every entry once: the files, `sub\xff` and `link`.
    assert_eq!(links.len(), FILES.len() + 2, "{links:?}");
    let mut seen = Vec::new();
    for link in &links {
        assert!(link.is_ascii() && !link.contains(' '), "{link}");
        let reply = server.get(link, &[]);
        match reply.status {
            200 => seen.push(reply.body),
            // `link` points at nothing inside the path.
            404 => assert!(link.ends_with("/link"), "{link}"),
            other => panic!("{link}: {other}"),
        }
    }
    for (name, content) in FILES {
        assert!(
            seen.iter().any(|b| b == content),
            "{} not reachable",
            String::from_utf8_lossy(name)
        );
    }
    // One level down, through a non-UTF-8 directory name.
    let sub = links.iter().find(|l| l.ends_with("/sub%FF")).unwrap();
    let inner = hrefs(&server.get(sub, &[]).text());
    assert_eq!(inner.len(), 1, "{inner:?}");
    assert_eq!(server.get(&inner[0], &[]).body, b"nested");
}
