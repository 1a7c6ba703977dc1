//! The NixOS module evaluated for real (`nixos-module/tests/eval.nix`: the
//! vendored nixpkgs lib's `evalModules`): its assertions hold and trip, its
//! units' command lines are contrib/systemd's, and the real binaries run on
//! the command lines and `--config` files it generates.
//!
//! All three binaries follow the `--config` convention
//! (`larder_store::cli`), so the module's rendered files are run for real.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use larder_tests::deploy::module::{ModuleEval, socket_activated_server};
use larder_tests::deploy::{Logged, free_port, systemd, workspace_root};
use larder_tests::fixtures::{export_file_cache, file_uri};
use larder_tests::process::wait_until;
use larder_tests::{NIX_CONFIG, TestStore, hash_part, run_stdout};
use serde_json::{Value, json};

/// Every service enabled, with the values the contrib/ examples use.
fn contrib_config() -> Value {
    json!({ "services": { "larder": {
        "server": { "enable": true },
        "signer": { "enable": true, "keyFiles": ["/etc/larder/signing-key.sec"] },
        "sync": {
            "watch": {
                "enable": true,
                "settings": { "to": "ssh-ng://cache.example.org" },
                "sshKeyFile": "/etc/larder/sync-ssh-key",
                "postBuildHook": true,
            },
            "pull": {
                "enable": true,
                "builders": { "builder": [{
                    "uri": "ssh-ng://builder1",
                    "interval_secs": 300,
                    "roots": ["/nix/var/nix/profiles/system"],
                    "keep_last": 5,
                }] },
            },
            "receive": { "enable": true, "tokensFile": "/etc/larder/sync-receive-tokens" },
            "keep": { "enable": true },
        },
    } } })
}

/// `config` with `value` set at the dotted `path` under services.larder.
fn with(mut config: Value, path: &str, value: Value) -> Value {
    let mut at = &mut config["services"]["larder"];
    for key in path.split('.') {
        at = &mut at[key];
    }
    *at = value;
    config
}

#[test]
fn assertions_hold_and_a_bad_config_trips_the_right_one() {
    let module = ModuleEval::new(&contrib_config());
    assert_eq!(module.failed(), Vec::<String>::new());
    assert_eq!(
        module.value["nix"]["settings"]["trusted-users"],
        json!(["root", "larder-receive"])
    );

    for (path, value, message) in [
        (
            "server.settings.bind",
            json!("0.0.0.0:80"),
            "settings.bind must stay \"systemd\"",
        ),
        (
            "server.tlsCertFile",
            json!("/etc/cert.pem"),
            "set both tlsCertFile and tlsKeyFile",
        ),
        (
            "server.settings.tls-key",
            json!("/k"),
            "no tls-cert/tls-key here",
        ),
        (
            "signer.keyFiles",
            json!([]),
            "give at least one secret key file",
        ),
        (
            "signer.settings.socket",
            json!("/tmp/s.sock"),
            "must be under /run/larder/",
        ),
        (
            "server.settings.accel-redirect",
            json!("/_larder_cache/"),
            "settings.accel-redirect needs offloadUser",
        ),
        ("signer.settings.key-file", json!("/k"), "no key-file here"),
        (
            "sync.watch.settings.queue",
            json!("/tmp/q.sqlite"),
            "must be under /var/lib/larder-sync/",
        ),
        (
            "sync.watch.settings.sign-key",
            json!("/k"),
            "no sign-key here",
        ),
        (
            "sync.receive.settings.tokens",
            json!("/t"),
            "no tokens here",
        ),
        (
            "sync.receive.settings.staging-dir",
            json!("/tmp/st"),
            "staging-dir must be under",
        ),
        (
            "sync.receive.settings.gc-root-dir",
            json!("/tmp/r"),
            "gc-root-dir must stay",
        ),
    ] {
        let config = with(contrib_config(), path, value);
        let failed = larder_tests::deploy::nix_eval::module_attr(&config, "failed")
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let failed: Vec<String> = serde_json::from_value(failed).unwrap();
        assert_eq!(failed.len(), 1, "{path}: {failed:?}");
        assert!(failed[0].contains(message), "{path}: {failed:?}");
    }
}

