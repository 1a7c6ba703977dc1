//! Is the push target usable? Checked when a watcher starts (before
//! `watch-exec` runs its command), so a wrong URL or token fails in
//! seconds with a clear error instead of after `--drain-timeout-secs`.
//!
//! - `http(s)://`: `GET <uri>/nix-cache-info` with curl and Nix's own
//!   `netrc-file` (the credentials `nix copy` will send as Basic auth):
//!   200 is a cache, 401/403 a refused token, 404 a wrong path.
//! - `s3://`: the bucket answers with the credentials, and has (or now
//!   gets) its `nix-cache-info`.
//! - everything else: `nix store ping --store URI` (for ssh-ng this logs in
//!   and talks to the remote nix-daemon).

use std::path::Path;
use std::process::Command;

use crate::error::{Result, SyncError};
use crate::nix;
use crate::s3::{Bucket, Credentials, S3Target};
use crate::uri::StoreUri;

/// Seconds curl may take to connect / in all.
const CONNECT_TIMEOUT_SECS: &str = "10";
const TOTAL_TIMEOUT_SECS: &str = "30";

/// Check that `target` answers as a Nix store; the error says what is wrong.
pub fn check(target: &StoreUri) -> Result<()> {
    let fail = |detail: String| SyncError::TargetCheck {
        target: target.to_string(),
        detail,
    };
    match target.scheme() {
        "http" | "https" => check_http(target).map_err(fail),
        "s3" => check_s3(target),
        _ => nix::ping(target).map_err(|e| fail(e.to_string())),
    }
}

/// Build the client, then HEAD (or write) `nix-cache-info`: catches a bad
/// URI, missing credentials, a wrong endpoint or bucket, and refused keys.
fn check_s3(target: &StoreUri) -> Result<()> {
    let target = S3Target::parse(target)?;
    let bucket = Bucket::open(target, &Credentials::from_env()?)?;
    bucket.check_and_init(larder_store::StoreLocation::new("/").store_dir())
}

/// The CA bundle Nix's own downloads trust when the environment names
/// one: `NIX_SSL_CERT_FILE`, else `SSL_CERT_FILE` (the order of Nix 2.8's
/// `getDefaultSSLCertFile`), so a cache with a private CA that `nix copy`
/// reaches is not refused by this check. None: curl's own default.
fn nix_ca_file() -> Option<std::ffi::OsString> {
    ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"]
        .into_iter()
        .find_map(std::env::var_os)
        .filter(|f| !f.is_empty())
}

fn check_http(target: &StoreUri) -> std::result::Result<(), String> {
    let base = target.as_str().split('?').next().unwrap_or_default();
    let url = format!("{}/nix-cache-info", base.trim_end_matches('/'));
    let netrc = nix::netrc_file().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--connect-timeout", CONNECT_TIMEOUT_SECS])
        .args(["--max-time", TOTAL_TIMEOUT_SECS]);
    if let Some(file) = netrc.as_deref().filter(|f| f.exists()) {
        cmd.arg("--netrc-file").arg(file);
    }
    if let Some(file) = nix_ca_file() {
        cmd.arg("--cacert").arg(file);
    }
    cmd.arg(&url);
    let out = match nix::run(&mut cmd) {
        Ok(out) => out,
        Err(SyncError::Spawn { .. }) => {
            // No curl: Nix's own check is weaker (it may answer from its
            // cache of cache-info) but still catches an unreachable host.
            return nix::ping(target).map_err(|e| e.to_string());
        }
        Err(SyncError::NixFailed { stderr, .. }) => {
            return Err(format!("cannot reach {url}: {}", stderr.trim()));
        }
        Err(e) => return Err(e.to_string()),
    };
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match code.as_str() {
        "200" => Ok(()),
        "401" | "403" => Err(format!(
            "GET {url} answered HTTP {code}: the cache refused the credentials. Check the line for \
             this host in Nix's netrc-file ({}): `machine HOST login NAME password TOKEN`",
            describe_netrc(netrc.as_deref())
        )),
        "404" => Err(format!(
            "GET {url} answered HTTP 404: there is no binary cache at this URL (check the host and path)"
        )),
        other => Err(format!("GET {url} answered HTTP {other}")),
    }
}

fn describe_netrc(netrc: Option<&Path>) -> String {
    match netrc {
        Some(f) if f.exists() => f.display().to_string(),
        Some(f) => format!("{}, which does not exist", f.display()),
        None => "not set".into(),
    }
}
