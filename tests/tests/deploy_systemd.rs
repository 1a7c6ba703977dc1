//! The plain unit files under `contrib/systemd/`: `systemd-analyze verify`
//! passes on a copy whose binaries are the ones just built (the shipped
//! files point at /usr/local/bin) and their sandboxing is the NixOS
//! module's (deploy_module.rs checks that they run its command lines).

use std::path::{Path, PathBuf};

use larder_tests::deploy::{nix_eval, systemd, workspace_root};
use larder_tests::process::binary;
use serde_json::Value;

const UNITS: &[&str] = &[
    "larder-server.socket",
    "larder-server.service",
    "larder-signer.service",
    "larder-sync-watch.service",
    "larder-sync-pull.service",
    "larder-sync-receive.service",
    "larder-sync-keep.service",
];

const SHIPPED_BIN_DIR: &str = "/usr/local/bin/";

fn contrib() -> PathBuf {
    workspace_root().join("contrib/systemd")
}

/// A copy of contrib/systemd (drop-ins too) whose ExecStart= lines name the
/// built binaries.
fn test_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&contrib(), dir.path());
    for unit in UNITS {
        let path = dir.path().join(unit);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for program in ["larder-server", "larder-signer", "larder-sync"] {
            let built = binary(program).display().to_string();
            text = text.replace(
                &format!("{SHIPPED_BIN_DIR}{program} "),
                &format!("{built} "),
            );
        }
        std::fs::write(&path, text).unwrap();
    }
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    for unit in UNITS.iter().filter(|u| u.ends_with(".service")) {
        let exec = systemd::values(&contrib().join(unit), "ExecStart");
        assert_eq!(exec.len(), 1, "{unit}: {exec:?}");
        assert!(exec[0].starts_with(SHIPPED_BIN_DIR), "{unit}: {exec:?}");
    }
    let copy = test_copy();
    if let Err(e) = systemd::verify(copy.path(), UNITS) {
        panic!("{e}");
    }
}

/// `systemd-analyze security` scores, at most what they are now (tenths:
/// 6 is "0.6 SAFE"). The sync units run `nix copy` and ssh as root (without
/// capabilities) on the network, hence their higher score; the receiver
/// faces the network as an unprivileged user (1.4).
#[test]
fn units_expose_little() {
    let copy = test_copy();
    for (unit, threshold) in [
        ("larder-server.service", 6),
        ("larder-signer.service", 5),
        ("larder-sync-watch.service", 18),
        ("larder-sync-pull.service", 18),
        ("larder-sync-receive.service", 14),
        ("larder-sync-keep.service", 18),
    ] {
        if let Err(e) = systemd::security(copy.path(), unit, threshold) {
            panic!("{e}");
        }
    }
    // The check can fail.
    assert!(systemd::security(copy.path(), "larder-server.service", 5).is_err());
}

#[test]
fn verify_reports_what_systemd_only_warns_about() {
    let copy = test_copy();
    let unit = copy.path().join("larder-server.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &unit,
        text.replace("Restart=on-failure", "Restart=on-failur"),
    )
    .unwrap();
    let err = systemd::verify(copy.path(), &["larder-server.service"]).unwrap_err();
    assert!(err.contains("on-failur"), "{err}");

    let copy = test_copy();
    let dropin = copy.path().join("larder-.service.d/hardening.conf");
    let text = std::fs::read_to_string(&dropin).unwrap();
    std::fs::write(&dropin, format!("{text}ProtectSystm=strict\n")).unwrap();
    let err = systemd::verify(copy.path(), &["larder-signer.service"]).unwrap_err();
    assert!(err.contains("ProtectSystm"), "{err}");
}

/// `true` is `yes` in a unit file.
fn unit_value(v: &Value) -> String {
    match v {
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn sandboxing_is_the_nixos_modules() {
    let common = nix_eval::module_data("hardening.nix", "common");
    let mut want: Vec<(String, String)> = common
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), unit_value(v)))
        .collect();
    want.sort();
    let mut got = systemd::entries(&contrib().join("larder-.service.d/hardening.conf"));
    got.sort();
    assert_eq!(got, want);

    for (unit, which) in [
        ("larder-server.service", "server"),
        ("larder-signer.service", "signer"),
        ("larder-sync-watch.service", "sync"),
        ("larder-sync-pull.service", "sync"),
        ("larder-sync-receive.service", "sync"),
        ("larder-sync-keep.service", "sync"),
    ] {
        let want: Vec<String> = serde_json::from_value(nix_eval::module_data(
            "hardening.nix",
            &format!("syscalls.{which}"),
        ))
        .unwrap();
        assert_eq!(
            systemd::values(&contrib().join(unit), "SystemCallFilter"),
            want,
            "{unit}"
        );
    }
}

/// The server and signer run unprivileged; as root, before them, the same
/// command line checks the setup and creates the store DB's WAL index (see
/// README, "Running as an unprivileged user").
#[test]
fn unprivileged_units_check_as_root_first() {
    let exec = |unit: &str, key: &str| systemd::values(&contrib().join(unit), key).remove(0);
    let server = exec("larder-server.service", "ExecStart");
    assert_eq!(
        exec("larder-server.service", "ExecStartPre"),
        format!("+{server} --check-config")
    );
    let signer = exec("larder-signer.service", "ExecStart");
    assert_eq!(
        exec("larder-signer.service", "ExecStartPre"),
        format!("+{}", signer.replacen(" serve ", " check ", 1))
    );
    // The receiver's check is `roots` on its config file.
    let receive = exec("larder-sync-receive.service", "ExecStart");
    let config = receive.split(" receive ").next().unwrap();
    assert_eq!(
        exec("larder-sync-receive.service", "ExecStartPre"),
        format!("+{config} roots")
    );
}