/// `offloadUser` (nginx sends cached NARs): the server runs as a static
/// user whose group nginx's user joins, its cache directory readable by
/// that group; a cache elsewhere than the service's CacheDirectory trips
/// the assertion, and without offloadUser nothing changes.
#[test]
fn offload_lets_the_proxy_read_the_cache() {
    let offload = with(
        with(contrib_config(), "server.offloadUser", json!("nginx")),
        "server.settings.accel-redirect",
        json!("/_larder_cache/"),
    );
    let module = ModuleEval::new(&offload);
    assert_eq!(module.failed(), Vec::<String>::new());
    let service = &module.value["systemd"]["services"]["larder-server"]["serviceConfig"];
    assert_eq!(service["DynamicUser"], json!(false));
    assert_eq!(service["User"], json!("larder-server"));
    assert_eq!(service["Group"], json!("larder-server"));
    assert_eq!(service["CacheDirectory"], json!("larder-server"));
    assert_eq!(service["CacheDirectoryMode"], json!("0750"));
    let users = &module.value["users"];
    assert_eq!(users["users"]["larder-server"]["isSystemUser"], json!(true));
    assert_eq!(
        users["users"]["larder-server"]["group"],
        json!("larder-server")
    );
    assert_eq!(
        users["users"]["nginx"]["extraGroups"],
        json!(["larder-server"])
    );
    assert!(users["groups"]["larder-server"].is_object(), "{users}");
    let config = module.config_file("larder-server");
    assert!(
        config.contains("accel-redirect = \"/_larder_cache/\""),
        "{config}"
    );

    let elsewhere = with(offload, "server.settings.cache-dir", json!("/srv/cache"));
    let failed = larder_tests::deploy::nix_eval::module_attr(&elsewhere, "failed").unwrap();
    let failed: Vec<String> = serde_json::from_value(failed).unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].contains("accel-redirect needs settings.cache-dir"),
        "{failed:?}"
    );

    let plain = ModuleEval::new(&contrib_config());
    let service = &plain.value["systemd"]["services"]["larder-server"]["serviceConfig"];
    assert_eq!(service["DynamicUser"], json!(true));
    assert!(service.get("User").is_none(), "{service}");
    assert_eq!(service["CacheDirectoryMode"], json!("0700"));
    assert!(plain.value["users"]["users"].get("larder-server").is_none());
}

/// Without its required value (the watcher's target), the module does not
/// evaluate, and Nix names the option.
#[test]
fn a_missing_target_is_named() {
    let config = with(contrib_config(), "sync.watch.settings", json!({}));
    let err = larder_tests::deploy::nix_eval::module(&config).unwrap_err();
    assert!(
        err.contains("services.larder.sync.watch.settings.to"),
        "{err}"
    );
}

