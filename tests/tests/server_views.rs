//! Views of one store (`[[view]]` in the server's config), with the real
//! Nix 2.8: a private view substituted through netrc with `require-sigs`,
//! and nothing without the token; paths outside a view answered byte for
//! byte like absent ones on every route; roots followed without a restart;
//! two views with their own keys and priorities.

use larder_store::StorePath;
use larder_store::db::StoreDb;
use larder_tests::fixtures::three_path_closure;
use larder_tests::server::LarderServer;
use larder_tests::signer::{TestSigner, generate_key};
use larder_tests::views::{TOKEN_A, TOKEN_B, ViewFiles, copy_from, eventually};
use larder_tests::{TestStore, hash_part, run_stdout, shell_derivation};

fn closure_of(store: &TestStore, path: &str) -> Vec<String> {
    run_stdout(store.nix("nix-store").args(["-qR", path]))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn deriver_of(store: &TestStore, path: &str) -> String {
    run_stdout(store.nix("nix-store").args(["-q", "--deriver", path]))
        .trim()
        .to_owned()
}

#[test]
fn a_private_view_serves_its_closure_to_token_holders_only() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let secret = store
        .build_expr(&shell_derivation("secret", "echo secret > $out"))
        .remove(0);
    let signer = TestSigner::start(&store, &[]);
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[&top]);
    let tokens = files.tokens("team", TOKEN_A);
    let config = files.config(&format!(
        "[[view]]\nname = \"team\"\nprefix = \"team\"\ngc-root-dirs = [\"{}\"]\ntokens-file = \"{}\"\n",
        roots.display(),
        tokens.display()
    ));
    let socket = signer.socket.to_str().unwrap();
    let server = LarderServer::start(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "--signer-socket",
            socket,
        ],
    );
    let url = format!("{}/team", server.url());

    // Every route of the private view wants the token, even the cheap ones.
    for route in [
        "/nix-cache-info",
        "/",
        "/nix.conf",
        &format!("/{}.narinfo", hash_part(&top)),
    ] {
        let r = server.get(&format!("/team{route}"), &[]);
        assert_eq!(r.status, 401, "{route}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"larder team\""),
            "{route}"
        );
    }
    let bearer = format!("Bearer {TOKEN_A}");
    let r = server.get("/team/nix-cache-info", &[("Authorization", &bearer)]);
    assert_eq!(r.status, 200);
    // A shared cache must not keep what a token fetched (it would hand it
    // to anyone): every lifetime of a private view is `private`.
    assert_eq!(r.header("cache-control"), Some("private, max-age=60"));
    let narinfo = server.get(
        &format!("/team/{}.narinfo", hash_part(&top)),
        &[("Authorization", &bearer)],
    );
    assert_eq!(narinfo.header("cache-control"), Some("private, max-age=60"));
    let nar_url = narinfo
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("URL")
        .to_owned();
    let nar = server.get(&format!("/team/{nar_url}"), &[("Authorization", &bearer)]);
    assert_eq!(nar.status, 200);
    assert_eq!(
        nar.header("cache-control"),
        Some("private, max-age=31536000, immutable")
    );
    let wrong = server.get(
        "/team/nix-cache-info",
        &[("Authorization", "Bearer token-for-view-a-0123456789abcdeX")],
    );
    assert_eq!(wrong.status, 401);
    // /nix.conf names the netrc line with a placeholder, never the token.
    let conf = server
        .get("/team/nix.conf", &[("Authorization", &bearer)])
        .text();
    assert!(
        conf.contains(&format!("extra-substituters = {url}")),
        "{conf}"
    );
    assert!(conf.contains(&signer.public_key), "{conf}");
    assert!(conf.contains("machine 127.0.0.1 login"), "{conf}");
    assert!(!conf.contains(TOKEN_A), "{conf}");

    // With the token in its netrc, Nix 2.8 substitutes the closure, signed.
    let netrc = files.netrc(TOKEN_A);
    let ok = copy_from(&url, &top, &signer.public_key, Some(&netrc));
    assert!(
        ok.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ok.stderr),
        server.log()
    );
    // Without it, or for a path outside the view, Nix gets nothing.
    let denied = copy_from(&url, &top, &signer.public_key, None);
    assert!(!denied.status.success());
    let wrong_netrc = files.netrc(TOKEN_B);
    assert!(
        !copy_from(&url, &top, &signer.public_key, Some(&wrong_netrc))
            .status
            .success()
    );
    assert!(
        !copy_from(&url, &secret, &signer.public_key, Some(&netrc))
            .status
            .success()
    );

    // The drvs of the closure are not part of a rooted view by default.
    let drv = deriver_of(&store, &top);
    let r = server.get(
        &format!("/team/{}.narinfo", hash_part(&drv)),
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status, 404);

    let log = server.log();
    assert!(
        !log.contains(TOKEN_A) && !log.contains(TOKEN_B),
        "a token was logged"
    );
    let metrics = server.get("/metrics", &[]).text();
    assert!(
        metrics.contains("larder_view_requests_total{status=\"401\",view=\"team\"}"),
        "{metrics}"
    );
}

