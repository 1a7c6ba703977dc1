//! `larder-sync export` and `larder-sync s3-gc`: the one-shot side of the
//! `s3://` target ([`larder_sync::s3`]).

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use larder_store::StoreLocation;
use larder_store::db::StoreDb;
use larder_sync::retention::{self, Closures};
use larder_sync::s3::export::Exporter;
use larder_sync::s3::{Bucket, Credentials, S3Target, gc};
use larder_sync::uri::{StoreUri, store_path_arg};
use larder_sync::{Result, SyncError};

use crate::cli::{Cli, ExportArgs, S3GcArgs};

fn s3_target(to: &str) -> Result<S3Target> {
    let uri: StoreUri = to.parse()?;
    if uri.scheme() != "s3" {
        return Err(SyncError::Usage(format!(
            "--to {}: export and s3-gc write S3 buckets (s3://BUCKET?endpoint=…&region=…); \
             for other stores use `nix copy` or `larder-sync watch`",
            larder_sync::uri::redact_userinfo(to)
        )));
    }
    S3Target::parse(&uri)
}

pub fn export(cli: &Cli, args: &ExportArgs) -> Result<ExitCode> {
    let target = s3_target(&args.to)?;
    let location = StoreLocation::new(&cli.store_root);
    let paths = args
        .paths
        .iter()
        .map(|p| store_path_arg(&location, p))
        .collect::<Result<Vec<_>>>()?;
    let mut exporter = Exporter::open(target, &location, args.signer_socket.clone())?;
    let report = exporter.export(&paths)?;
    for p in &report.exported {
        say!("exported {p}");
    }
    for p in &report.resigned {
        say!("re-signed {p}");
    }
    tracing::info!(
        exported = report.exported.len(),
        resigned = report.resigned.len(),
        present = report.present,
        nar_bytes = report.nar_bytes,
        file_bytes = report.file_bytes,
        "export done"
    );
    Ok(ExitCode::SUCCESS)
}

pub fn s3_gc(cli: &Cli, args: &S3GcArgs) -> Result<ExitCode> {
    let target = s3_target(&args.to)?;
    let location = StoreLocation::new(&cli.store_root);
    let gc_root_dir = args
        .gc_root_dir
        .clone()
        .unwrap_or_else(|| retention::default_gc_root_dir(&location));
    let mut starts = Vec::new();
    for source in retention::sources(&gc_root_dir)? {
        starts.extend(
            retention::roots_of(&gc_root_dir, &source)?
                .into_iter()
                .map(|r| r.target),
        );
    }
    for root in &args.roots {
        starts.push(store_path_arg(&location, root)?);
    }
    if starts.is_empty() {
        return Err(SyncError::Usage(format!(
            "s3-gc: no roots under {} and no --root: refusing to empty the bucket. Point \
             --gc-root-dir at larder's GC-root directory, or name what to keep with --root",
            gc_root_dir.display()
        )));
    }
    let db = StoreDb::open(&location)?;
    let mut valid_starts = Vec::new();
    for start in &starts {
        let valid = match location.parse_path(start) {
            Ok(sp) => db.query_valid_blocking(&sp)?,
            Err(_) => false,
        };
        if valid {
            valid_starts.push(start);
        }
    }
    if valid_starts.is_empty() {
        // Every root dangles (its path is gone from this store), or the
        // roots belong to another store than --store-root: keeping nothing
        // would empty the bucket, the very thing the check above prevents.
        return Err(SyncError::Usage(format!(
            "s3-gc: none of the {} roots (under {} and --root) is a valid path in the store at \
             {}: refusing to empty the bucket. Are --gc-root-dir and --store-root the same store's?",
            starts.len(),
            gc_root_dir.display(),
            cli.store_root.display()
        )));
    }
    let mut closures = Closures::new(db);
    let mut keep = HashSet::new();
    for start in valid_starts {
        for path in closures.closure(start)? {
            if let Ok(sp) = location.parse_path(&path) {
                keep.insert(sp.hash().to_string());
            }
        }
    }
    let bucket = Bucket::open(target, &Credentials::from_env()?)?;
    let report = gc::collect(
        &bucket,
        &keep,
        Duration::from_secs(args.grace_secs),
        args.dry_run,
    )?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for key in &report.deleted {
        say!("{verb} {key}");
    }
    if args.dry_run {
        tracing::info!(
            would_delete = report.deleted.len(),
            kept = report.kept,
            young = report.young,
            "s3-gc dry run done: nothing deleted"
        );
    } else {
        tracing::info!(
            deleted = report.deleted.len(),
            kept = report.kept,
            young = report.young,
            "s3-gc done"
        );
    }
    Ok(ExitCode::SUCCESS)
}