/// Store paths the module wrote (`/nix/store/<hash>-larder-X.toml`) as the
/// files contrib/ installs (`/etc/larder/X.toml`).
fn as_etc(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("/nix/store/") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + "/nix/store/".len()..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let name = &tail[..end];
        match name.get(33..).and_then(|n| n.strip_prefix("larder-")) {
            Some(file) if file.ends_with(".toml") => out.push_str(&format!("/etc/larder/{file}")),
            _ => out.push_str(&format!("/nix/store/{name}")),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Each unit's ExecStart/ExecStartPre and credentials are contrib's (the
/// package's bin dir is /usr/local/bin, the config files are under
/// /etc/larder), and the config files it writes are contrib/etc/larder's.
#[test]
fn contrib_units_and_files_are_the_modules() {
    let module = ModuleEval::new(&contrib_config());
    let contrib = workspace_root().join("contrib");
    let bin = format!("{}/bin/", module.package());
    for unit in [
        "larder-server",
        "larder-signer",
        "larder-sync-watch",
        "larder-sync-pull",
        "larder-sync-receive",
    ] {
        let file = contrib.join(format!("systemd/{unit}.service"));
        for key in ["ExecStart", "ExecStartPre", "LoadCredential"] {
            let want: Vec<String> = match &module.service(unit)["serviceConfig"][key] {
                Value::Null => vec![],
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
                other => panic!("{unit} {key}: {other}"),
            };
            let want: Vec<String> = want
                .iter()
                .map(|line| as_etc(&line.replace(&bin, "/usr/local/bin/")))
                .collect();
            assert_eq!(systemd::values(&file, key), want, "{unit} {key}");
        }
        // The config files, and the files they name.
        let exec = module.exec(unit, "ExecStart");
        let mut pending: Vec<String> = exec
            .split_whitespace()
            .filter(|w| w.ends_with(".toml"))
            .map(str::to_owned)
            .collect();
        while let Some(path) = pending.pop() {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            pending.extend(
                text.split('"')
                    .filter(|w| w.starts_with("/nix/store/") && w.ends_with(".toml"))
                    .map(str::to_owned),
            );
            let etc = as_etc(&path);
            let shipped = contrib.join(etc.trim_start_matches('/'));
            let shipped = std::fs::read_to_string(&shipped)
                .unwrap_or_else(|e| panic!("{unit}: {} ({e})", shipped.display()));
            assert_eq!(without_comments(&shipped), as_etc(&text), "{etc}");
        }
    }
    let tmpfiles = std::fs::read_to_string(contrib.join("tmpfiles.d/larder.conf")).unwrap();
    assert!(
        without_comments(&tmpfiles)
            .lines()
            .all(|l| module.value["systemd"]["tmpfiles"]["rules"]
                .as_array()
                .unwrap()
                .contains(&json!(l))),
        "{tmpfiles}"
    );
    // The post-build-hook enqueues on the watcher's queue.
    let hook = module.value["nix"]["settings"]["post-build-hook"]
        .as_str()
        .unwrap();
    let hook = as_etc(
        &std::fs::read_to_string(hook)
            .unwrap()
            .replace(&bin, "/usr/local/bin/"),
    );
    assert!(
        hook.contains(
            "exec /usr/local/bin/larder-sync --config /etc/larder/sync-watch.toml enqueue"
        ),
        "{hook}"
    );
}

/// A credentials directory with `files` (name, contents), mode 0400 as
/// systemd makes them.
fn credentials(dir: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
    let creds = dir.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    for (name, text) in files {
        let path = creds.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    creds
}

/// The module's server unit, with a test store: ExecStartPre (the check)
/// passes, and ExecStart serves under the real `systemd-socket-activate`
/// (the module's `bind = "systemd"`).
#[test]
fn server_runs_on_the_modules_units() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let path = store.add([&file]).remove(0);
    let config = json!({ "services": { "larder": { "server": {
        "enable": true,
        "settings": {
            "store-root": store.root(),
            "cache-dir": null,
            "priority": 41,
            "compression": "zstd",
        },
    } } } });
    let module = ModuleEval::new(&config);
    assert_eq!(module.failed(), Vec::<String>::new());
    let creds = credentials(dir.path(), &[]);
    run_start_pre(&mut module.command("larder-server", "ExecStartPre", &creds));

    let (_server, url) = socket_activated_server(&module, &creds, dir.path());
    let info = ureq::get(&format!("{url}/nix-cache-info")).call().unwrap();
    assert!(info.into_string().unwrap().contains("Priority: 41\n"));
    let narinfo = ureq::get(&format!("{url}/{}.narinfo", hash_part(&path)))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(narinfo.contains("Compression: zstd\n"), "{narinfo}");
}

/// The module's signer unit: `check` (ExecStartPre) passes and `serve`
/// signs with the key handed over as a credential. The socket is given on
/// the command line after the unit's (a flag beats the file), since the
/// module keeps it under /run/larder.
#[test]
fn signer_runs_on_the_modules_units() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("deploy-test-1.sec");
    let public = run_stdout(
        Command::new(larder_tests::process::binary("larder-signer"))
            .args(["generate-key", "--name", "deploy-test-1", "--out"])
            .arg(&key),
    );
    let config = json!({ "services": { "larder": { "signer": {
        "enable": true,
        "keyFiles": [key],
        "settings": { "store-root": store.root(), "socket-group": "root" },
    } } } });
    let module = ModuleEval::new(&config);
    assert_eq!(
        module.service("larder-signer")["serviceConfig"]["LoadCredential"],
        json!([format!("key-0:{}", key.display())])
    );
    let creds = credentials(
        dir.path(),
        &[("key-0", &std::fs::read_to_string(&key).unwrap())],
    );
    let socket = dir.path().join("signer.sock");
    run_start_pre(
        module
            .command("larder-signer", "ExecStartPre", &creds)
            .arg("--socket")
            .arg(&socket),
    );
    let mut signer = Logged::spawn(
        "larder-signer",
        module
            .command("larder-signer", "ExecStart", &creds)
            .arg("--socket")
            .arg(&socket),
        dir.path(),
    );
    wait_until(&mut signer.process, || socket.exists());
    let reply = run_stdout(
        Command::new(larder_tests::process::binary("larder-signer"))
            .arg("request")
            .arg("--socket")
            .arg(&socket),
    );
    assert!(reply.contains(public.trim()), "{reply}");
}

/// Run a unit's `ExecStartPre` (a check, run as root by systemd) and
/// require it to pass.
fn run_start_pre(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A larder-sync unit's `ExecStart` running on the test's chroot stores
/// (the test's Nix configuration; no nix-daemon here).
fn spawn_sync_unit(module: &ModuleEval, unit: &str, creds: &Path, dir: &Path) -> Logged {
    Logged::spawn(
        unit,
        module
            .command(unit, "ExecStart", creds)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env_remove("NIX_REMOTE"),
        dir,
    )
}

/// The module's watcher and post-build-hook: a path enqueued by the hook's
/// command line is pushed by the unit's to a file:// cache.
#[test]
fn watcher_and_hook_run_on_the_modules_config() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let config = json!({ "services": { "larder": { "sync": { "watch": {
        "enable": true,
        "postBuildHook": true,
        "settings": {
            "to": file_uri(&cache),
            "queue": dir.path().join("queue.sqlite"),
            "store-root": store.root(),
            "metrics-listen": null,
            "poll-interval-ms": 100,
        },
    } } } } });
    let module = ModuleEval::new(&config);
    let creds = credentials(dir.path(), &[]);
    let mut watcher = spawn_sync_unit(&module, "larder-sync-watch", &creds, dir.path());
    let file = dir.path().join("built.txt");
    std::fs::write(&file, "built\n").unwrap();
    let path = store.add([&file]).remove(0);
    let hook = module.value["nix"]["settings"]["post-build-hook"]
        .as_str()
        .unwrap();
    let exec = std::fs::read_to_string(hook).unwrap();
    let line = exec
        .lines()
        .find_map(|l| l.strip_prefix("exec "))
        .expect("exec line");
    let words = module.words(line);
    let out = Command::new(&words[0])
        .args(&words[1..])
        .env("OUT_PATHS", &path)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let narinfo = cache.join(format!("{}.narinfo", hash_part(&path)));
    wait_until(&mut watcher.process, || narinfo.exists());
}

/// The module's pull unit (`larder-sync --config F daemon`, F naming the
/// builder list as `builders`) pulls from a file:// builder and roots it.
#[test]
fn pull_daemon_runs_on_the_modules_config() {
    let builder = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pulled.txt");
    std::fs::write(&file, "pulled\n").unwrap();
    let path = builder.add([&file]).remove(0);
    let cache = dir.path().join("cache");
    export_file_cache(&builder, &path, &cache, "none");
    let local = TestStore::new();
    let gc_roots = dir.path().join("gcroots");
    let config = json!({ "services": { "larder": { "sync": { "pull": {
        "enable": true,
        "settings": { "store-root": local.root(), "queue": dir.path().join("queue.sqlite") },
        "builders": {
            "gc_root_dir": gc_roots,
            "store_root": local.root(),
            "builder": [{
                "name": "builder1",
                "uri": file_uri(&cache),
                "interval_secs": 3600,
                "paths": [path],
                "no_check_sigs": true,
                "keep_last": 2,
            }],
        },
    } } } } });
    let module = ModuleEval::new(&config);
    let creds = credentials(dir.path(), &[]);
    let mut daemon = spawn_sync_unit(&module, "larder-sync-pull", &creds, dir.path());
    let roots = gc_roots.join("builder1");
    wait_until(&mut daemon.process, || {
        std::fs::read_dir(&roots).is_ok_and(|mut d| d.next().is_some())
    });
    assert!(local.real_path(&path).exists());
}

/// The module's receiver: ExecStartPre (`roots`, as root) passes, and
/// ExecStart answers a token holder and refuses anyone else; retention
/// settings reach both.
#[test]

fn receiver_runs_on_the_modules_units() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = json!({ "services": { "larder": { "sync": { "receive": {
        "enable": true,
        "tokensFile": "/etc/larder/sync-receive-tokens",
        "settings": {
            "listen": format!("127.0.0.1:{port}"),
            "store-root": store.root(),
            "staging-dir": dir.path().join("staging"),
            "gc-root-dir": store.root().join("nix/var/nix/gcroots/larder"),
            // Retention: flags of `receive` and of ExecStartPre's `roots`.
            "keep-last": 20,
            "max-age-days": 30,
            "policy": ["receive-ci=last:5,days:7"],
        },
    } } } } });
    let module = ModuleEval::new(&config);
    let creds = credentials(dir.path(), &[("tokens", "ci tok-ci-0123456789abcdef\n")]);
    run_start_pre(
        module
            .command("larder-sync-receive", "ExecStartPre", &creds)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env_remove("NIX_REMOTE"),
    );
    let mut receiver = Logged::spawn(
        "larder-sync-receive",
        module
            .command("larder-sync-receive", "ExecStart", &creds)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env_remove("NIX_REMOTE")
            .env("HOME", dir.path()),
        dir.path(),
    );
    let url = format!("http://127.0.0.1:{port}/nix-cache-info");
    wait_until(&mut receiver.process, || {
        ureq::get(&url)
            .set("Authorization", "Bearer tok-ci-0123456789abcdef")
            .call()
            .is_ok()
    });
    let refused = ureq::get(&url).call().unwrap_err();
    assert!(matches!(refused, ureq::Error::Status(401, _)), "{refused}");
}

/// The module's s3:// watcher and bucket GC: S3 keys only through
/// LoadCredential (`AWS_*_FILE=%d/…`), never on a command line or in a
/// settings file; the watcher's unit pushes to a real Garage and signs with
/// the module's signer; the GC unit runs on the same credentials.
#[test]
fn s3_watcher_and_gc_run_on_the_modules_units() {
    use larder_tests::garage::{ACCESS_KEY, SECRET_KEY, TestGarage};
    let store = TestStore::new();
    let signer = larder_tests::signer::TestSigner::start(&store, &[]);
    let garage = TestGarage::start();
    let dir = tempfile::tempdir().unwrap();
    let config = json!({ "services": { "larder": {
        "sync": {
            "watch": {
                "enable": true,
                "s3AccessKeyIdFile": "/etc/larder/s3-id",
                "s3SecretAccessKeyFile": "/etc/larder/s3-secret",
                "settings": {
                    "to": garage.uri(),
                    "queue": dir.path().join("queue.sqlite"),
                    "store-root": store.root(),
                    "metrics-listen": null,
                    "poll-interval-ms": 100,
                    "signer-socket": signer.socket,
                },
            },
            "s3Gc": {
                "enable": true,
                "s3AccessKeyIdFile": "/etc/larder/s3-id",
                "s3SecretAccessKeyFile": "/etc/larder/s3-secret",
                "settings": {
                    "to": garage.uri(),
                    "store-root": store.root(),
                    "gc-root-dir": dir.path().join("gcroots"),
                    "grace-secs": 0,
                },
            },
        },
    } } });
    let module = ModuleEval::new(&config);
    // Only the test's own queue path (outside the StateDirectory) trips.
    assert!(
        module.failed().iter().all(|m| m.contains("settings.queue")),
        "{:?}",
        module.failed()
    );
    for unit in ["larder-sync-watch", "larder-sync-s3-gc"] {
        let service = module.service(unit);
        assert_eq!(
            service["serviceConfig"]["LoadCredential"],
            json!([
                "s3-access-key-id:/etc/larder/s3-id",
                "s3-secret-access-key:/etc/larder/s3-secret"
            ]),
            "{unit}"
        );
        assert_eq!(
            service["environment"]["AWS_ACCESS_KEY_ID_FILE"],
            json!("%d/s3-access-key-id")
        );
        assert_eq!(
            service["environment"]["AWS_SECRET_ACCESS_KEY_FILE"],
            json!("%d/s3-secret-access-key")
        );
        let exec = module.exec(unit, "ExecStart");
        assert!(
            !exec.contains("AWS") && !exec.contains("/etc/larder/s3"),
            "{exec}"
        );
    }
    assert_eq!(
        module.service("larder-sync-s3-gc")["startAt"],
        json!("daily")
    );
    // With the module's signer enabled, an s3:// watcher signs with it.
    let mut signed = with(
        config.clone(),
        "signer",
        json!({ "enable": true, "keyFiles": ["/k.sec"] }),
    );
    signed["services"]["larder"]["sync"]["watch"]["settings"]
        .as_object_mut()
        .unwrap()
        .remove("signer-socket");
    let signed = ModuleEval::new(&signed);
    let exec = signed.exec("larder-sync-watch", "ExecStart");
    assert!(exec.contains("--signer-socket /run/larder/"), "{exec}");
    assert!(
        signed.service("larder-sync-watch")["after"]
            .as_array()
            .unwrap()
            .contains(&json!("larder-signer.service"))
    );

    let creds = credentials(
        dir.path(),
        &[
            ("s3-access-key-id", ACCESS_KEY),
            ("s3-secret-access-key", SECRET_KEY),
        ],
    );
    let mut watcher = spawn_sync_unit(&module, "larder-sync-watch", &creds, dir.path());
    // The scanner starts from the store's newest row when it opens (after
    // the target check over the network): add the path only once it logs
    // that it watches, or the path may predate it and never be queued.
    let log = dir.path().join("larder-sync-watch.log");
    wait_until(&mut watcher.process, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("watching "))
    });
    let file = dir.path().join("to-s3.txt");
    std::fs::write(&file, "to s3\n").unwrap();
    let path = store.add([&file]).remove(0);
    wait_until(&mut watcher.process, || {
        garage.web_get(&format!("/{}.narinfo", hash_part(&path))) == Some(200)
    });
    drop(watcher);
    let out = larder_tests::fixtures::copy_with_sigs(&garage.web_url(), &path, &signer.public_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No roots in gc-root-dir but the path's: the GC keeps it.
    let roots = dir.path().join("gcroots/ci");
    std::fs::create_dir_all(&roots).unwrap();
    std::os::unix::fs::symlink(&path, roots.join("kept")).unwrap();
    let out = module
        .command("larder-sync-s3-gc", "ExecStart", &creds)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        garage.web_get(&format!("/{}.narinfo", hash_part(&path))),
        Some(200)
    );

    // An s3:// target without credential files, or keys in settings: refused.
    let bad = with(
        config.clone(),
        "sync.watch.s3SecretAccessKeyFile",
        Value::Null,
    );
    let failed = ModuleEval::new(&bad).failed();
    assert!(
        failed
            .iter()
            .any(|m| m.contains("needs s3AccessKeyIdFile and s3SecretAccessKeyFile")),
        "{failed:?}"
    );
    let bad = with(
        config,
        "sync.s3Gc.settings.aws-secret-access-key",
        json!("x"),
    );
    let failed = ModuleEval::new(&bad).failed();
    assert!(
        failed.iter().any(|m| m.contains("no S3 keys here")),
        "{failed:?}"
    );
}
