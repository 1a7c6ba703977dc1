//! The NixOS module's `services.larder.server.views`: rendered as the
//! config file's `[[view]]` tables, private views' tokens handed over by
//! LoadCredential, and the real server checks and serves what it renders.

use larder_tests::deploy::module::{ModuleEval, socket_activated_server};
use larder_tests::{TestStore, hash_part};
use serde_json::json;

#[test]
fn views_render_to_tables_the_server_runs() {
    let store = TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let inside = store.add([&file]).remove(0);
    std::fs::write(&file, "other\n").unwrap();
    let outside = store.add([&file]).remove(0);
    let roots = dir.path().join("roots");
    std::fs::create_dir(&roots).unwrap();
    std::os::unix::fs::symlink(&inside, roots.join("hello")).unwrap();

    let private = json!({ "services": { "larder": { "server": {
        "enable": true,
        "views": [{ "name": "team", "prefix": "team", "gcRootDirs": ["/r"], "tokensFile": "/run/keys/team.tokens" }],
    } } } });
    let module = ModuleEval::new(&private);
    assert_eq!(module.failed(), Vec::<String>::new());
    let creds = &module.service("larder-server")["serviceConfig"]["LoadCredential"];
    assert_eq!(creds, &json!(["view-team-tokens:/run/keys/team.tokens"]));

    let public = json!({ "services": { "larder": { "server": {
        "enable": true,
        "settings": { "store-root": store.root(), "cache-dir": null },
        "views": [{ "name": "team", "prefix": "team", "gcRootDirs": [roots], "priority": 17 }],
    } } } });
    let module = ModuleEval::new(&public);
    assert_eq!(module.failed(), Vec::<String>::new());
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let out = module
        .command("larder-server", "ExecStartPre", &creds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_server, url) = socket_activated_server(&module, &creds, dir.path());
    let info = ureq::get(&format!("{url}/team/nix-cache-info"))
        .call()
        .unwrap();
    assert!(info.into_string().unwrap().contains("Priority: 17\n"));
    let status = |p: &str| match ureq::get(&format!("{url}/team/{}.narinfo", hash_part(p))).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status(&inside), 200);
    assert_eq!(status(&outside), 404);
}
