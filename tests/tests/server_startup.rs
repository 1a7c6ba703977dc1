//! larder-server refuses bad configuration at startup with a message that
//! names the file or setting and the fix, and documents every option.

use std::process::Command;

use larder_tests::process::binary;

fn server(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary("larder-server"))
        .args(args)
        .env_remove("LARDER_SERVER_CONFIG")
        .output()
        .expect("run larder-server");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_wrong_store_root_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("no-store-here");
    let (code, text) = server(&[
        "--bind",
        "127.0.0.1:0",
        "--store-root",
        root.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        text.contains("store-root") && text.contains("no-store-here"),
        "{text}"
    );
    assert!(text.contains("is the store root right?"), "{text}");
}

#[test]
fn config_file_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("larder.toml");
    std::fs::write(&file, "priority = 10\nstore-rooot = \"/\"\n").unwrap();
    let (code, text) = server(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        text.contains("larder.toml") && text.contains("store-rooot"),
        "{text}"
    );

    let (code, text) = server(&["--config", dir.path().join("absent.toml").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(text.contains("absent.toml"), "{text}");

    let (code, text) = server(&["--bind", "localhost"]);
    assert_eq!(code, 2);
    assert!(
        text.contains("setting bind") && text.contains("unix:"),
        "{text}"
    );
}

#[test]
fn help_documents_every_option_and_its_variable() {
    let (code, text) = server(&["--help"]);
    assert_eq!(code, 0);
    for option in [
        "--config",
        "--bind",
        "--socket-mode",
        "--socket-group",
        "--store-root",
        "--store-dir",
        "--priority",
        "--compression",
        "--zstd-level",
        "--zstd-threads",
        "--workers",
        "--max-connections",
        "--keep-alive-secs",
        "--request-timeout-secs",
        "--shutdown-timeout-secs",
        "--cache-dir",
        "--cache-size-mib",
        "--path-info-ttl-ms",
        "--tls-cert",
        "--tls-key",
        "--signer-socket",
        "--signer-timeout-ms",
        "--signer-down",
        "--signer-retry-after-secs",
        "--signature-cache-entries",
        "--log",
    ] {
        let var = format!(
            "LARDER_SERVER_{}",
            option[2..].replace('-', "_").to_uppercase()
        );
        assert!(
            text.contains(option) && text.contains(&var),
            "{option} / {var} missing:\n{text}"
        );
    }
    assert!(text.contains("127.0.0.1:5000"), "{text}");
}

/// larder's convention, end to end on the real binary: the flag beats its
/// `LARDER_SERVER_*` variable, which beats the `--config` file, which beats
/// the default.
#[test]
fn flags_beat_environment_beats_file_beats_default() {
    let store = larder_tests::TestStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("larder-server.toml");
    std::fs::write(&file, "priority = 50\npath-info-ttl-ms = 0\n").unwrap();
    let priority = |flags: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        let server = larder_tests::server::LarderServer::start_with_env(&store, flags, env);
        let info = server.get("/nix-cache-info", &[]).text();
        info.lines()
            .find_map(|l| l.strip_prefix("Priority: "))
            .unwrap_or_else(|| panic!("no Priority in {info}"))
            .to_owned()
    };
    let config = file.as_os_str();
    assert_eq!(priority(&[], &[]), "30");
    assert_eq!(priority(&[], &[("LARDER_SERVER_CONFIG", config)]), "50");
    let env = [
        ("LARDER_SERVER_CONFIG", config),
        ("LARDER_SERVER_PRIORITY", "17".as_ref()),
    ];
    assert_eq!(priority(&[], &env), "17");
    assert_eq!(priority(&["--priority", "3"], &env), "3");
}