#[test]
fn paths_outside_a_view_are_answered_exactly_like_absent_ones() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let secret = store
        .build_expr(&shell_derivation(
            "secret",
            "mkdir $out; echo secret > $out/file",
        ))
        .remove(0);
    // A build log for the outside path's derivation, so only the view hides it.
    let secret_drv = deriver_of(&store, &secret);
    let drv_base = secret_drv.rsplit('/').next().unwrap().to_owned();
    let log_dir = store.location().log_dir().join(&drv_base[..2]);
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::write(log_dir.join(&drv_base[2..]), "secret build log\n").unwrap();

    let files = ViewFiles::new();
    let roots_file = files.path("roots");
    std::fs::write(&roots_file, format!("{top}\n")).unwrap();
    // Everything switched on, so that only the view's closure decides.
    let config = files.config(&format!(
        "[[view]]\nname = \"v\"\nroots-file = \"{}\"\ninclude-logs = true\nserve = true\ninclude-drvs = true\n",
        roots_file.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);

    let db = StoreDb::open(&store.location()).unwrap();
    let info = |p: &str| {
        let path = StorePath::from_absolute("/nix/store", p).unwrap();
        db.path_info_by_path_blocking(&path).unwrap().unwrap()
    };
    let routes = |path_hash: &str, nar_hash: &str, drv: &str| -> Vec<String> {
        vec![
            format!("/{path_hash}.narinfo"),
            format!("/{path_hash}.narinfo?json"),
            format!("/{path_hash}.ls"),
            format!("/nar/{nar_hash}.nar?hash={path_hash}"),
            format!("/nar/{nar_hash}.nar.zst?hash={path_hash}"),
            format!("/nar/{path_hash}-{nar_hash}.nar"),
            format!("/nar/{path_hash}-{nar_hash}.nar.zst"),
            format!("/nar/{path_hash}.nar"),
            format!("/nar/{path_hash}.nar.zst"),
            format!("/nar/{nar_hash}.nar"),
            format!("/log/{drv}"),
            format!("/serve/{path_hash}"),
            format!("/serve/{path_hash}/file"),
        ]
    };
    let outside = info(&secret);
    let outside_nar = outside.nar_hash.to_nix32();
    // A path hash that names nothing in the store.
    let absent_hash = "00000000000000000000000000000000";
    let absent_drv = format!("{absent_hash}-secret.drv");
    for (o, a) in routes(hash_part(&secret), &outside_nar, &drv_base)
        .iter()
        .zip(routes(absent_hash, &outside_nar, &absent_drv))
    {
        for method in ["GET", "HEAD"] {
            let get = |p: &str| {
                let r = server.request(method, p).call();
                let r = match r {
                    Ok(r) | Err(ureq::Error::Status(_, r)) => r,
                    Err(e) => panic!("{p}: {e}"),
                };
                let status = r.status();
                let mut headers: Vec<(String, String)> = r
                    .headers_names()
                    .into_iter()
                    .filter(|n| !n.eq_ignore_ascii_case("date"))
                    .map(|n| (n.to_ascii_lowercase(), r.header(&n).unwrap().to_owned()))
                    .collect();
                headers.sort();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut r.into_reader(), &mut body).unwrap();
                (status, headers, body)
            };
            let (out, abs) = (get(o), get(&a));
            assert_eq!(out.0, 404, "{method} {o}");
            assert_eq!(out, abs, "{method} {o} differs from {a}");
        }
    }
    // The same routes for a path of the view answer (control).
    let mid = closure_of(&store, &top)
        .into_iter()
        .find(|p| p.ends_with("-mid"))
        .unwrap();
    let inside = info(&mid);
    let inside_drv = deriver_of(&store, &mid);
    let inside_nar = inside.nar_hash.to_nix32();
    let bare_nar = format!("/nar/{inside_nar}.nar");
    for route in routes(
        hash_part(&mid),
        &inside_nar,
        inside_drv.rsplit('/').next().unwrap(),
    ) {
        let r = server.get(&route, &[]);
        // A bare NAR hash has no index; mid has `f`, not `file`. (Its
        // build log is Nix's own.)
        let absent = route == bare_nar || route.ends_with("/file");
        let expected = if absent { 404 } else { 200 };
        assert_eq!(r.status, expected, "{route}");
    }
}

