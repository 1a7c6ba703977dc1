//! A real Prometheus scrapes larder (the server on a config file rendered
//! as the NixOS module renders it, the signer, the sync watcher and
//! `larder-sync receive` with their flags; the signer's metrics reach
//! Prometheus through the server's /metrics) while Nix clients use the
//! cache and a CI runner pushes to the receiver with `nix copy --to
//! http://…`, and
//! every PromQL
//! expression of `grafana/larder.json` returns data through Prometheus's
//! HTTP API. A metric the dashboard names but nobody exports fails the test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use larder_tests::deploy::prometheus::{Prometheus, ScrapeJob};
use larder_tests::deploy::promql::{dashboard_queries, metric_names};
use larder_tests::deploy::{Logged, free_port, nix_eval, workspace_root};
use larder_tests::process::{binary, wait_until};
use larder_tests::receive::{PUSHER, TOKEN, TestReceiver, base64_basic, chain_closure, push};
use larder_tests::{NIX_CONFIG, TestStore, hash_part, run};
use serde_json::json;

/// Store contents: a small file, a compressible one and a large random one
/// (large enough that a client can hang up in the middle).
struct Contents {
    small: String,
    text: String,
    large: String,
}

fn fill(store: &TestStore, dir: &Path) -> Contents {
    let small = dir.join("small.txt");
    std::fs::write(&small, "hello\n").unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "larder serves narinfo and NARs\n".repeat(20_000)).unwrap();
    let large = dir.join("large.bin");
    // More than loopback socket buffers hold, so a hang-up is noticed.
    let mut random = vec![0; 32 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
    std::fs::write(&large, random).unwrap();
    let mut paths = store.add([&small, &text, &large]).into_iter();
    let mut next = || paths.next().unwrap();
    Contents {
        small: next(),
        text: next(),
        large: next(),
    }
}

