//! "A narinfo 200 roots the path" under attack: `GET|HEAD /<hash>.narinfo`
//! of `larder-sync receive` against the real Nix 2.8. A GC running while
//! paths are asked for never leaves a 200 for a path it then deletes (nor
//! a root of an invalid path); garbage hashes root nothing and never
//! panic; concurrent asks of one path by one or two pushers all succeed
//! and leave one link each.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use larder_store::db::StoreDb;
use larder_tests::receive::{OTHER, OTHER_TOKEN, PUSHER, TOKEN, TestReceiver};
use larder_tests::{TestStore, hash_part, narinfo_url, run};

/// `n` small unrooted paths added to `store` (files named `tag-i`).
fn add_paths(store: &TestStore, tag: &str, n: usize) -> Vec<String> {
    let src = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..n)
        .map(|i| {
            let f = src.path().join(format!("{tag}-{i}"));
            fs::write(&f, format!("{tag} {i}\n")).unwrap();
            f
        })
        .collect();
    store.add(files)
}

fn valid(db: &StoreDb, store: &TestStore, path: &str) -> bool {
    let p = store.location().parse_path(path).unwrap();
    db.query_valid_blocking(&p).unwrap()
}

/// Every link under the receiver's GC-root dir, with its target.
fn links(receiver: &TestReceiver) -> Vec<(String, String)> {
    let gc = receiver.pusher_roots().parent().unwrap().to_owned();
    let mut out = Vec::new();
    for dir in fs::read_dir(&gc).into_iter().flatten().flatten() {
        for e in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let target = fs::read_link(e.path()).unwrap_or_default();
            out.push((
                format!(
                    "{}/{}",
                    dir.file_name().to_string_lossy(),
                    e.file_name().to_string_lossy()
                ),
                target.to_string_lossy().into_owned(),
            ));
        }
    }
    out
}

