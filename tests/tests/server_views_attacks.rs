//! Attempts to escape a view, all refused: references and symlinks
//! pointing outside it, encoded separators and dot segments in the view
//! prefix, Host header tricks, a token of one view on another; and
//! configurations `--check-config` must refuse.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use larder_tests::process::binary;
use larder_tests::server::LarderServer;
use larder_tests::views::{TOKEN_A, TOKEN_B, ViewFiles, raw_http, raw_status};
use larder_tests::{TestStore, hash_part, shell_derivation};

fn build(store: &TestStore, name: &str, script: &str) -> String {
    store.build_expr(&shell_derivation(name, script)).remove(0)
}

#[test]
fn symlinks_and_unreferenced_store_paths_do_not_leak_out_of_a_view() {
    let store = TestStore::new();
    let secret = build(&store, "secret", "mkdir $out; echo secret > $out/data");
    let secret_base = secret.rsplit('/').next().unwrap();
    // A store path that points at the secret by name only (not an input,
    // so not a reference), absolutely and by climbing out relatively.
    let sneaky = build(
        &store,
        "sneaky",
        &format!(
            "mkdir $out; echo ok > $out/ok; ln -s {secret}/data $out/abs; ln -s ../{secret_base}/data $out/rel"
        ),
    );
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[&sneaky, "/etc/passwd", "/nix/var/nix/profiles"]);
    std::os::unix::fs::symlink("/etc", roots.join("dir-outside")).unwrap();
    let config = files.config(&format!(
        "[[view]]\nname = \"v\"\ngc-root-dirs = [\"{}\"]\nserve = true\n",
        roots.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let h = hash_part(&sneaky);
    assert_eq!(server.get(&format!("/serve/{h}/ok"), &[]).status, 200);
    for path in [
        format!("/serve/{h}/abs"),
        format!("/serve/{h}/rel"),
        format!("/serve/{h}/%2e%2e/{secret_base}/data"),
        format!("/serve/{h}/..%2f{secret_base}%2fdata"),
        format!("/{}.narinfo", hash_part(&secret)),
        format!("/serve/{}/data", hash_part(&secret)),
    ] {
        let r = server.get(&path, &[]);
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
        assert!(!r.text().contains("secret"), "{path}");
    }
    // Nothing else got in through the odd roots.
    let metrics = server.get("/metrics", &[]).text();
    assert!(
        metrics.contains("larder_view_paths{view=\"v\"} 1"),
        "{metrics}"
    );
}

#[test]
fn encoded_separators_and_dot_segments_do_not_cross_view_prefixes() {
    let store = TestStore::new();
    let public = build(&store, "public", "echo public > $out");
    let private = build(&store, "private", "echo private > $out");
    let files = ViewFiles::new();
    let pub_roots = files.gc_roots("pub", &[&public]);
    let priv_roots = files.gc_roots("priv", &[&private]);
    let tokens = files.tokens("priv", TOKEN_B);
    let config = files.config(&format!(
        "[[view]]\nname = \"pub\"\nprefix = \"pub\"\ngc-root-dirs = [\"{}\"]\n\
         [[view]]\nname = \"priv\"\nprefix = \"priv\"\ngc-root-dirs = [\"{}\"]\ntokens-file = \"{}\"\n",
        pub_roots.display(),
        priv_roots.display(),
        tokens.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let p = hash_part(&private);
    assert_eq!(
        server
            .get(&format!("/pub/{}.narinfo", hash_part(&public)), &[])
            .status,
        200
    );
    for path in [
        format!("/pub/{p}.narinfo"),
        format!("/pub/../priv/{p}.narinfo"),
        format!("/pub/%2e%2e/priv/{p}.narinfo"),
        format!("/pub%2f..%2fpriv/{p}.narinfo"),
        format!("/pub%2Fpriv/{p}.narinfo"),
        format!("/pub/%2fpriv/{p}.narinfo"),
        format!("/pub//priv/{p}.narinfo"),
        format!("/%70ub/{p}.narinfo"),
        format!("/%70riv/{p}.narinfo"),
        format!("/PRIV/{p}.narinfo"),
        format!("/priv%00/{p}.narinfo"),
        format!("/pub/priv/{p}.narinfo"),
        format!("//priv/{p}.narinfo"),
        "/pub/health".to_owned(),
    ] {
        let response = raw_http(
            server.url(),
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        );
        let status = raw_status(&response);
        assert!(
            matches!(status, 400 | 401 | 404),
            "{path}: {status}\n{response}"
        );
        assert!(!response.contains("StorePath"), "{path}: {response}");
    }
}

#[test]
fn host_header_tricks_select_no_other_view() {
    let store = TestStore::new();
    let public = build(&store, "public", "echo public > $out");
    let private = build(&store, "private", "echo private > $out");
    let files = ViewFiles::new();
    let pub_roots = files.gc_roots("pub", &[&public]);
    let priv_roots = files.gc_roots("priv", &[&private]);
    let tokens = files.tokens("priv", TOKEN_B);
    let config = files.config(&format!(
        "[[view]]\nname = \"pub\"\nhost = \"pub.example\"\ngc-root-dirs = [\"{}\"]\n\
         [[view]]\nname = \"priv\"\nhost = \"priv.example\"\ngc-root-dirs = [\"{}\"]\ntokens-file = \"{}\"\n",
        pub_roots.display(),
        priv_roots.display(),
        tokens.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let p = hash_part(&private);
    let ask = |request: String| raw_status(&raw_http(server.url(), &request));
    let get = |target: &str, headers: &str| {
        ask(format!(
            "GET {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"
        ))
    };
    let narinfo = format!("/{p}.narinfo");
    let bearer = format!("Authorization: Bearer {TOKEN_B}\r\n");
    // Controls: each host gets its own view.
    assert_eq!(
        get(&narinfo, &format!("Host: priv.example\r\n{bearer}")),
        200
    );
    assert_eq!(get(&narinfo, "Host: priv.example\r\n"), 401);
    assert_eq!(get(&narinfo, "Host: PRIV.example:5000\r\n"), 401);
    assert_eq!(get(&narinfo, "Host: priv.example.\r\n"), 401);
    assert_eq!(
        get(
            &format!("/{}.narinfo", hash_part(&public)),
            "Host: pub.example\r\n"
        ),
        200
    );
    // Tricks.
    for (target, headers) in [
        (narinfo.clone(), "Host: pub.example\r\n".to_owned()),
        (narinfo.clone(), "Host: pub.example\r\nX-Forwarded-Host: priv.example\r\nForwarded: host=priv.example\r\n".to_owned()),
        (narinfo.clone(), "Host: pub.example\r\nHost: priv.example\r\n".to_owned()),
        (narinfo.clone(), format!("Host: pub.example\r\nHost: priv.example\r\n{bearer}")),
        (format!("http://priv.example{narinfo}"), "Host: pub.example\r\n".to_owned()),
        (format!("http://pub.example{narinfo}"), format!("Host: priv.example\r\n{bearer}")),
        (narinfo.clone(), "Host: other.example\r\n".to_owned()),
        (narinfo.clone(), String::new()),
        (narinfo.clone(), "Host: priv.example@pub.example\r\n".to_owned()),
    ] {
        let status = get(&target, &headers);
        assert!(
            matches!(status, 400 | 401 | 404),
            "{target} with {headers:?}: {status}"
        );
    }
}

#[test]
fn a_token_opens_its_own_view_only() {
    let store = TestStore::new();
    let path = build(&store, "shared", "echo shared > $out");
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[&path]);
    let a = files.tokens("a", TOKEN_A);
    let b = files.tokens("b", TOKEN_B);
    let config = files.config(&format!(
        "[[view]]\nname = \"a\"\nprefix = \"a\"\ngc-root-dirs = [\"{r}\"]\ntokens-file = \"{}\"\n\
         [[view]]\nname = \"b\"\nprefix = \"b\"\ngc-root-dirs = [\"{r}\"]\ntokens-file = \"{}\"\n",
        a.display(),
        b.display(),
        r = roots.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let narinfo = format!("{}.narinfo", hash_part(&path));
    let basic = |t: &str| format!("Basic {}", larder_tests::receive::base64_basic("x", t));
    for (view, token, expected) in [
        ("a", TOKEN_A, 200),
        ("b", TOKEN_B, 200),
        ("a", TOKEN_B, 401),
        ("b", TOKEN_A, 401),
    ] {
        for auth in [basic(token), format!("Bearer {token}")] {
            let r = server.get(&format!("/{view}/{narinfo}"), &[("Authorization", &auth)]);
            assert_eq!(r.status, expected, "{view} with {auth}");
        }
    }
    assert!(!server.log().contains(TOKEN_A) && !server.log().contains(TOKEN_B));
}

#[test]
fn check_config_refuses_bad_views() {
    let store = TestStore::new();
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[]);
    let r = roots.display();
    let open_tokens = files.path("open.tokens");
    std::fs::write(&open_tokens, format!("x {TOKEN_A}\n")).unwrap();
    std::fs::set_permissions(&open_tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cases = [
        (
            format!("[[view]]\nname = \"a\"\ngc-root-dirs = [\"{r}\"]\nrots = 1\n"),
            "rots",
        ),
        (
            "[[view]]\nname = \"a\"\ngc-root-dirs = [\"/nonexistent/roots\"]\n".to_owned(),
            "/nonexistent/roots",
        ),
        (
            format!(
                "[[view]]\nname = \"a\"\nprefix = \"x\"\ngc-root-dirs = [\"{r}\"]\n[[view]]\nname = \"a\"\nprefix = \"y\"\ngc-root-dirs = [\"{r}\"]\n"
            ),
            "name",
        ),
        (
            format!(
                "[[view]]\nname = \"a\"\nprefix = \"x\"\ngc-root-dirs = [\"{r}\"]\n[[view]]\nname = \"b\"\nprefix = \"x\"\ngc-root-dirs = [\"{r}\"]\n"
            ),
            "prefix",
        ),
        (
            format!(
                "[[view]]\nname = \"a\"\ngc-root-dirs = [\"{r}\"]\ntokens-file = \"{}\"\n",
                open_tokens.display()
            ),
            "chmod 600",
        ),
        ("[[view]]\nname = \"a\"\n".to_owned(), "no roots"),
    ];
    for (text, needle) in cases {
        let config = files.config(&text);
        let out = Command::new(binary("larder-server"))
            .arg("--store-root")
            .arg(store.root())
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .env_remove("LARDER_SERVER_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert!(!stderr.contains(TOKEN_A), "{stderr}");
    }
    let good = files.config(&format!(
        "[[view]]\nname = \"a\"\ngc-root-dirs = [\"{r}\"]\n"
    ));
    let out = Command::new(binary("larder-server"))
        .arg("--store-root")
        .arg(store.root())
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_refuses_a_key_the_signer_does_not_hold() {
    let store = TestStore::new();
    let signer = larder_tests::signer::TestSigner::start(&store, &[]);
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[]);
    let check = |key: &str| {
        let config = files.config(&format!(
            "[[view]]\nname = \"a\"\ngc-root-dirs = [\"{}\"]\nkeys = [\"{key}\"]\n",
            roots.display()
        ));
        Command::new(binary("larder-server"))
            .arg("--store-root")
            .arg(store.root())
            .arg("--config")
            .arg(&config)
            .arg("--signer-socket")
            .arg(&signer.socket)
            .arg("--check-config")
            .env_remove("LARDER_SERVER_CONFIG")
            .output()
            .unwrap()
    };
    let out = check("nope-1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nope-1") && stderr.contains("larder-test-1"),
        "{stderr}"
    );
    let out = check("larder-test-1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
