//! larder-signer: holds Nix signing keys in a process of its own and signs
//! narinfo fingerprints for larder-server over a unix socket, only for
//! paths that really are valid in the store. It links no HTTP stack.

mod metrics;
mod policy;
mod service;
mod socket;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use larder_signer::key_file;
use larder_signer::signing_key::SecretKey;
use larder_store::StoreLocation;
use larder_store::db::StoreDb;
use larder_store::signer_proto::{Reply, Request, read_frame, to_json, write_frame};
use tokio::net::UnixStream;

use crate::policy::Policy;

#[derive(Parser)]
#[command(
    version,
    about = "larder's signing process: keys live here, never in the server"
)]
struct Cli {
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
        #[arg(long, env = "LARDER_SIGNER_SOCKET")]
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
    #[arg(
        long,
        env = "LARDER_SIGNER_SOCKET",
        default_value = "/run/larder/signer.sock"
    )]
    socket: PathBuf,
    /// A Nix secret key file (mode 0600); repeat to sign with several keys (rotation).
    #[arg(
        long = "key-file",
        env = "LARDER_SIGNER_KEY_FILES",
        value_delimiter = ','
    )]
    key_files: Vec<PathBuf>,
    /// Where the store really is: `/` for the host store, or a chroot store's root.
    #[arg(long, env = "LARDER_STORE_ROOT", default_value = "/")]
    store_root: PathBuf,
    /// The store dir recorded in the DB and seen by clients.
    #[arg(long, env = "LARDER_STORE_DIR", default_value = StoreLocation::DEFAULT_STORE_DIR)]
    store_dir: String,
    /// Group (name or gid) given the socket, so that the server's user can connect.
    #[arg(long, env = "LARDER_SIGNER_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// Only these peer uids may ask (checked with SO_PEERCRED); repeatable.
    /// Without it, any process that can open the socket may ask.
    #[arg(
        long = "allow-uid",
        env = "LARDER_SIGNER_ALLOW_UIDS",
        value_delimiter = ','
    )]
    allow_uids: Vec<u32>,
    /// `store`: sign only what matches the store DB exactly. `any`: sign anything (dangerous).
    #[arg(
        long,
        env = "LARDER_SIGNER_POLICY",
        value_enum,
        default_value = "store"
    )]
    policy: Policy,
}

/// The keys and the store DB, each checked.
fn open(args: &ServeArgs) -> Result<(Vec<SecretKey>, StoreDb), String> {
    let keys = key_file::load_all(&args.key_files).map_err(|e| e.to_string())?;
    let location = StoreLocation::with_store_dir(&args.store_root, &args.store_dir);
    let db = StoreDb::open(&location).map_err(|e| format!("store DB: {e}"))?;
    Ok((keys, db))
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let (keys, db) = open(&args)?;
    if args.policy == Policy::Any {
        tracing::warn!(
            "!!! --policy any: signing EVERY well-formed fingerprint without checking the store. \
             Anyone who can reach the socket can forge trusted paths. Never use this in production. !!!"
        );
    }
    let listener = socket::bind(&args.socket, args.socket_group.as_deref())?;
    let names: Vec<&str> = keys.iter().map(|k| k.name()).collect();
    tracing::info!(socket = %args.socket.display(), keys = ?names, policy = ?args.policy, "signer ready");
    let signer = Arc::new(service::Signer {
        metrics: metrics::Metrics::new(&names),
        keys,
        db,
        policy: args.policy,
        allowed_uids: args.allow_uids,
    });
    tokio::select! {
        () = service::serve(listener, signer) => {}
        () = socket::shutdown_signal() => tracing::info!("shutting down"),
    }
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}

async fn request(socket: PathBuf, request: Request) -> Result<Reply, String> {
    let err = |e: &dyn std::fmt::Display| format!("signer socket {}: {e}", socket.display());
    let mut stream = UnixStream::connect(&socket).await.map_err(|e| err(&e))?;
    write_frame(&mut stream, &request)
        .await
        .map_err(|e| err(&e))?;
    read_frame(&mut stream).await.map_err(|e| err(&e))
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Check(args) => {
            let (keys, _db) = open(&args)?;
            let names: Vec<&str> = keys.iter().map(|k| k.name()).collect();
            println!("larder-signer: OK: keys {names:?}, store DB readable");
            Ok(())
        }
        Command::GenerateKey { name, out } => {
            let key = key_file::generate(&name, &out).map_err(|e| e.to_string())?;
            println!("{}", key.public());
            Ok(())
        }
        Command::Request {
            socket,
            fingerprint,
            metrics,
        } => {
            let req = match (fingerprint, metrics) {
                (Some(fingerprint), _) => Request::Sign { fingerprint },
                (None, true) => Request::Metrics,
                (None, false) => Request::PublicKeys,
            };
            let reply = request(socket, req).await?;
            println!("{}", to_json(&reply));
            match reply {
                Reply::Refused(_) => Err("refused".into()),
                _ => Ok(()),
            }
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("larder-signer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder-signer: {e}");
            ExitCode::FAILURE
        }
    }
}
