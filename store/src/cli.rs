//! The command-line convention every larder binary follows, in one place.
//!
//! A user who learned one binary knows all three:
//!
//! - **Flags** are clap long flags (`--store-root`), with their defaults in
//!   the clap declaration, so `--help` shows them.
//! - **Environment variables** are named after the flags, with one prefix
//!   per binary: `--store-root` of `larder-sync` is `LARDER_SYNC_STORE_ROOT`,
//!   of `larder-server` `LARDER_SERVER_STORE_ROOT`. The names are derived
//!   here for every long flag (declarations never spell them), and `--help`
//!   lists each one.
//! - **`--config FILE`** (or `<PREFIX>_CONFIG`): a TOML file whose keys are
//!   the long flags without the dashes (`store-root = "/"`). A key that is
//!   no flag of the binary is refused, naming the file and the key; a key
//!   of another subcommand is ignored, so one file can serve every
//!   subcommand of a binary. Values are strings, numbers, booleans (for
//!   switches) or arrays (for repeatable flags).
//! - **Precedence:** flags, then environment, then the file, then the
//!   declared defaults. (File values become clap defaults, which clap ranks
//!   below both.)
//! - **`--log FILTER`**: a `tracing-subscriber` filter (`info`,
//!   `larder_server=debug,info`), one line per event on stderr, colours
//!   only when stderr is a terminal ([`init_logging`]).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches};
use thiserror::Error;

/// Which binary a command line belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Convention {
    /// The binary's name as in messages (`larder-sync`).
    pub binary: &'static str,
    /// The environment prefix without the trailing underscore (`LARDER_SYNC`).
    pub env_prefix: &'static str,
    /// Long flags that are actions, not settings (`check-config`): they get
    /// no environment variable and are refused in the file.
    pub actions: &'static [&'static str],
}

/// A command line or `--config` file that cannot be used.
#[derive(Debug, Error)]
pub enum CliError {
    /// The `--config` file could not be read.
    #[error("config file {path}: cannot read it: {source}; check --config / {var}")]
    Read {
        /// The file named by `--config` or the environment.
        path: PathBuf,
        /// The variable that can also name it.
        var: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A key that is no long flag of the binary.
    #[error(
        "config file {path}: unknown key `{key}`; the keys are the long flags of `{binary} --help` without the dashes"
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// The binary, for the `--help` hint.
        binary: &'static str,
    },
    /// A value of a shape no flag takes (a table, a nested array).
    #[error("config file {path}: key `{key}`: {fix}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What to write instead.
        fix: &'static str,
    },
    /// clap refused the merged command line; its message names the flag.
    #[error("{0}")]
    Clap(#[from] clap::Error),
}

impl CliError {
    /// Print the error and exit as clap does: `--help` and `--version` go
    /// to stdout with status 0, usage errors to stderr with status 2.
    pub fn exit(self, convention: &Convention) -> ! {
        match self {
            CliError::Clap(e) => e.exit(),
            other => {
                eprintln!("{}: {other}", convention.binary);
                std::process::exit(2)
            }
        }
    }
}

/// Parse the process's command line under `convention`, or print the error
/// and exit.
pub fn parse<T: CommandFactory + FromArgMatches>(convention: &Convention) -> T {
    parse_with_sections(convention, &[])
}

/// [`parse`], where the `--config` file may also hold the tables named in
/// `sections` (e.g. `view` for `[[view]]`): they are no flags, so they are
/// left for the binary to read and check itself (with its own unknown-key
/// checks naming the file).
pub fn parse_with_sections<T: CommandFactory + FromArgMatches>(
    convention: &Convention,
    sections: &[&str],
) -> T {
    let var = format!("{}_CONFIG", convention.env_prefix);
    let from_env = std::env::var_os(&var).map(PathBuf::from);
    try_parse_with_sections(convention, sections, std::env::args_os(), from_env)
        .unwrap_or_else(|e| e.exit(convention))
}

/// Parse `args` (program name first) under `convention`. `config_from_env`
/// is the value of `<PREFIX>_CONFIG`, used when the arguments name no
/// `--config`.
pub fn try_parse_from<T, I, A>(
    convention: &Convention,
    args: I,
    config_from_env: Option<PathBuf>,
) -> Result<T, CliError>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    try_parse_with_sections(convention, &[], args, config_from_env)
}

/// [`try_parse_from`] with the file's `sections` left to the caller (see
/// [`parse_with_sections`]).
pub fn try_parse_with_sections<T, I, A>(
    convention: &Convention,
    sections: &[&str],
    args: I,
    config_from_env: Option<PathBuf>,
) -> Result<T, CliError>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = with_convention(T::command(), convention, true);
    if let Some(path) = config_path(&args).or(config_from_env) {
        command = with_file(command, convention, &path, sections)?;
    }
    let matches = command.try_get_matches_from(args)?;
    Ok(T::from_arg_matches(&matches)?)
}

