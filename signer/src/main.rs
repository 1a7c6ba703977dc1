//! larder-signer: holds Nix signing keys in a process of its own and signs
//! narinfo fingerprints for larder-server over a unix socket, only for
//! paths that really are valid in the store. It links no HTTP stack.

mod metrics;
mod policy;
mod service;
mod socket;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use clap::{Args, Parser, Subcommand};
use larder_signer::key_file::{self, KeyFileError};
use larder_signer::signing_key::SecretKey;
use larder_store::StoreLocation;
use larder_store::cli::Convention;
use larder_store::db::{DbError, StoreDb};
use larder_store::signer_proto::{Reply, Request, read_frame, to_json, write_frame};
use thiserror::Error;
use tokio::net::UnixStream;

use crate::policy::Policy;
use crate::socket::SocketError;

/// larder-signer's name and environment prefix (`LARDER_SIGNER_<FLAG>`).
const CONVENTION: Convention = Convention {
    binary: "larder-signer",
    env_prefix: "LARDER_SIGNER",
    actions: &["fingerprint", "metrics", "name", "out"],
};

#[derive(Parser)]
#[command(
    name = "larder-signer",
    version,
    about = "larder's signing process: keys live here, never in the server"
)]
struct Cli {
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `larder_signer=debug,info`.
    #[arg(long, default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve signing requests on a unix socket.
    Serve(ServeArgs),
    /// Check what `serve` would use (keys, store DB), then exit: 0 if it
    /// would start. Run as root (systemd's ExecStartPre=+), it also creates
    /// the store DB's WAL index that an unprivileged signer needs.
    Check(ServeArgs),
    /// Write a new secret key (mode 0600) and print its public key.
    GenerateKey {
        /// Key name, e.g. cache.example.org-1 (rotate by bumping the suffix).
        #[arg(long)]
        name: String,
        /// Where to write the secret key; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Send one request to a running signer and print the reply (JSON).
    Request {
        /// The signer's socket.
        #[arg(long, default_value = "/run/larder/signer.sock")]
        socket: PathBuf,
        /// A fingerprint to sign; without it, ask for the public keys.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Ask for the signer's metrics instead.
        #[arg(long, conflicts_with = "fingerprint")]
        metrics: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Unix socket to listen on (created with mode 0660).
    #[arg(long, default_value = "/run/larder/signer.sock")]
    socket: PathBuf,
    /// A Nix secret key file (mode 0600); repeat (or separate with commas) to sign with several keys (rotation).
    #[arg(long = "key-file", value_delimiter = ',')]
    key_files: Vec<PathBuf>,
    /// Where the store really is: `/` for the host store, or a chroot store's root.
    #[arg(long, default_value = "/")]
    store_root: PathBuf,
    /// The store dir recorded in the DB and seen by clients.
    #[arg(long, default_value = StoreLocation::DEFAULT_STORE_DIR)]
    store_dir: String,
    /// Group (name or gid) given the socket, so that the server's user can connect.
    #[arg(long)]
    socket_group: Option<String>,
    /// Only these peer uids may ask (checked with SO_PEERCRED); repeatable or comma-separated.
    /// Without it, any process that can open the socket may ask.
    #[arg(long = "allow-uid", value_delimiter = ',')]
    allow_uids: Vec<u32>,
    /// `store`: sign only what matches the store DB exactly. `any`: sign anything (dangerous).
    #[arg(long, value_enum, default_value = "store")]
    policy: Policy,
}

/// Why larder-signer stopped; each names the setting or file at fault.
#[derive(Debug, Error)]
enum SignerError {
    #[error(transparent)]
    Keys(#[from] KeyFileError),
    #[error("store-root {root}: {source}")]
    Store { root: String, source: DbError },
    #[error(
        "store-dir {store_dir}: the store DB records paths such as {example}; set --store-dir to their directory"
    )]
    StoreDir { store_dir: String, example: String },
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("signer socket {socket}: {detail}")]
    Request { socket: String, detail: String },
    #[error("the signer refused the request")]
    Refused,
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl SignerError {
    /// A configuration error (a key file, a socket group, the store dir):
    /// exits 2 like clap's usage errors; runtime failures exit 1.
    fn is_config(&self) -> bool {
        matches!(
            self,
            SignerError::Keys(
                KeyFileError::TooOpen { .. } | KeyFileError::Malformed { .. } | KeyFileError::None
            ) | SignerError::StoreDir { .. }
                | SignerError::Socket(SocketError::Group { .. } | SocketError::NotASocket(_))
        )
    }
}

/// The keys and the store DB, each checked.
fn open(args: &ServeArgs) -> Result<(Vec<SecretKey>, StoreDb), SignerError> {
    let keys = key_file::load_all(&args.key_files)?;
    let location = StoreLocation::with_store_dir(&args.store_root, &args.store_dir);
    let db = StoreDb::open(&location).map_err(|source| SignerError::Store {
        root: args.store_root.display().to_string(),
        source,
    })?;
    Ok((keys, db))
}

async fn serve(args: ServeArgs) -> Result<(), SignerError> {
    let (keys, db) = open(&args)?;
    check_store_dir(&args, &db)?;
    if args.policy == Policy::Any {
        tracing::warn!(
            "!!! --policy any: signing EVERY well-formed fingerprint without checking the store. \
             Anyone who can reach the socket can forge trusted paths. Never use this in production. !!!"
        );
    }
    // Dropped on return: removes the socket if it is still ours.
    let bound = socket::bind(&args.socket, args.socket_group.as_deref())?;
    let names: Vec<&str> = keys.iter().map(|k| k.name()).collect();
    tracing::info!(socket = %args.socket.display(), keys = ?names, policy = ?args.policy, "signer ready");
    let signer = Arc::new(service::Signer {
        metrics: metrics::Metrics::new(&names),
        keys: RwLock::new(Arc::new(keys)),
        db,
        policy: args.policy,
        allowed_uids: args.allow_uids,
    });
    tokio::select! {
        () = service::serve(&bound.listener, signer.clone()) => {}
        () = reload_on_hangup(&signer, &args.key_files) => {}
        () = socket::shutdown_signal() => tracing::info!("shutting down"),
    }
    drop(bound);
    Ok(())
}

/// On every SIGHUP, load `--key-file` again (the rotation path without a
/// restart: servers see the new public keys within their
/// `--signer-key-check-secs`). A key set that does not load is logged and
/// the old one kept.
async fn reload_on_hangup(signer: &service::Signer, paths: &[PathBuf]) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return std::future::pending().await;
    };
    while hangup.recv().await.is_some() {
        match key_file::load_all(paths) {
            Ok(keys) => {
                let names: Vec<String> = keys.iter().map(|k| k.name().to_owned()).collect();
                signer.replace_keys(keys);
                tracing::info!(keys = ?names, "SIGHUP: keys reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: keys not reloaded, still signing with the old ones");
            }
        }
    }
    std::future::pending().await
}

