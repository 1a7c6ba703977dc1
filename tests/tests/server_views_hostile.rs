//! A hostile pass over views and their HTTP cache headers (issue 12): a
//! path outside a view answered byte for byte like an absent one under
//! every route, method and conditional or range header; credentials sent
//! twice, oddly or hugely; Host spellings; private views' cache lifetimes;
//! roots that loop or hold garbage.

use std::process::Command;

use larder_tests::process::binary;
use larder_tests::server::LarderServer;
use larder_tests::views::{TOKEN_A, TOKEN_B, ViewFiles, eventually, raw_http, raw_status};
use larder_tests::{TestStore, hash_part, shell_derivation};

/// A hash part no path of the test store has.
const ABSENT: &str = "00000000000000000000000000000000";

fn build(store: &TestStore, name: &str, script: &str) -> String {
    store.build_expr(&shell_derivation(name, script)).remove(0)
}

/// A raw response without its `Date` line, which is all two answers a
/// second apart may differ in, and with its header lines sorted: actix
/// writes headers in its hash map's order, which differs from response
/// to response (unrelated to what was asked).
fn ask(server: &LarderServer, method: &str, target: &str, headers: &str) -> String {
    let response = raw_http(
        server.url(),
        &format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n"
        ),
    );
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("").to_owned();
    let mut headers: Vec<&str> = lines
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .collect();
    headers.sort_unstable();
    format!("{status}\r\n{}\r\n\r\n{body}", headers.join("\r\n"))
}

/// A narinfo field of `path` as the everything view `/all` serves it.
fn field(server: &LarderServer, path: &str, name: &str) -> String {
    let text = server
        .get(&format!("/all/{}.narinfo", hash_part(path)), &[])
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_owned()
}

struct Setup {
    _store: TestStore,
    _files: ViewFiles,
    server: LarderServer,
    inside: String,
    outside: String,
}