/// `command` with the derived environment variable on every long flag
/// that is a setting, and a global `--config` if it declares none.
pub fn with_convention(command: Command, convention: &Convention, top: bool) -> Command {
    let prefix = convention.env_prefix;
    let mut command = command
        .mut_args(|arg| match arg.get_long() {
            // `--config` too: its variable is `<PREFIX>_CONFIG`.
            Some(long) if long == "config" || !is_action(convention, long) => {
                let var = format!("{prefix}_{}", long.to_uppercase().replace('-', "_"));
                arg.env(var)
            }
            _ => arg,
        })
        .mut_subcommands(|sub| with_convention(sub, convention, false));
    if top
        && command
            .get_arguments()
            .all(|a| a.get_long() != Some("config"))
    {
        command = command.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .global(true)
                .env(format!("{prefix}_CONFIG"))
                .help("TOML file whose keys are the long flags (`store-root = \"/\"`); unknown keys are refused"),
        );
    }
    command
}

/// Whether `long` is a flag that is not a setting.
fn is_action(convention: &Convention, long: &str) -> bool {
    matches!(long, "help" | "version" | "config") || convention.actions.contains(&long)
}

/// The value of the last `--config FILE` / `--config=FILE` before `--`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut found = None;
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let Some(arg) = arg.to_str() else { continue };
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            found = iter.next().map(PathBuf::from);
        } else if let Some(value) = arg.strip_prefix("--config=") {
            found = Some(PathBuf::from(value));
        }
    }
    found
}

/// `command` with the file's values as its flags' defaults.
fn with_file(
    command: Command,
    convention: &Convention,
    path: &Path,
    sections: &[&str],
) -> Result<Command, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_owned(),
        var: format!("{}_CONFIG", convention.env_prefix),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|source| CliError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let mut settings = Vec::with_capacity(table.len());
    for (key, value) in &table {
        if sections.contains(&key.as_str()) {
            continue;
        }
        if is_action(convention, key) || !knows(&command, key) {
            return Err(CliError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
                binary: convention.binary,
            });
        }
        let values = strings(value).map_err(|fix| CliError::BadValue {
            path: path.to_owned(),
            key: key.clone(),
            fix,
        })?;
        if value.is_array() && !takes_many(&command, key) {
            return Err(CliError::BadValue {
                path: path.to_owned(),
                key: key.clone(),
                fix: "this flag takes one value, not an array",
            });
        }
        settings.push((key.clone(), values));
    }
    Ok(set_defaults(command, &settings))
}

/// Whether `long` is a flag of `command` or of one of its subcommands.
fn knows(command: &Command, long: &str) -> bool {
    command.get_arguments().any(|a| a.get_long() == Some(long))
        || command.get_subcommands().any(|s| knows(s, long))
}

/// Whether the flag `long` (in `command` or a subcommand) takes several
/// values: repeatable (`ArgAction::Append`) or more than one per use.
fn takes_many(command: &Command, long: &str) -> bool {
    command.get_arguments().any(|a| {
        a.get_long() == Some(long)
            && (matches!(a.get_action(), ArgAction::Append)
                || a.get_num_args().is_some_and(|r| r.max_values() > 1))
    }) || command.get_subcommands().any(|s| takes_many(s, long))
}

/// A TOML value as the strings clap parses.
fn strings(value: &toml::Value) -> Result<Vec<String>, &'static str> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        _ => Err("use a string, number, boolean, or an array of them"),
    };
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

/// Every flag named in `settings`, in `command` and its subcommands, gets
/// the file's values as its default.
fn set_defaults(command: Command, settings: &[(String, Vec<String>)]) -> Command {
    command
        .mut_args(|arg| {
            let Some((_, values)) = settings
                .iter()
                .find(|(key, _)| arg.get_long() == Some(key.as_str()))
            else {
                return arg;
            };
            // clap counts only explicit values towards `required`: a
            // required flag (`watch --to`) given by the file is no longer
            // required on the command line.
            let arg = arg.required(false);
            match arg.get_action() {
                // A switch's "default" is its state when absent.
                ArgAction::SetTrue | ArgAction::SetFalse => {
                    arg.default_value(values.last().cloned().unwrap_or_default())
                }
                _ => arg.default_values(values.clone()),
            }
        })
        .mut_subcommands(|sub| set_defaults(sub, settings))
}