fn status(receiver: &TestReceiver, method: &str, path: &str, auth: &str) -> u16 {
    match receiver
        .request(method, path)
        .set("Authorization", auth)
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// Nix's GC reads the permanent roots once, when it starts: a link made
/// while it runs protects nothing. Before the receiver took a temporary
/// root through nix-daemon between linking and re-checking, 39 of 60
/// narinfo 200s answered during a `nix-store --gc` were for paths that GC
/// then deleted (dangling roots; the pusher uploaded nothing).
#[test]
fn a_gc_while_paths_are_asked_for_never_deletes_a_path_answered_200() {
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let db = StoreDb::open(&host.location()).unwrap();
    let (mut answered, mut absent) = (0, 0);
    for round in 0..4 {
        let paths = add_paths(&host, &format!("r{round}"), 150);
        let mut gc = host.nix("nix-store").arg("--gc").spawn().unwrap();
        let codes: Vec<(String, u16)> = std::thread::scope(|s| {
            let workers: Vec<_> = paths
                .chunks(paths.len().div_ceil(4))
                .map(|chunk| {
                    let receiver = &receiver;
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|p| {
                                let auth = format!("Bearer {TOKEN}");
                                (p.clone(), status(receiver, "GET", &narinfo_url(p), &auth))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert!(gc.wait().unwrap().success());
        for (p, code) in codes {
            match code {
                200 => {
                    answered += 1;
                    assert!(
                        valid(&db, &host, &p),
                        "round {round}: 200 for {p}, then GC'd"
                    );
                    assert!(host.real_path(&p).exists(), "{p}");
                }
                404 => absent += 1,
                c => panic!("{p}: {c}\n{}", receiver.log()),
            }
        }
        // No root is left on a path that is not valid.
        for (link, target) in links(&receiver) {
            assert!(valid(&db, &host, &target), "{link} -> {target} dangles");
        }
        fs::remove_dir_all(receiver.pusher_roots()).unwrap();
    }
    eprintln!("{answered} answered 200 (kept), {absent} 404 (collected first)");
}

/// Hash parts that are not a valid path's root nothing and never panic:
/// wrong length, uppercase, letters outside nix32, dot-dot and encoded
/// slashes. A `.drv` is a valid path and is rooted (as a PUT of it
/// would be); a registered path whose files are gone is rooted as the DB
/// says it is valid (Nix would not re-import it either).
#[test]
fn garbage_hashes_root_nothing() {
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let kept = add_paths(&host, "kept", 1).remove(0);
    let hash = hash_part(&kept).to_owned();
    let auth = format!("Bearer {TOKEN}");
    let bad = [
        hash[..31].to_owned(),
        format!("{hash}0"),
        hash.to_uppercase(),
        format!("{}e", &hash[..31]),
        format!("{}u", &hash[..31]),
        "..".into(),
        "../../../../etc/passwd".into(),
        format!("..%2f{hash}"),
        format!("{hash}%2f.."),
        format!("%2e%2e%2f{hash}"),
        format!("x/{hash}"),
        format!("{hash}-name"),
        format!("{}%00", &hash[..31]),
        String::new(),
        "0".repeat(32),
        "é".repeat(16),
    ];
    let mut tried = 0;
    for h in &bad {
        for method in ["GET", "HEAD"] {
            let code = status(&receiver, method, &format!("/{h}.narinfo"), &auth);
            assert!((400..500).contains(&code), "{method} {h:?}: {code}");
            tried += 1;
        }
    }
    assert!(links(&receiver).is_empty(), "{:?}", links(&receiver));
    receiver.request("GET", "/nix-cache-info").call().unwrap();
    eprintln!("{tried} garbage requests: 4xx, no root");

    // A .drv (valid, so rooted like any other path).
    let drv = run(host
        .nix("nix-instantiate")
        .arg("--expr")
        .arg(larder_tests::shell_derivation(
            "rooting-drv",
            "echo x > $out",
        )));
    let drv = String::from_utf8(drv.stdout).unwrap().trim().to_owned();
    assert_eq!(status(&receiver, "GET", &narinfo_url(&drv), &auth), 200);
    // A registered path whose files were removed behind Nix's back.
    let gone = add_paths(&host, "gone", 1).remove(0);
    let real = host.real_path(&gone);
    fs::set_permissions(real.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(&real).unwrap();
    assert_eq!(status(&receiver, "HEAD", &narinfo_url(&gone), &auth), 200);
    let made: HashSet<_> = links(&receiver).into_iter().map(|(l, _)| l).collect();
    let want: HashSet<_> = [&drv, &gone]
        .iter()
        .map(|p| format!("receive-{PUSHER}/{}", p.trim_start_matches("/nix/store/")))
        .collect();
    assert_eq!(made, want);
}

/// Two pushers and one pusher many times over, asking for the same paths
/// at once: every answer is 200, each pusher has exactly one link per
/// path and no temporary is left behind.
#[test]
fn concurrent_asks_of_one_path_all_root_it() {
    let host = TestStore::new();
    let mut receiver = TestReceiver::start(&host, &[]);
    receiver.add_second_pusher();
    let paths = add_paths(&host, "shared", 5);
    std::thread::scope(|s| {
        for t in 0..6 {
            let (receiver, paths) = (&receiver, &paths);
            s.spawn(move || {
                let auth = match t % 2 {
                    0 => format!("Bearer {TOKEN}"),
                    _ => format!("Bearer {OTHER_TOKEN}"),
                };
                for _ in 0..20 {
                    for p in paths {
                        for method in ["GET", "HEAD"] {
                            assert_eq!(status(receiver, method, &narinfo_url(p), &auth), 200);
                        }
                    }
                }
            });
        }
    });
    let mut made: Vec<_> = links(&receiver).into_iter().map(|(l, _)| l).collect();
    made.sort();
    let mut want: Vec<_> = [PUSHER, OTHER]
        .iter()
        .flat_map(|who| {
            paths
                .iter()
                .map(move |p| format!("receive-{who}/{}", p.trim_start_matches("/nix/store/")))
        })
        .collect();
    want.sort();
    assert_eq!(made, want);
}

/// A root that cannot be made is a 500, logged, with nothing half-made:
/// the pusher's root dir unwritable, or on a full filesystem.
#[test]
fn an_unwritable_root_dir_is_a_500_and_leaves_nothing() {
    let host = TestStore::new();
    let receiver = TestReceiver::start(&host, &[]);
    let paths = add_paths(&host, "ro", 2);
    let auth = format!("Bearer {TOKEN}");
    let dir = receiver.pusher_roots();
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores permissions: only a non-root user sees EACCES.
    let euid = run(std::process::Command::new("id").arg("-u")).stdout;
    if String::from_utf8_lossy(&euid).trim() != "0" {
        assert_eq!(
            status(&receiver, "GET", &narinfo_url(&paths[0]), &auth),
            500
        );
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir(&dir).unwrap();
    // A file where the pusher's dir belongs.
    fs::write(&dir, "in the way").unwrap();
    assert_eq!(
        status(&receiver, "GET", &narinfo_url(&paths[1]), &auth),
        500
    );
    assert!(receiver.log().contains("GC root for"), "{}", receiver.log());
    fs::remove_file(&dir).unwrap();
    assert!(links(&receiver).is_empty());
    assert!(!Path::new(&dir).exists());
    assert_eq!(
        status(&receiver, "GET", &narinfo_url(&paths[1]), &auth),
        200
    );
    fs::remove_dir_all(&dir).unwrap();

    // A full filesystem: room (inodes) for the pusher's dir and one link.
    let gc = dir.parent().unwrap();
    let _full = larder_tests::mounts::Tmpfs::mount(gc, "64k,nr_inodes=3");
    assert_eq!(
        status(&receiver, "GET", &narinfo_url(&paths[0]), &auth),
        200
    );
    assert_eq!(
        status(&receiver, "GET", &narinfo_url(&paths[1]), &auth),
        500
    );
    // Renewing the existing root needs a temporary link too: 500, and the
    // root itself stays.
    assert_eq!(
        status(&receiver, "HEAD", &narinfo_url(&paths[0]), &auth),
        500
    );
    let made: Vec<_> = links(&receiver).into_iter().map(|(l, _)| l).collect();
    assert_eq!(
        made,
        [format!(
            "receive-{PUSHER}/{}",
            paths[0].trim_start_matches("/nix/store/")
        )]
    );
    assert!(
        receiver.log().contains("No space left on device"),
        "{}",
        receiver.log()
    );
}
