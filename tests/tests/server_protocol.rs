//! larder-server's binary-cache protocol, checked against the real Nix's
//! own answers for the same store: narinfo, `?json`, `.ls`, misses, and
//! what `/metrics` counts.

use larder_store::narinfo::NarInfo;
use larder_tests::fixtures::three_path_closure;
use larder_tests::server::LarderServer;
use larder_tests::{TestStore, hash_part, run, run_stdout};

#[test]
fn narinfo_matches_nix_path_info_and_head_equals_get() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, &[]);

    let info = server.get("/nix-cache-info", &[]);
    assert_eq!(info.status, 200);
    assert_eq!(
        info.text(),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
    );

    let path = format!("/{}.narinfo", hash_part(&top));
    let get = server.get(&path, &[]);
    assert_eq!(get.status, 200);
    assert_eq!(get.header("content-type"), Some("text/x-nix-narinfo"));
    let narinfo: NarInfo = get.text().parse().unwrap();
    assert_eq!(narinfo.to_string(), get.text());
    assert_eq!(narinfo.compression, "none");

    let json = run_stdout(store.nix("nix").args(["path-info", "--json"]).arg(&top));
    let nix: serde_json::Value = serde_json::from_str(&json).unwrap();
    let nix = &nix[0];
    assert_eq!(format!("/nix/store/{}", narinfo.store_path), top);
    assert_eq!(narinfo.nar_hash.to_sri(), nix["narHash"].as_str().unwrap());
    assert_eq!(narinfo.nar_size, nix["narSize"].as_u64().unwrap());
    let refs: Vec<String> = narinfo
        .references
        .iter()
        .map(|r| format!("/nix/store/{r}"))
        .collect();
    assert_eq!(serde_json::json!(refs), nix["references"]);
    assert_eq!(
        narinfo
            .deriver
            .map(|d| format!("/nix/store/{d}"))
            .as_deref(),
        nix["deriver"].as_str()
    );

    // ?json is `nix path-info --json`'s element for the path.
    let ours: serde_json::Value =
        serde_json::from_slice(&server.get(&format!("{path}?json"), &[]).body).unwrap();
    assert_eq!(&ours, nix);

    let head = server.request("HEAD", &path).call().unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
}

#[test]
fn misses_are_404_no_store_and_name_no_path() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, &[]);
    let narinfo: NarInfo = server
        .get(&format!("/{}.narinfo", hash_part(&top)), &[])
        .text()
        .parse()
        .unwrap();
    let wrong_nar = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";
    let misses = [
        "/00000000000000000000000000000000.narinfo".to_owned(),
        "/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo".to_owned(),
        "/short.narinfo".to_owned(),
        "/00000000000000000000000000000000.ls".to_owned(),
        format!("/nar/{wrong_nar}.nar?hash={}", hash_part(&top)),
        format!("/nar/{}.nar", narinfo.nar_hash.to_nix32()),
        format!("/nar/{}-{wrong_nar}.nar", hash_part(&top)),
        "/nar/garbage.nar".to_owned(),
        "/no/such/route".to_owned(),
    ];
    for miss in &misses {
        let reply = server.get(miss, &[]);
        assert_eq!(reply.status, 404, "{miss}");
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{miss}");
        assert_eq!(reply.text(), "Not Found\n", "{miss}");
    }
    // Both NAR URL forms find the path.
    let nix_serve = format!(
        "/nar/{}-{}.nar",
        hash_part(&top),
        narinfo.nar_hash.to_nix32()
    );
    assert_eq!(server.get(&nix_serve, &[]).status, 200);
    assert_eq!(server.get(&format!("/{}", narinfo.url), &[]).status, 200);
}

#[test]
fn listing_equals_nix_nar_ls() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    let server = LarderServer::start(&store, &[]);
    let closure = run_stdout(store.nix("nix-store").args(["-qR"]).arg(&top));
    for path in closure.lines() {
        let nar = tempfile::NamedTempFile::new().unwrap();
        let dump = run(store.nix("nix").args(["store", "dump-path"]).arg(path)).stdout;
        std::fs::write(nar.path(), dump).unwrap();
        let nix = run_stdout(
            store
                .nix("nix")
                .args(["nar", "ls", "--json", "-R"])
                .arg(nar.path())
                .arg("/"),
        );
        let nix: serde_json::Value = serde_json::from_str(&nix).unwrap();
        let ours: serde_json::Value =
            serde_json::from_slice(&server.get(&format!("/{}.ls", hash_part(path)), &[]).body)
                .unwrap();
        assert_eq!(
            ours,
            serde_json::json!({"version": 1, "root": nix}),
            "{path}"
        );
    }
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let found = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            found.then(|| value.parse().ok()).flatten()
        })
}

#[test]
fn metrics_parse_and_count_our_requests() {
    let store = TestStore::new();
    let top = three_path_closure(&store);
    // A memo that outlives the test, so that what reaches the DB is certain.
    let server = LarderServer::start(&store, &["--path-info-ttl-ms", "600000"]);
    let path = format!("/{}.narinfo", hash_part(&top));
    for _ in 0..3 {
        assert_eq!(server.get(&path, &[]).status, 200);
    }
    for miss in [
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
        "00000000000000000000000000000000",
    ] {
        for _ in 0..2 {
            assert_eq!(server.get(&format!("/{miss}.narinfo"), &[]).status, 404);
        }
    }
    let narinfo: NarInfo = server.get(&path, &[]).text().parse().unwrap();
    let nar = server.get(&format!("/{}", narinfo.url), &[]);
    assert_eq!(nar.body.len() as u64, narinfo.nar_size);

    let scrape = server.get("/metrics", &[]);
    assert_eq!(scrape.status, 200);
    let text = scrape.text();
    // Every line is a comment or `series value` with a numeric value.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (_, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    let requests = |status: &str| {
        sample(
            &text,
            "larder_requests_total",
            &[("route", "/{hash}.narinfo"), ("status", status)],
        )
    };
    assert_eq!(requests("200"), Some(4.0));
    assert_eq!(requests("404"), Some(4.0));
    let nar_bytes = sample(
        &text,
        "larder_bytes_sent_total",
        &[("route", "/nar/{file}"), ("encoding", "identity")],
    );
    assert_eq!(nar_bytes, Some(narinfo.nar_size as f64));
    // Four narinfos and four "Not Found\n" bodies.
    let narinfo_bytes = sample(
        &text,
        "larder_bytes_sent_total",
        &[("route", "/{hash}.narinfo"), ("encoding", "identity")],
    );
    let expected = 4 * narinfo.to_string().len() + 4 * "Not Found\n".len();
    assert_eq!(narinfo_bytes, Some(expected as f64));
    assert_eq!(sample(&text, "larder_active_streams", &[]), Some(0.0));
    // The DB saw the first lookup of the present path, both lookups of the
    // absent one (misses are never memoized) and the NAR's; the memo
    // answered the rest ("e" is not nix32: never looked up).
    let db = sample(&text, "larder_db_query_seconds_count", &[]);
    assert_eq!(db, Some(4.0));
    let memo = sample(&text, "larder_path_info_memo_hits_total", &[]);
    assert_eq!(memo, Some(3.0));
}