/// Views `pub` (public), `priv` (token A) and `b` (token B) by prefix,
/// `hpriv` (token A) by Host, each of the closure of `inside`, which links
/// to `outside` without referencing it; `all` serves everything.
fn setup() -> Setup {
    let store = TestStore::new();
    let outside = build(&store, "outside", "mkdir $out; echo secret > $out/data");
    let base = outside.rsplit('/').next().unwrap().to_owned();
    let inside = build(
        &store,
        "inside",
        &format!(
            "mkdir $out; echo ok > $out/ok; ln -s {outside}/data $out/abs; ln -s ../{base} $out/up"
        ),
    );
    let files = ViewFiles::new();
    let roots = files.gc_roots("roots", &[&inside]);
    let (a, b) = (files.tokens("a", TOKEN_A), files.tokens("b", TOKEN_B));
    let view = |name: &str, select: &str, tokens: Option<&std::path::Path>| {
        format!(
            "[[view]]\nname = \"{name}\"\n{select}\ngc-root-dirs = [\"{}\"]\nserve = true\ninclude-logs = true\n{}",
            roots.display(),
            tokens.map_or(String::new(), |t| format!(
                "tokens-file = \"{}\"\n",
                t.display()
            ))
        )
    };
    let config = files.config(&format!(
        "{}{}{}{}[[view]]\nname = \"all\"\nprefix = \"all\"\neverything = true\n",
        view("pub", "prefix = \"pub\"", None),
        view("priv", "prefix = \"priv\"", Some(&a)),
        view("b", "prefix = \"b\"", Some(&b)),
        view("hpriv", "host = \"priv.example\"", Some(&a)),
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    Setup {
        _store: store,
        _files: files,
        server,
        inside,
        outside,
    }
}

#[test]
fn outside_paths_answer_like_absent_ones_under_every_route_and_header() {
    let s = setup();
    let (i, o) = (hash_part(&s.inside), hash_part(&s.outside));
    let inh = field(&s.server, &s.inside, "NarHash").replace("sha256:", "");
    let outh = field(&s.server, &s.outside, "NarHash").replace("sha256:", "");
    let out_drv = field(&s.server, &s.outside, "Deriver");
    // Each pair: (outside form, absent form).
    let pairs: Vec<(String, String)> = vec![
        (format!("/{o}.narinfo"), format!("/{ABSENT}.narinfo")),
        (
            format!("/{o}.narinfo?json"),
            format!("/{ABSENT}.narinfo?json"),
        ),
        (format!("/{o}.ls"), format!("/{ABSENT}.ls")),
        (
            format!("/nar/{outh}.nar?hash={o}"),
            format!("/nar/{outh}.nar?hash={ABSENT}"),
        ),
        (
            format!("/nar/{outh}.nar.zst?hash={o}"),
            format!("/nar/{outh}.nar.zst?hash={ABSENT}"),
        ),
        (
            format!("/nar/{o}-{outh}.nar"),
            format!("/nar/{ABSENT}-{outh}.nar"),
        ),
        (
            format!("/nar/{o}-{outh}.nar.zst"),
            format!("/nar/{ABSENT}-{outh}.nar.zst"),
        ),
        (format!("/nar/{o}.nar"), format!("/nar/{ABSENT}.nar")),
        (
            format!("/nar/{o}.nar.zst"),
            format!("/nar/{ABSENT}.nar.zst"),
        ),
        // An inside path named with an outside NAR hash, and the reverse.
        (
            format!("/nar/{outh}.nar?hash={i}"),
            format!("/nar/{outh}.nar?hash={ABSENT}"),
        ),
        (
            format!("/nar/{inh}.nar?hash={o}"),
            format!("/nar/{inh}.nar?hash={ABSENT}"),
        ),
        (
            format!("/nar/{i}-{outh}.nar"),
            format!("/nar/{ABSENT}-{outh}.nar"),
        ),
        (
            format!("/nar/{o}-{inh}.nar?hash={i}"),
            format!("/nar/{ABSENT}-{inh}.nar?hash={i}"),
        ),
        (
            format!("/nar/{inh}.nar?hash={o}&hash={i}"),
            format!("/nar/{inh}.nar?hash={ABSENT}&hash={i}"),
        ),
        (
            format!("/log/{out_drv}"),
            format!("/log/{ABSENT}-outside.drv"),
        ),
        (format!("/serve/{o}/data"), format!("/serve/{ABSENT}/data")),
        (format!("/serve/{o}"), format!("/serve/{ABSENT}")),
    ];
    let conditions = [
        String::new(),
        "If-None-Match: *\r\n".to_owned(),
        format!("If-None-Match: \"{outh}\", W/\"{outh}-zstd\"\r\n"),
        format!("Range: bytes=0-3\r\nIf-Range: \"{outh}\"\r\n"),
        "Range: bytes=0-3\r\n".to_owned(),
        "Range: bytes=99999999-\r\n".to_owned(),
        "Accept-Encoding: zstd\r\n".to_owned(),
        "Accept-Encoding: zstd\r\nIf-None-Match: *\r\n".to_owned(),
    ];
    let token = format!("Authorization: Bearer {TOKEN_A}\r\n");
    let mut asked = 0;
    for (prefix, auth) in [("/pub", ""), ("/priv", token.as_str())] {
        for (outside, absent) in &pairs {
            for cond in &conditions {
                for method in ["GET", "HEAD"] {
                    let headers = format!("{auth}{cond}");
                    let a = ask(&s.server, method, &format!("{prefix}{outside}"), &headers);
                    let b = ask(&s.server, method, &format!("{prefix}{absent}"), &headers);
                    assert_eq!(
                        raw_status(&a),
                        404,
                        "{method} {prefix}{outside} {cond:?}:\n{a}"
                    );
                    assert_eq!(a, b, "{method} {prefix}{outside} {cond:?}");
                    asked += 2;
                }
            }
        }
    }
    // Controls: the inside path is there under both views.
    for (prefix, auth) in [("/pub", ""), ("/priv", token.as_str())] {
        let r = ask(
            &s.server,
            "GET",
            &format!("{prefix}/nar/{inh}.nar?hash={i}"),
            auth,
        );
        assert_eq!(raw_status(&r), 200, "{r}");
        let r = ask(
            &s.server,
            "GET",
            &format!("{prefix}/nar/{inh}.nar?hash={i}"),
            &format!("{auth}If-None-Match: *\r\n"),
        );
        assert_eq!(raw_status(&r), 304, "{r}");
    }
    eprintln!("{asked} outside/absent requests compared");
}

#[test]
fn symlinks_of_inside_paths_show_but_never_open_outside_paths() {
    let s = setup();
    let i = hash_part(&s.inside);
    let listing = s.server.get(&format!("/pub/{i}.ls"), &[]);
    assert_eq!(listing.status, 200);
    // The listing holds the link's target text (what the NAR holds), nothing of it.
    assert!(!listing.text().contains("secret"), "{}", listing.text());
    for tail in [
        "abs",
        "up",
        "up/data",
        "abs/",
        "%61bs",
        "up%2fdata",
        "./up/./data",
    ] {
        let r = s.server.get(&format!("/pub/serve/{i}/{tail}"), &[]);
        assert!(matches!(r.status, 400 | 404), "{tail}: {}", r.status);
        assert!(!r.text().contains("secret"), "{tail}");
    }
    assert_eq!(
        s.server.get(&format!("/pub/serve/{i}/ok"), &[]).text(),
        "ok\n"
    );
}

#[test]
fn credentials_sent_twice_oddly_or_hugely_open_nothing() {
    let s = setup();
    let narinfo = format!("/priv/{}.narinfo", hash_part(&s.inside));
    let basic = |user: &str, pass: &str| {
        format!(
            "Authorization: Basic {}\r\n",
            larder_tests::receive::base64_basic(user, pass)
        )
    };
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let status = |target: &str, headers: &str| raw_status(&ask(&s.server, "GET", target, headers));
    assert_eq!(
        status(&narinfo, &basic("", TOKEN_A)),
        200,
        "an empty user is fine"
    );
    let colon = format!("{TOKEN_A}:{TOKEN_A}");
    let huge = "x".repeat(60_000);
    for headers in [
        basic("", TOKEN_B),
        basic(TOKEN_A, ""),
        basic(&format!("u:{TOKEN_A}"), "x"),
        basic("u", &colon),
        bearer(&format!("{TOKEN_A} ")).replace(' ', "\t"),
        bearer(&huge),
        format!("Authorization: Basic {huge}\r\n"),
        format!("{}{}", bearer(TOKEN_B), bearer(TOKEN_A)),
        format!("{}{}", bearer(TOKEN_A), bearer(TOKEN_B)),
        format!("{}Authorization: garbage\r\n", bearer(TOKEN_A)),
        format!("Authorization: Bearer {TOKEN_A}, Bearer {TOKEN_B}\r\n"),
        "Authorization:\r\n".to_owned(),
        "Authorization: Bearer\r\n".to_owned(),
    ] {
        let st = status(&narinfo, &headers);
        assert!(matches!(st, 400 | 401 | 431), "{:.80}: {st}", headers);
    }
    let log = s.server.log();
    assert!(!log.contains(TOKEN_A) && !log.contains(TOKEN_B) && !log.contains(&huge[..100]));
}

#[test]
fn private_views_refuse_every_route_and_are_never_publicly_cacheable() {
    let s = setup();
    let i = hash_part(&s.inside);
    let inh = field(&s.server, &s.inside, "NarHash").replace("sha256:", "");
    let routes = [
        "/".to_owned(),
        "/nix-cache-info".to_owned(),
        "/nix.conf".to_owned(),
        "/health".to_owned(),
        "/version".to_owned(),
        "/metrics".to_owned(),
        format!("/{i}.narinfo"),
        format!("/{i}.ls"),
        format!("/nar/{inh}.nar?hash={i}"),
        format!("/nar/{i}.nar.zst"),
        format!("/serve/{i}/ok"),
        format!("/log/{ABSENT}-x.drv"),
        "/nowhere".to_owned(),
    ];
    let token = format!("Authorization: Bearer {TOKEN_A}\r\n");
    for route in &routes {
        for (target, host) in [
            (format!("/priv{route}"), "127.0.0.1"),
            (format!("/b{route}"), "127.0.0.1"),
            (route.clone(), "priv.example"),
            (route.clone(), "PRIV.Example.:8080"),
        ] {
            let server_path = ["/health", "/version", "/metrics"].contains(&route.as_str());
            if server_path && host != "127.0.0.1" {
                continue; // the server's own endpoints, outside every view
            }
            let raw = |headers: &str| {
                raw_http(
                    s.server.url(),
                    &format!(
                        "GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
                    ),
                )
            };
            let r = raw("");
            assert_eq!(raw_status(&r), 401, "{target} on {host}:\n{r}");
            assert!(
                r.to_ascii_lowercase().contains("www-authenticate: basic"),
                "{r}"
            );
            if target.starts_with("/b") {
                assert_eq!(raw_status(&raw(&token)), 401, "token A on view b: {target}");
                continue;
            }
            let r = raw(&token);
            let lower = r.to_ascii_lowercase();
            assert!(
                !lower.contains("public,") && !lower.contains(": public"),
                "{target}:\n{r}"
            );
            if raw_status(&r) == 200 {
                assert!(
                    lower.contains("cache-control: private")
                        || lower.contains("cache-control: no-store"),
                    "{target}:\n{r}"
                );
            }
            for cond in ["If-None-Match: *\r\n", "Range: bytes=0-3\r\n"] {
                let r = raw(&format!("{token}{cond}"));
                let lower = r.to_ascii_lowercase();
                assert!(raw_status(&r) < 500, "{target} {cond}:\n{r}");
                assert!(!lower.contains(": public"), "{target} {cond}:\n{r}");
                if matches!(raw_status(&r), 200 | 206 | 304) {
                    assert!(
                        lower.contains("cache-control: private")
                            || lower.contains("cache-control: no-store"),
                        "{target} {cond}:\n{r}"
                    );
                }
            }
        }
    }
    // Host spellings that name no view fall to no view: absent, not private data.
    for host in [
        "[::1]:5000",
        "priv.example..",
        "xpriv.example",
        "priv.example.evil",
    ] {
        let r = raw_http(
            s.server.url(),
            &format!("GET /{i}.narinfo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        );
        assert!(matches!(raw_status(&r), 400 | 404), "{host}:\n{r}");
    }
}

#[test]
fn roots_that_loop_or_hold_garbage_keep_the_server_answering() {
    let store = TestStore::new();
    let kept = build(&store, "kept", "echo kept > $out");
    let files = ViewFiles::new();
    let dir = files.gc_roots("roots", &[&kept]);
    let roots_file = files.path("team.roots");
    let mut text = b"# comment\n\x00\xff\xfe garbage \x80\n../../etc/passwd\nrelative/link\n/nix/store/\n/nix/store/..\n".to_vec();
    text.extend_from_slice("/nix/store/zzzz\n".repeat(1000).as_bytes());
    text.extend_from_slice(format!("{kept}\n").as_bytes());
    std::fs::write(&roots_file, &text).unwrap();
    let config = files.config(&format!(
        "[[view]]\nname = \"f\"\nprefix = \"f\"\nroots-file = \"{}\"\n\
         [[view]]\nname = \"d\"\nprefix = \"d\"\ngc-root-dirs = [\"{}\"]\n",
        roots_file.display(),
        dir.display()
    ));
    let server = LarderServer::start(&store, &["--config", config.to_str().unwrap()]);
    let narinfo = |view: &str| {
        server
            .get(&format!("/{view}/{}.narinfo", hash_part(&kept)), &[])
            .status
    };
    assert_eq!(narinfo("f"), 200, "garbage lines cost only themselves");
    assert_eq!(narinfo("d"), 200);
    // The root dir becomes a symlink loop, then thousands of dangling roots.
    std::fs::remove_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&dir, &dir).unwrap();
    eventually("the looped roots dir empties the view", || {
        narinfo("d") == 404
    });
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    for n in 0..3000 {
        std::os::unix::fs::symlink(format!("/nix/store/{n:032}-x"), dir.join(format!("r{n}")))
            .unwrap();
    }
    std::os::unix::fs::symlink(&kept, dir.join("kept")).unwrap();
    eventually("many roots still compute", || narinfo("d") == 200);
    assert_eq!(server.get("/health", &[]).status, 200);
}

#[test]
fn a_roots_file_that_is_a_fifo_is_refused_not_waited_on() {
    let store = TestStore::new();
    let files = ViewFiles::new();
    let fifo = files.path("roots.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let config = files.config(&format!(
        "[[view]]\nname = \"f\"\nroots-file = \"{}\"\n",
        fifo.display()
    ));
    let mut child = Command::new(binary("larder-server"))
        .arg("--store-root")
        .arg(store.root())
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .env_remove("LARDER_SERVER_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    eventually("--check-config returns", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("regular file"), "{stderr}");
}