/// The signer, with the flags the module's config file holds; returns it
/// and its socket. (deploy_module checks the module's own command lines.)
fn start_signer(store: &TestStore, dir: &Path) -> (Logged, PathBuf) {
    let key = dir.join("deploy-test-1.sec");
    run(Command::new(binary("larder-signer"))
        .args(["generate-key", "--name", "deploy-test-1", "--out"])
        .arg(&key));
    let socket = dir.join("signer.sock");
    let mut signer = Logged::spawn(
        "larder-signer",
        Command::new(binary("larder-signer"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--store-root")
            .arg(store.root())
            .arg("--key-file")
            .arg(&key),
        dir,
    );
    wait_until(&mut signer.process, || socket.exists());
    (signer, socket)
}

/// The server on the config file the NixOS module would write, asking the
/// signer. Its signature cache holds one entry, so that narinfo requests
/// for alternating paths keep the signer busy.
fn start_server(store: &TestStore, dir: &Path, signer: &Path) -> (Logged, String) {
    let port = free_port();
    let toml = nix_eval::render_toml(&json!({
        "bind": format!("127.0.0.1:{port}"),
        "store-root": store.root(),
        "store-dir": "/nix/store",
        "signer-socket": signer,
        "signature-cache-entries": 1,
        "cache-dir": dir.join("nar-cache"),
        "workers": 2,
    }))
    .unwrap();
    let config = dir.join("larder-server.toml");
    std::fs::write(&config, toml).unwrap();
    let mut server = Logged::spawn(
        "larder-server",
        Command::new(binary("larder-server"))
            .arg("--config")
            .arg(&config),
        dir,
    );
    let url = format!("http://127.0.0.1:{port}");
    server.await_http(&format!("{url}/health"));
    (server, format!("127.0.0.1:{port}"))
}

/// The watcher, pushing to a file:// cache.
fn start_watcher(store: &TestStore, dir: &Path) -> (Logged, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut watcher = Logged::spawn(
        "larder-sync",
        Command::new(binary("larder-sync"))
            .arg("--queue")
            .arg(dir.join("queue.sqlite"))
            .arg("--store-root")
            .arg(store.root())
            .args(["watch", "--from-start", "--metrics-listen", &listen, "--to"])
            .arg(format!("file://{}", dir.join("pushed").display()))
            .env("NIX_CONFIG", NIX_CONFIG),
        dir,
    );
    watcher.await_http(&format!("http://{listen}/metrics"));
    (watcher, listen)
}

/// A real Nix client copies the closure out of the cache.
fn nix_copy(url: &str, paths: &[&str]) {
    let fresh = TestStore::new();
    run(fresh
        .nix("nix")
        .args(["copy", "--no-check-sigs", "--from", url])
        .args(paths));
}

/// Requests every 100 ms until stopped, so that every rate and quantile
/// has samples whenever it is asked: narinfo hits and misses, NARs with
/// and without zstd; and once, a download abandoned at the start.
fn traffic(url: String, contents: &Contents, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let small = hash_part(&contents.small).to_owned();
    let text = hash_part(&contents.text).to_owned();
    let large = hash_part(&contents.large).to_owned();
    std::thread::spawn(move || {
        let agent = ureq::agent();
        let get = |path: &str| agent.get(&format!("{url}{path}"));
        let nar_url = |hash: &str| -> String {
            let narinfo = get(&format!("/{hash}.narinfo"))
                .call()
                .unwrap()
                .into_string()
                .unwrap();
            let line = narinfo.lines().find(|l| l.starts_with("URL: ")).unwrap();
            format!("/{}", &line["URL: ".len()..])
        };
        let (small_nar, text_nar, large_nar) = (nar_url(&small), nar_url(&text), nar_url(&large));
        // Read a little of the large NAR, then hang up.
        let reply = get(&large_nar).call().unwrap();
        let _ = reply.into_reader().read(&mut [0; 65536]);
        while !stop.load(Ordering::Relaxed) {
            let _ = get("/nix-cache-info").call();
            // A signature cache hit, then a miss (it holds one entry).
            for hash in [&small, &small, &text] {
                let _ = get(&format!("/{hash}.narinfo")).call();
            }
            let _ = get("/00000000000000000000000000000000.narinfo").call();
            for (nar, encoding) in [(&small_nar, "identity"), (&text_nar, "zstd")] {
                let reply = get(nar).set("Accept-Encoding", encoding).call().unwrap();
                std::io::copy(&mut reply.into_reader(), &mut std::io::sink()).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Pushes through the receiver every 200 ms until stopped, so that its
/// rates and import-time quantiles have samples whenever they are asked:
/// a fresh one-file path each time (an upload and an import; the 404 for
/// its narinfo is a `not_found` rejection), and a request with a wrong
/// token (`unauthorized`).
fn receive_traffic(
    ci: TestStore,
    receiver: String,
    netrc: PathBuf,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let agent = ureq::agent();
        let wrong = base64_basic(PUSHER, "not-the-token");
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let file = dir.join(format!("pushed-{i}.txt"));
            std::fs::write(&file, format!("pushed by CI, number {i}\n")).unwrap();
            let path = ci.add([&file]).remove(0);
            let out = push(&ci, &receiver, &netrc, &[path]);
            assert!(
                out.status.success(),
                "push {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let refused = agent
                .get(&format!("{receiver}/nix-cache-info"))
                .set("Authorization", &format!("Basic {wrong}"))
                .call();
            assert!(matches!(refused, Err(ureq::Error::Status(401, _))));
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let queries = dashboard_queries(&workspace_root().join("grafana/larder.json"));
    assert!(queries.len() >= 30, "{queries:?}");
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let contents = fill(&store, dir.path());
    let (_signer, signer_socket) = start_signer(&store, dir.path());
    let (_server, server_addr) = start_server(&store, dir.path(), &signer_socket);
    let (_watcher, watcher_addr) = start_watcher(&store, dir.path());
    // The cache host's receiver, in a store of its own, and a CI runner.
    let host = TestStore::new();
    let receive_metrics = format!("127.0.0.1:{}", free_port());
    let receiver = TestReceiver::start(&host, &["--metrics-listen", &receive_metrics]);
    let netrc = receiver.netrc(PUSHER, TOKEN);
    let ci = TestStore::new();
    let jobs = [
        ScrapeJob {
            name: "larder-server",
            targets: vec![server_addr.clone()],
        },
        ScrapeJob {
            name: "larder-sync",
            targets: vec![watcher_addr],
        },
        ScrapeJob {
            name: "larder-sync-receive",
            targets: vec![receive_metrics],
        },
    ];
    let mut prometheus = Prometheus::start(&jobs);
    prometheus.await_targets_up(&jobs);

    let url = format!("http://{server_addr}");
    nix_copy(&url, &[&contents.small, &contents.text]);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = traffic(url, &contents, stop.clone());
    // A real push of a closure with references, then one path at a time.
    let closure = chain_closure(&ci, "ci", 5);
    let out = push(&ci, &receiver.url(), &netrc, &closure[closure.len() - 1..]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushes = receive_traffic(
        ci,
        receiver.url(),
        netrc,
        dir.path().to_owned(),
        stop.clone(),
    );

    let mut failures = Vec::new();
    for query in &queries {
        let names = metric_names(&query.expr);
        assert!(
            !names.is_empty(),
            "panel {:?}: no metric in {}",
            query.panel,
            query.expr
        );
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !prometheus.await_metric(n))
            .collect();
        if !missing.is_empty() {
            failures.push(format!(
                "panel {:?}: {missing:?} named in the dashboard but exported by no target",
                query.panel
            ));
        } else if let Err(e) = prometheus.await_data(&query.expr) {
            failures.push(format!(
                "panel {:?}: {} returned {e}",
                query.panel, query.expr
            ));
        }
    }
    // The check can fail: a name nobody exports is reported missing.
    assert!(!prometheus.has_metric("larder_no_such_metric_total"));
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    pushes.join().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What Grafana needs to lay the dashboard out: unique panel ids, panels
/// inside the 24-column grid and not overlapping, a query in every panel,
/// and every query on the data source the importer picks.
#[test]
fn dashboard_layout_is_sound() {
    let path = workspace_root().join("grafana/larder.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut cells = std::collections::BTreeMap::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id reused"
        );
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: beyond the grid");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            if let Some(other) = cells.insert(cell, title) {
                panic!("{title} overlaps {other}");
            }
        }
        if panel["type"] != "row" {
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title}: no query");
            for t in targets.iter().chain([panel]) {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            }
        }
    }
}
