//! `/serve` (files inside a store path) and `/log` (build logs) on the real
//! larder-server: content as on disk, and no way out of the store.

use std::process::Command;

use larder_tests::server::LarderServer;
use larder_tests::{TestStore, hash_part, run, run_stdout, shell_derivation};

/// GET with curl exactly as written (`--path-as-is`: no `..` folding by the
/// client); returns status and body.
fn curl_raw(url: &str) -> (u16, String) {
    let out = run(Command::new("curl")
        .args(["-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}"])
        .arg(url));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

#[test]
fn serve_gives_files_and_never_leaves_the_store_path() {
    let store = TestStore::new();
    let script = "mkdir -p $out/sub; echo hello > $out/greeting; echo inner > $out/sub/inner; \
                  ln -s sub/inner $out/rel; ln -s ../greeting $out/sub/back; \
                  ln -s /etc/passwd $out/abs; ln -s /etc $out/etc; \
                  ln -s ../../../../../../../etc/passwd $out/climb";
    let path = store
        .build_expr(&shell_derivation("files", script))
        .remove(0);
    let server = LarderServer::start(&store, &[]);
    let base = format!("/serve/{}", hash_part(&path));

    for (file, content) in [
        ("/greeting", "hello\n"),
        ("/rel", "inner\n"),
        ("/sub/back", "hello\n"),
        ("/sub/./inner", "inner\n"),
        ("/sub%2finner", "inner\n"),
    ] {
        let reply = server.get(&format!("{base}{file}"), &[]);
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, content),
            "{file}"
        );
    }
    let listing = server.get(&format!("{base}/sub"), &[]).text();
    assert!(
        listing.contains(">inner<") && listing.contains(">back<"),
        "{listing}"
    );

    let attacks = [
        "/abs",
        "/etc/passwd",
        "/etc",
        "/climb",
        "/../../../../etc/passwd",
        "/sub/../../greeting",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2f%2E%2E%2fetc%2fpasswd",
        "/sub/%2e%2e/%2e%2e/x",
        "/missing",
    ];
    for attack in attacks {
        let (status, body) = curl_raw(&format!("{}{base}{attack}", server.url()));
        assert!(status == 400 || status == 404, "{attack}: {status} {body}");
        assert!(
            !body.contains("root:") && !body.contains('/'),
            "{attack}: {body}"
        );
    }
}

#[test]
fn logs_plain_and_bzip2_never_outside_the_log_dir() {
    let store = TestStore::new();
    let expr = shell_derivation("logged", "echo this-is-the-build-log; echo done > $out");
    let drv = run_stdout(store.nix("nix-instantiate").args(["-E", &expr]));
    let drv = drv.trim();
    store.build_expr(&expr);
    let drv_name = &drv["/nix/store/".len()..];
    let nix_log = run_stdout(store.nix("nix-store").args(["--read-log", drv]));
    assert!(nix_log.contains("this-is-the-build-log"));

    // Nix 2.8 writes the log bzip2-compressed; a plain one we write by hand.
    let dir = store.location().log_dir().join(&drv_name[..2]);
    assert!(dir.join(format!("{}.bz2", &drv_name[2..])).is_file());
    let plain_drv = "0123456789abcdfghijklmnpqrsvwxyz-plain.drv";
    let plain_dir = store.location().log_dir().join(&plain_drv[..2]);
    std::fs::create_dir_all(&plain_dir).unwrap();
    std::fs::write(plain_dir.join(&plain_drv[2..]), "plain log\n").unwrap();
    let server = LarderServer::start(&store, &[]);

    let log = server.get(&format!("/log/{drv_name}"), &[]);
    assert_eq!(log.status, 200);
    assert_eq!(log.header("content-encoding"), None);
    assert_eq!(log.text(), nix_log);
    let raw = server.get(&format!("/log/{drv_name}"), &[("Accept-Encoding", "bzip2")]);
    assert_eq!(raw.header("content-encoding"), Some("bzip2"));
    assert!(raw.body.starts_with(b"BZh"));
    assert_eq!(
        server.get(&format!("/log/{plain_drv}"), &[]).text(),
        "plain log\n"
    );

    for attack in [
        "/log/..%2f..%2f..%2fetc%2fpasswd",
        "/log/../../etc/passwd",
        "/log/%2e%2e",
        "/log/00000000000000000000000000000000-absent.drv",
    ] {
        let (status, body) = curl_raw(&format!("{}{attack}", server.url()));
        assert_eq!(status, 404, "{attack}: {body}");
        assert!(
            !body.contains("root:") && !body.contains('/'),
            "{attack}: {body}"
        );
    }
}