#[test]
fn adding_and_removing_roots_changes_the_view_without_a_restart() {
    let store = TestStore::new();
    let a = store
        .build_expr(&shell_derivation("root-a", "echo a > $out"))
        .remove(0);
    let b = store
        .build_expr(&shell_derivation("root-b", "echo b > $out"))
        .remove(0);
    let files = ViewFiles::new();
    let roots = files.gc_roots("gcroots", &[&a]);
    let config = files.config(&format!(
        "[[view]]\nname = \"live\"\ngc-root-dirs = [\"{}\"]\n",
        roots.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let status = |p: &str| {
        server
            .get(&format!("/{}.narinfo", hash_part(p)), &[])
            .status
    };
    assert_eq!(status(&a), 200);
    assert_eq!(status(&b), 404);
    let pid = server.pid();

    std::os::unix::fs::symlink(&b, roots.join("added")).unwrap();
    eventually("b appears", || status(&b) == 200);
    std::fs::remove_file(roots.join("root-0")).unwrap();
    eventually("a disappears", || status(&a) == 404);
    assert_eq!(status(&b), 200);
    // A path registered later under an existing root's name: a new build
    // the root then points at.
    let c = store
        .build_expr(&shell_derivation("root-c", "echo c > $out"))
        .remove(0);
    std::fs::remove_file(roots.join("added")).unwrap();
    std::os::unix::fs::symlink(&c, roots.join("added")).unwrap();
    eventually("c replaces b", || status(&c) == 200 && status(&b) == 404);
    assert_eq!(server.pid(), pid);
    assert!(server.log().contains("view recomputed"), "{}", server.log());
}

#[test]
fn two_views_sign_with_their_own_keys_and_announce_their_priorities() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let keys = tempfile::tempdir().unwrap();
    let (second_key, second_public) = generate_key(keys.path(), "second-1");
    let signer = TestSigner::start(&store, &["--key-file", second_key.to_str().unwrap()]);
    let first_public = signer.public_key.clone();
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[&top]);
    let config = files.config(&format!(
        "priority = 30\n\
         [[view]]\nname = \"one\"\nprefix = \"one\"\ngc-root-dirs = [\"{r}\"]\nkeys = [\"larder-test-1\"]\npriority = 10\n\
         [[view]]\nname = \"two\"\nprefix = \"two\"\ngc-root-dirs = [\"{r}\"]\nkeys = [\"second-1\"]\npriority = 50\n",
        r = roots.display()
    ));
    let socket = signer.socket.to_str().unwrap();
    let server = LarderServer::start(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "--signer-socket",
            socket,
        ],
    );
    let info = server.get("/one/nix-cache-info", &[]).text();
    assert!(info.contains("Priority: 10\n"), "{info}");
    let info = server.get("/two/nix-cache-info", &[]).text();
    assert!(info.contains("Priority: 50\n"), "{info}");
    // Views with prefixes only: the root selects no view.
    assert_eq!(server.get("/nix-cache-info", &[]).status, 404);

    let narinfo = server
        .get(&format!("/one/{}.narinfo", hash_part(&top)), &[])
        .text();
    assert!(
        narinfo.contains("Sig: larder-test-1:") && !narinfo.contains("Sig: second-1:"),
        "{narinfo}"
    );
    let narinfo = server
        .get(&format!("/two/{}.narinfo", hash_part(&top)), &[])
        .text();
    assert!(
        narinfo.contains("Sig: second-1:") && !narinfo.contains("Sig: larder-test-1:"),
        "{narinfo}"
    );

    let one = format!("{}/one", server.url());
    let two = format!("{}/two", server.url());
    for (url, key) in [(&one, &first_public), (&two, &second_public)] {
        let out = copy_from(url, &top, key, None);
        assert!(
            out.status.success(),
            "{url}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
    }
    // Each view's key alone does not vouch for the other view.
    assert!(!copy_from(&one, &top, &second_public, None).status.success());
    assert!(!copy_from(&two, &top, &first_public, None).status.success());
    let landing = server.get("/two/", &[]).text();
    assert!(
        landing.contains(&second_public) && !landing.contains(&first_public),
        "{landing}"
    );
}

#[test]
fn a_profile_root_follows_its_generations() {
    let store = TestStore::new();
    let a = store
        .build_expr(&shell_derivation("gen-a", "echo a > $out"))
        .remove(0);
    let b = store
        .build_expr(&shell_derivation("gen-b", "echo b > $out"))
        .remove(0);
    let files = ViewFiles::new();
    let profile = files.path("profile");
    let set = |p: &str| {
        larder_tests::run(
            store
                .nix("nix-env")
                .arg("-p")
                .arg(&profile)
                .args(["--set", p]),
        );
    };
    set(&a);
    let config = files.config(&format!(
        "[[view]]\nname = \"profile\"\nroots = [\"{}\"]\n",
        profile.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let status = |p: &str| {
        server
            .get(&format!("/{}.narinfo", hash_part(p)), &[])
            .status
    };
    assert_eq!((status(&a), status(&b)), (200, 404));
    set(&b);
    eventually("the new generation is served", || {
        status(&b) == 200 && status(&a) == 404
    });
}