/// The logging every larder binary uses: `filter` in `tracing-subscriber`
/// syntax (a bad one is reported and `info` used instead), one line per
/// event on stderr, ANSI colours only when stderr is a terminal; a panic is
/// one counted `error` line too ([`crate::panics`]).
pub fn init_logging(convention: &Convention, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!(
            "{}: log filter {filter:?}: {e}; using \"info\"",
            convention.binary
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    crate::panics::install(convention.binary);
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::{Parser, Subcommand};

    use super::*;

    const TOY: Convention = Convention {
        binary: "toy",
        env_prefix: "LARDER_TOY",
        actions: &["check"],
    };

    #[derive(Debug, Parser)]
    struct Toy {
        #[arg(long, default_value = "/", global = true)]
        store_root: PathBuf,
        #[arg(long, default_value_t = 30)]
        priority: u32,
        #[arg(long)]
        verbose: bool,
        #[arg(long = "key")]
        keys: Vec<String>,
        #[arg(long)]
        check: bool,
        #[command(subcommand)]
        command: Option<Sub>,
    }

    #[derive(Debug, Subcommand)]
    enum Sub {
        Watch {
            #[arg(long)]
            to: Option<String>,
        },
        Push {
            #[arg(long)]
            target: String,
        },
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn parse(args: &[&str], config: Option<&Path>) -> Result<Toy, CliError> {
        try_parse_from(
            &TOY,
            std::iter::once("toy").chain(args.iter().copied()),
            config.map(Path::to_owned),
        )
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let f = file("priority = 50\nverbose = true\nkey = [\"a\", \"b\"]\nto = \"ssh://x\"\n");
        let toy = parse(&[], Some(f.path())).unwrap();
        assert_eq!((toy.priority, toy.verbose), (50, true));
        assert_eq!(toy.keys, ["a", "b"]);
        let path = f.path().to_str().unwrap();
        let toy = parse(&["--config", path, "--priority", "7", "watch"], None).unwrap();
        assert_eq!(toy.priority, 7);
        assert!(matches!(toy.command, Some(Sub::Watch { to: Some(ref t) }) if t == "ssh://x"));
        let toy = parse(&[], None).unwrap();
        assert_eq!((toy.priority, toy.verbose), (30, false));
    }

    /// A required flag may come from the file (the NixOS module puts
    /// `to` of `larder-sync watch` there), and is still required without it.
    #[test]
    fn a_required_flag_may_come_from_the_file() {
        let f = file("target = \"ssh://x\"\n");
        let toy = parse(&["push"], Some(f.path())).unwrap();
        assert!(matches!(toy.command, Some(Sub::Push { ref target }) if target == "ssh://x"));
        assert!(matches!(parse(&["push"], None), Err(CliError::Clap(_))));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let f = file("priorty = 3\n");
        let err = parse(&[], Some(f.path())).unwrap_err().to_string();
        assert!(
            err.contains("priorty") && err.contains(&*f.path().to_string_lossy()),
            "{err}"
        );
        for action in ["config = \"/etc/x\"\n", "check = true\n"] {
            let f = file(action);
            assert!(matches!(
                parse(&[], Some(f.path())),
                Err(CliError::UnknownKey { .. })
            ));
        }
        let f = file("priority = { a = 1 }\n");
        assert!(matches!(
            parse(&[], Some(f.path())),
            Err(CliError::BadValue { .. })
        ));
        for array in ["priority = [1, 2]\n", "to = [\"a\", \"b\"]\n"] {
            let f = file(array);
            let err = parse(&[], Some(f.path())).unwrap_err();
            assert!(matches!(err, CliError::BadValue { .. }), "{err}");
            let err = err.to_string();
            assert!(err.contains(&*f.path().to_string_lossy()) && err.contains("not an array"));
        }
        let f = file("priority = \"lots\"\n");
        assert!(matches!(parse(&[], Some(f.path())), Err(CliError::Clap(_))));
        let f = file("priority = \n");
        assert!(matches!(
            parse(&[], Some(f.path())),
            Err(CliError::Parse { .. })
        ));
        let missing = Path::new("/nonexistent/larder.toml");
        let err = parse(&[], Some(missing)).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/larder.toml") && err.contains("LARDER_TOY_CONFIG"),
            "{err}"
        );
    }

    #[test]
    fn every_long_flag_gets_its_environment_variable_in_help() {
        let mut command = with_convention(Toy::command(), &TOY, true);
        let help = command.render_long_help().to_string();
        for var in [
            "LARDER_TOY_STORE_ROOT",
            "LARDER_TOY_PRIORITY",
            "LARDER_TOY_CONFIG",
        ] {
            assert!(help.contains(var), "{var} missing from:\n{help}");
        }
        let watch = command.find_subcommand_mut("watch").unwrap();
        let help = watch.render_long_help().to_string();
        assert!(help.contains("LARDER_TOY_TO"), "{help}");
        let help = command.render_long_help().to_string();
        assert!(
            !help.contains("LARDER_TOY_CHECK"),
            "an action is no setting:\n{help}"
        );
    }
}
