//! The NixOS module and the flake: every `.nix` file parses with the real
//! `nix-instantiate`, and the settings-to-TOML renderer's output is
//! accepted by the real larder-server. (The whole module is evaluated in
//! deploy_module.rs.)

use std::process::Command;

use larder_tests::deploy::{
    Logged, files_with_suffix, free_port, nix_eval, require_tool, workspace_root,
};
use larder_tests::process::binary;
use larder_tests::{TestStore, require_nix};
use serde_json::json;

#[test]
fn every_nix_file_parses() {
    require_nix();
    let root = workspace_root();
    let files = files_with_suffix(&root, ".nix");
    for expected in [
        "flake.nix",
        "nixos-module/default.nix",
        "nixos-module/server.nix",
        "nixos-module/signer.nix",
        "nixos-module/sync.nix",
        "nixos-module/toml.nix",
        "nixos-module/common.nix",
        "nixos-module/receive.nix",
        "nixos-module/tests/eval.nix",
        "nixos-module/tests/nixos.nix",
        "nixos-module/hardening.nix",
        "nixos-module/package.nix",
    ] {
        assert!(
            files.contains(&root.join(expected)),
            "{expected} not found in {files:?}"
        );
    }
    for file in &files {
        if let Err(e) = nix_eval::parse(file) {
            panic!("{}: {e}", file.display());
        }
    }
    // The check can fail.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.nix");
    std::fs::write(&broken, "{ a = ; }").unwrap();
    assert!(nix_eval::parse(&broken).is_err());
}

#[test]
fn renderer_writes_toml_values_tables_and_arrays_of_tables() {
    let text = nix_eval::render_toml(&json!({
        "priority": 41,
        "unset": null,
        "log": "a \"quoted\" \\ value\nüñ",
        "list": [1, "two", true],
        "builder": [{"uri": "file:///a"}, {"uri": "ssh-ng://b", "keep_last": 3}],
        "nested": {"inner": {"x": 1.5}},
    }))
    .unwrap();
    assert_eq!(
        text,
        "list = [1, \"two\", true]\n\
         log = \"a \\\"quoted\\\" \\\\ value\\nüñ\"\n\
         priority = 41\n\
         [[builder]]\nuri = \"file:///a\"\n\
         [[builder]]\nkeep_last = 3\nuri = \"ssh-ng://b\"\n\
         [nested.inner]\nx = 1.5\n"
    );
    let err = nix_eval::render_toml(&json!([1])).unwrap_err();
    assert!(err.contains("expected an attribute set"), "{err}");
}

/// The server's settings as the NixOS module renders them (`bind =
/// "systemd"`: the socket unit listens, here the real
/// `systemd-socket-activate`), with a store root whose name needs TOML
/// escapes.
#[test]
fn server_accepts_the_rendered_config() {
    let store = TestStore::new();
    let file = store.root().join("hello.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let path = store.add([&file]).remove(0);
    let dir = tempfile::tempdir().unwrap();
    let odd_root = dir.path().join("a \"store\" \\ root ü");
    std::os::unix::fs::symlink(store.root(), &odd_root).unwrap();
    let port = free_port();
    let toml = nix_eval::render_toml(&json!({
        "bind": "systemd",
        "store-root": odd_root,
        "store-dir": "/nix/store",
        "signer-socket": null,
        "priority": 41,
        "compression": "zstd",
        "zstd-level": 3,
        "workers": 2,
        "keep-alive-secs": 5,
        "log": "larder_server=debug,info",
    }))
    .unwrap();
    let config = dir.path().join("larder-server.toml");
    std::fs::write(&config, &toml).unwrap();

    require_tool("systemd-socket-activate", "systemd");
    let mut server = Logged::spawn(
        "larder-server",
        Command::new("systemd-socket-activate")
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(binary("larder-server"))
            .arg("--config")
            .arg(&config),
        dir.path(),
    );
    let url = format!("http://127.0.0.1:{port}");
    server.await_http(&format!("{url}/health"));
    let info = ureq::get(&format!("{url}/nix-cache-info")).call().unwrap();
    assert!(
        info.into_string().unwrap().contains("Priority: 41\n"),
        "{toml}"
    );
    let hash_part = &path["/nix/store/".len().."/nix/store/".len() + 32];
    let narinfo = ureq::get(&format!("{url}/{hash_part}.narinfo"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(narinfo.contains("Compression: zstd\n"), "{narinfo}");
}

#[test]
fn server_refuses_a_rendered_unknown_key_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("larder-server.toml");
    let toml = nix_eval::render_toml(&json!({ "priorty": 41 })).unwrap();
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(binary("larder-server"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("priorty") && err.contains("larder-server.toml"),
        "{err}"
    );
}
