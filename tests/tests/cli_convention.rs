//! One convention for all three binaries (`larder_store::cli`), checked on
//! the real executables: every setting flag has its `<PREFIX>_<FLAG>`
//! variable in `--help`, a `--config` file's keys are the long flags, an
//! unknown key stops the binary naming the file and the key, and the
//! environment beats the file.

use std::process::{Command, Output};

use larder_tests::process::binary;

/// Each binary, a subcommand whose flags are checked, and its prefix.
const BINARIES: &[(&str, &[&str], &str)] = &[
    ("larder-server", &[], "LARDER_SERVER"),
    ("larder-signer", &["serve"], "LARDER_SIGNER"),
    ("larder-sync", &["watch"], "LARDER_SYNC"),
    ("larder-sync", &["pull"], "LARDER_SYNC"),
];

/// Flags that are not settings: no variable.
const ACTIONS: &[&str] = &["help", "version", "check-config", "once", "prune"];

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary(program));
    cmd.args(args);
    for var in [
        "LARDER_SERVER_CONFIG",
        "LARDER_SIGNER_CONFIG",
        "LARDER_SYNC_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .output()
        .expect("run the binary")
}

#[test]
fn help_names_the_variable_of_every_setting_flag() {
    for (program, sub, prefix) in BINARIES {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = run(program, &args, &[]);
        assert!(out.status.success(), "{program} {args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        let flags: Vec<&str> = help
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .filter_map(|l| l.split([' ', '=', '<', '\t']).next())
            .filter(|f| !ACTIONS.contains(f))
            .collect();
        assert!(flags.len() >= 3, "{program}: no flags found in\n{help}");
        for flag in flags {
            let var = format!("{prefix}_{}", flag.to_uppercase().replace('-', "_"));
            assert!(
                help.contains(&format!("[env: {var}")),
                "{program} {sub:?}: --{flag} has no {var} in --help:\n{help}"
            );
        }
        for common in ["CONFIG", "LOG"] {
            assert!(
                help.contains(&format!("{prefix}_{common}")),
                "{program}: {common}"
            );
        }
    }
}

#[test]
fn unknown_config_keys_stop_every_binary_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("larder.toml");
    std::fs::write(&file, "log = \"info\"\nstore-rot = \"/\"\n").unwrap();
    let path = file.to_str().unwrap();
    for (program, sub, _) in BINARIES {
        let mut args = vec!["--config", path];
        args.extend_from_slice(sub);
        args.push("--help");
        let out = run(program, &args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program}: {err}");
        assert!(
            err.contains(path) && err.contains("store-rot"),
            "{program}: {err}"
        );
    }
}

#[test]
fn the_environment_beats_the_file_for_sync_too() {
    let dir = tempfile::tempdir().unwrap();
    let (from_file, from_env) = (
        dir.path().join("file.sqlite"),
        dir.path().join("env.sqlite"),
    );
    let config = dir.path().join("sync.toml");
    std::fs::write(
        &config,
        format!("queue = {:?}\n", from_file.to_str().unwrap()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    // `status` names the queue it opened (and fails: none exists yet).
    let queue_of = |env: &[(&str, &str)]| {
        let out = run("larder-sync", &["status"], env);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let text = queue_of(&[("LARDER_SYNC_CONFIG", config)]);
    assert!(text.contains("file.sqlite"), "{text}");
    let text = queue_of(&[
        ("LARDER_SYNC_CONFIG", config),
        ("LARDER_SYNC_QUEUE", from_env.to_str().unwrap()),
    ]);
    assert!(
        text.contains("env.sqlite") && !text.contains("file.sqlite"),
        "{text}"
    );
}