/// Refuse a `--store-dir` that matches nothing in the DB (every sign
/// request would then be refused as not in the store).
fn check_store_dir(args: &ServeArgs, db: &StoreDb) -> Result<(), SignerError> {
    let store_err = |source| SignerError::Store {
        root: args.store_root.display().to_string(),
        source,
    };
    if let Some(path) = db.any_path_blocking().map_err(store_err)? {
        let prefix = format!("{}/", args.store_dir.trim_end_matches('/'));
        if !path.starts_with(&prefix) {
            return Err(SignerError::StoreDir {
                store_dir: args.store_dir.clone(),
                example: path,
            });
        }
    }
    Ok(())
}

async fn request(socket: PathBuf, request: Request) -> Result<Reply, SignerError> {
    let err = |e: &dyn std::fmt::Display| SignerError::Request {
        socket: socket.display().to_string(),
        detail: e.to_string(),
    };
    let mut stream = UnixStream::connect(&socket).await.map_err(|e| err(&e))?;
    write_frame(&mut stream, &request)
        .await
        .map_err(|e| err(&e))?;
    read_frame(&mut stream).await.map_err(|e| err(&e))
}

async fn run(cli: Cli) -> Result<(), SignerError> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Check(args) => {
            let (keys, db) = open(&args)?;
            check_store_dir(&args, &db)?;
            socket::check_free(&args.socket)?;
            if let Some(group) = &args.socket_group {
                socket::check_group(group)?;
            }
            let names: Vec<&str> = keys.iter().map(|k| k.name()).collect();
            println!(
                "larder-signer: OK: keys {names:?}, store DB readable, socket {} free",
                args.socket.display()
            );
            Ok(())
        }
        Command::GenerateKey { name, out } => {
            let key = key_file::generate(&name, &out)?;
            println!("{}", key.public());
            Ok(())
        }
        Command::Request {
            socket,
            fingerprint,
            metrics,
        } => {
            let req = match (fingerprint, metrics) {
                (Some(fingerprint), _) => Request::Sign {
                    fingerprint,
                    keys: None,
                },
                (None, true) => Request::Metrics,
                (None, false) => Request::PublicKeys,
            };
            let reply = request(socket, req).await?;
            println!("{}", to_json(&reply));
            match reply {
                Reply::Refused(_) => Err(SignerError::Refused),
                _ => Ok(()),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = larder_store::cli::parse(&CONVENTION);
    larder_store::cli::init_logging(&CONVENTION, &cli.log);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(SignerError::Runtime)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder-signer: {e}");
            if e.is_config() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
