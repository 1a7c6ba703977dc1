//! The `s3://` target itself: its URI and settings ([`S3Target`]), the
//! credentials ([`Credentials`]) and an open bucket ([`Bucket`]), below the
//! export and the GC that use them.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::error::{Result, SyncError};
use crate::uri::StoreUri;

/// Default zstd level of exported NARs (`compression-level=`): level 3 is
/// zstd's own default, several times faster than xz at a similar ratio.
pub const DEFAULT_LEVEL: i32 = 3;
/// Default multipart part size in MiB (`part-size-mib=`); S3 needs ≥ 5.
pub const DEFAULT_PART_MIB: usize = 8;

/// Query parameters an `s3://` URI may carry.
const PARAMS: &[&str] = &["endpoint", "region", "compression-level", "part-size-mib"];

/// An `s3://` target, parsed and checked: bucket, endpoint, region, and the
/// export settings. Holds no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Target {
    /// The URI as given (safe to log: it carries no secret).
    pub uri: String,
    pub bucket: String,
    /// The S3 API endpoint, e.g. `http://127.0.0.1:3900`; `None` is AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// zstd level of the NARs, 1..=19.
    pub level: i32,
    /// Multipart part size in bytes.
    pub part_size: usize,
}

impl S3Target {
    /// Parse `s3://BUCKET?endpoint=URL&region=R&compression-level=N&part-size-mib=M`.
    ///
    /// Every parameter may appear once, with a non-empty value. The
    /// endpoint must be a plain `http(s)://HOST[:PORT][/]`: a user name or
    /// password in it is refused (credentials come only from the
    /// environment), and so is anything the S3 client could not sign
    /// requests for (it panics on an empty or malformed host).
    ///
    /// # Errors
    /// [`SyncError::Usage`] naming the bad part and the expected shape; the
    /// URI it repeats has any `user:password@` replaced by `***@`.
    pub fn parse(uri: &StoreUri) -> Result<S3Target> {
        let shown = shown_uri(uri.as_str());
        let bad = |what: String| {
            SyncError::Usage(format!(
                "{shown}: {what}; expected s3://BUCKET?endpoint=http://HOST:PORT&region=REGION \
                 (optional: compression-level=1..19, part-size-mib=5..4096)"
            ))
        };
        if crate::uri::has_userinfo(uri.as_str()) {
            return Err(bad(CREDENTIALS_IN_URI.to_owned()));
        }
        let rest = uri.as_str().strip_prefix("s3://").unwrap_or_default();
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if !bucket_name_ok(bucket) {
            return Err(bad(format!(
                "bucket name {bucket:?} is not 3-63 of [a-z0-9.-], starting and ending with a \
                 letter or digit, without `..`"
            )));
        }
        let mut seen: Vec<&str> = Vec::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
            if !PARAMS.contains(&key) {
                return Err(bad(format!("unknown parameter {key:?}")));
            }
            if seen.contains(&key) {
                return Err(bad(format!("parameter {key:?} is given twice")));
            }
            if value.is_empty() {
                return Err(bad(format!("parameter {key:?} has no value")));
            }
            seen.push(key);
        }
        let endpoint = match uri.param("endpoint") {
            None => None,
            Some(e) => Some(endpoint_url(e).map_err(bad)?),
        };
        let level = match uri.param("compression-level") {
            None => DEFAULT_LEVEL,
            Some(l) => l
                .parse()
                .ok()
                .filter(|l| (1..=19).contains(l))
                .ok_or_else(|| bad(format!("compression-level {l:?} is not 1..19")))?,
        };
        let part_mib: usize = match uri.param("part-size-mib") {
            None => DEFAULT_PART_MIB,
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| (5..=4096).contains(p))
                .ok_or_else(|| bad(format!("part-size-mib {p:?} is not 5..4096")))?,
        };
        let region = uri.param("region").unwrap_or("us-east-1");
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(format!("region {region:?} is not [A-Za-z0-9_-]")));
        }
        Ok(S3Target {
            uri: uri.to_string(),
            bucket: bucket.to_owned(),
            endpoint,
            region: region.to_owned(),
            level,
            part_size: part_mib << 20,
        })
    }
}

/// `uri` safe to repeat in an error: no `user:password@`, and the values
/// of parameters we do not know shown as `***` (a refused
/// `secret-access-key=…` or `token=…` is the secret itself).
fn shown_uri(uri: &str) -> String {
    let uri = crate::uri::redact_userinfo(uri);
    let Some((base, query)) = uri.split_once('?') else {
        return uri.into_owned();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if !PARAMS.contains(&k) => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// What a URI with a user name or password in it is told (without
/// repeating them).
const CREDENTIALS_IN_URI: &str = "the URI carries a user name or password (shown as ***): \
credentials are never taken from a URI, which ends up in logs, `ps` and unit files; give them \
as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or their _FILE variants) instead";

/// S3's bucket naming rules that matter for a path-style URL: 3-63 of
/// `[a-z0-9.-]`, first and last a letter or digit, no `..`.
fn bucket_name_ok(bucket: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-'))
        && edge_ok(bucket.chars().next())
        && edge_ok(bucket.chars().last())
        && !bucket.contains("..")
}

/// `endpoint=`, checked and rebuilt as `scheme://host[:port]`: an
/// http(s) URL with a host, and nothing else (no user name or password, no
/// path, query or fragment).
fn endpoint_url(endpoint: &str) -> std::result::Result<String, String> {
    let not_url = || {
        format!(
            "endpoint {endpoint:?} is not an http(s):// URL with a host (e.g. http://127.0.0.1:3900)"
        )
    };
    let url = reqwest::Url::parse(endpoint).map_err(|_| not_url())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(not_url());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CREDENTIALS_IN_URI.to_owned());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(not_url)?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "endpoint {endpoint:?} has a path, query or fragment; give only http(s)://HOST[:PORT]"
        ));
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// S3 credentials, read from the environment or from files it names.
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// What the credential error says to do.
pub const CREDENTIALS_HINT: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
AWS_ACCESS_KEY_ID_FILE and AWS_SECRET_ACCESS_KEY_FILE naming files that hold them (the NixOS \
module passes them with systemd's LoadCredential); never on the command line";

/// Largest credentials file read: S3 keys are tens of bytes and session
/// tokens a few kilobytes; a bigger file (or `/dev/zero`) is a mistake.
const MAX_CREDENTIAL_FILE: u64 = 16 << 10;

impl Credentials {
    /// `NAME` from `env`, else the contents of the file named by
    /// `NAME_FILE` without surrounding whitespace (a trailing newline is
    /// normal). Both set is refused (which one is meant?), and so is a
    /// value that is not printable ASCII without spaces: it could only
    /// fail later, in the S3 client's request signing. Errors name the
    /// variable and the file, never the value.
    fn variable(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<String>> {
        let fail = |detail: String| SyncError::S3Credentials { detail };
        let direct = env(name).filter(|v| !v.is_empty());
        let file = env(&format!("{name}_FILE"))
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
        let value = match (direct, file) {
            (Some(_), Some(_)) => {
                return Err(fail(format!(
                    "both {name} and {name}_FILE are set: unset one of them"
                )));
            }
            (Some(v), None) => v,
            (None, None) => return Ok(None),
            (None, Some(file)) => {
                let shown = file.display();
                let text = read_credential_file(&file)
                    .map_err(|e| fail(format!("cannot read {name}_FILE={shown}: {e}")))?;
                let text = text.trim().to_owned();
                if text.is_empty() {
                    return Err(fail(format!(
                        "{name}_FILE={shown} is empty: write the value into it"
                    )));
                }
                text
            }
        };
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(format!(
                "{name} (or the file {name}_FILE names) holds spaces, control characters or \
                 non-ASCII bytes inside the value; S3 keys are printable ASCII"
            )));
        }
        Ok(Some(value))
    }

    /// Read the credentials from the process environment.
    ///
    /// # Errors
    /// [`SyncError::S3Credentials`] when one is missing, set twice, malformed
    /// or its file unreadable.
    pub fn from_env() -> Result<Credentials> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// [`Credentials::from_env`] with `env` in place of the environment.
    ///
    /// # Errors
    /// As [`Credentials::from_env`].
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials> {
        let missing = |name: &str| SyncError::S3Credentials {
            detail: format!("{name} is not set: {CREDENTIALS_HINT}"),
        };
        Ok(Credentials {
            access_key_id: Self::variable(env, "AWS_ACCESS_KEY_ID")?
                .ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            secret_access_key: Self::variable(env, "AWS_SECRET_ACCESS_KEY")?
                .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
            session_token: Self::variable(env, "AWS_SESSION_TOKEN")?,
        })
    }
}

/// A credentials file's text: a regular file (not a FIFO or `/dev/zero`)
/// of at most [`MAX_CREDENTIAL_FILE`] bytes of UTF-8.
fn read_credential_file(file: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let opened = std::fs::File::open(file)?;
    let meta = opened.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    opened
        .take(MAX_CREDENTIAL_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|_| std::io::Error::other("not UTF-8 text"))?;
    if text.len() as u64 > MAX_CREDENTIAL_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CREDENTIAL_FILE} bytes; it should hold one key"
        )));
    }
    Ok(text)
}

/// A connected bucket: the `object_store` client and a runtime to drive it
/// from larder-sync's threads.
pub struct Bucket {
    pub target: S3Target,
    pub store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    /// Build the client for `target` with `credentials` (no request yet).
    ///
    /// # Errors
    /// [`SyncError::S3`] when the client cannot be built.
    pub fn open(target: S3Target, credentials: &Credentials) -> Result<Bucket> {
        // reqwest is built without a TLS provider of its own: use ring, as
        // the rest of larder does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&target.bucket)
            .with_region(&target.region)
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key);
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &target.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = builder
            .build()
            .map_err(|e| s3_error(&target, "configure", &e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("larder-s3")
            .enable_all()
            .build()
            .map_err(|e| SyncError::S3 {
                target: target.uri.clone(),
                detail: format!("cannot start the I/O runtime: {e}"),
            })?;
        Ok(Bucket {
            target,
            store: Arc::new(store),
            runtime,
        })
    }

    /// Run `future` to completion on this bucket's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    /// [`SyncError::S3`] for anything but "not found".
    pub fn exists(&self, key: &str) -> Result<bool> {
        match self.block_on(self.store.head(&ObjectPath::from(key))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3_error(&self.target, &format!("HEAD {key}"), &e)),
        }
    }

    /// Write a small object in one request.
    ///
    /// # Errors
    /// [`SyncError::S3`].
    pub fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        self.block_on(
            self.store
                .put(&ObjectPath::from(key), PutPayload::from(body)),
        )
        .map(drop)
        .map_err(|e| s3_error(&self.target, &format!("PUT {key}"), &e))
    }

    /// Read a small object; `None` when it does not exist.
    ///
    /// # Errors
    /// [`SyncError::S3`].
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = ObjectPath::from(key);
        let result = self.block_on(async {
            let got = self.store.get(&path).await?;
            got.bytes().await
        });
        match result {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(&self.target, &format!("GET {key}"), &e)),
        }
    }

    /// Read an object of at most `max` bytes; `None` when it does not
    /// exist, [`TooBig`] (its size) when it is larger: its body is then
    /// never read, so a hostile object cannot fill the memory.
    ///
    /// # Errors
    /// [`SyncError::S3`].
    pub fn get_small(
        &self,
        key: &str,
        max: u64,
    ) -> Result<Option<std::result::Result<Vec<u8>, TooBig>>> {
        let path = ObjectPath::from(key);
        let result = self.block_on(async {
            let got = self.store.get(&path).await?;
            if got.meta.size > max {
                return Ok(Err(TooBig(got.meta.size)));
            }
            got.bytes().await.map(|b| Ok(b.to_vec()))
        });
        match result {
            Ok(r) => Ok(Some(r)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(&self.target, &format!("GET {key}"), &e)),
        }
    }

    /// Delete an object (absent is fine).
    ///
    /// # Errors
    /// [`SyncError::S3`].
    pub fn delete(&self, key: &str) -> Result<()> {
        self.delete_path(&ObjectPath::from(key))
    }

    /// Delete the object at `path` exactly as listed: [`Bucket::delete`]
    /// would escape a listed key's `%`, `#` or space again and miss it.
    ///
    /// # Errors
    /// [`SyncError::S3`].
    pub fn delete_path(&self, path: &ObjectPath) -> Result<()> {
        match self.block_on(self.store.delete(path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(&self.target, &format!("DELETE {path}"), &e)),
        }
    }

    /// Check that the bucket answers with these credentials, and write
    /// `nix-cache-info` if it is missing: the check a watcher makes before
    /// it starts, and the first step of every export.
    ///
    /// # Errors
    /// [`SyncError::S3`], one line saying what to fix first (endpoint,
    /// bucket, region, credentials).
    pub fn check_and_init(&self, store_dir: &str) -> Result<()> {
        if !self.exists("nix-cache-info")? {
            let info = format!("StoreDir: {store_dir}\nWantMassQuery: 1\nPriority: 40\n");
            self.put("nix-cache-info", info.into_bytes())?;
        }
        Ok(())
    }
}

/// The size in bytes of an object [`Bucket::get_small`] did not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig(pub u64);

/// Largest narinfo read back from a bucket: a narinfo is a few hundred
/// bytes (a few kilobytes with thousands of references).
pub const MAX_NARINFO: u64 = 1 << 20;

/// An `object_store` error as a [`SyncError::S3`] on one line: the hint
/// for the usual causes first (what to fix), then `object_store`'s own
/// text. It names the bucket and key, never a credential (`object_store`
/// does not print request headers).
pub fn s3_error(target: &S3Target, what: &str, e: &object_store::Error) -> SyncError {
    // Response bodies (an HTML 404 page) may span lines: keep one line.
    let text = error_chain(e)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let hint = if text.contains("InvalidAccessKeyId")
        || text.contains("SignatureDoesNotMatch")
        || text.contains("AccessDenied")
        || text.contains("403")
        || text.contains("Forbidden")
    {
        Some(format!(
            "the S3 endpoint refused the credentials (wrong key, or the key has no \
             read/write permission on bucket {}): {CREDENTIALS_HINT}",
            target.bucket
        ))
    } else if text.contains("NoSuchBucket") || text.contains("bucket") && text.contains("404") {
        Some(format!(
            "there is no bucket {:?} at this endpoint: create it, or fix the bucket \
             name in the s3:// URI",
            target.bucket
        ))
    } else if text.contains("error sending request")
        || text.contains("Connection refused")
        || text.contains("connect")
    {
        Some(format!(
            "cannot connect to the endpoint {}: check `endpoint=` in the s3:// URI \
             and that the S3 server runs",
            target.endpoint.as_deref().unwrap_or("(AWS)")
        ))
    } else if text.contains("400 Bad Request") {
        // Garage answers a request signed for another region with a 400
        // and (to a HEAD) no body at all.
        Some(format!(
            "the endpoint rejected the request (HTTP 400): is `region=` the server's region \
             (Garage: `s3_region` in garage.toml)? This URI signs for {:?}",
            target.region
        ))
    } else if what.starts_with("PUT") && text.contains("404") {
        Some(
            "the endpoint answered 404 to an upload: is `endpoint=` the S3 API (Garage: \
             `[s3_api] api_bind_addr`), not the bucket's website endpoint?"
                .to_owned(),
        )
    } else {
        None
    };
    let detail = match hint {
        Some(hint) => format!("{what}: {hint} ({text})"),
        None => format!("{what}: {text}"),
    };
    SyncError::S3 {
        target: target.uri.clone(),
        detail,
    }
}

/// `e` and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Result<S3Target> {
        S3Target::parse(&uri.parse().unwrap())
    }

    #[test]
    fn uris_parse_with_defaults_and_bad_ones_say_why() {
        let t = parse("s3://cache?endpoint=http://127.0.0.1:3900&region=garage").unwrap();
        assert_eq!(t.bucket, "cache");
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(t.region, "garage");
        assert_eq!(
            (t.level, t.part_size),
            (DEFAULT_LEVEL, DEFAULT_PART_MIB << 20)
        );
        let t = parse("s3://my.cache?compression-level=9&part-size-mib=16").unwrap();
        assert_eq!(
            (t.level, t.part_size, t.region.as_str()),
            (9, 16 << 20, "us-east-1")
        );
        for (uri, says) in [
            ("s3://Cache", "bucket name"),
            ("s3://ab", "bucket name"),
            ("s3://cache?endpoint=127.0.0.1:3900", "not an http(s)"),
            ("s3://cache?compression-level=30", "compression-level"),
            ("s3://cache?part-size-mib=1", "part-size-mib"),
            ("s3://cache?secret=x", "unknown parameter"),
        ] {
            let err = parse(uri).unwrap_err().to_string();
            assert!(err.contains(says), "{uri}: {err}");
            assert!(err.contains("expected s3://BUCKET"), "{uri}: {err}");
        }
    }

    #[test]
    fn credentials_in_the_uri_are_refused_and_never_repeated() {
        for uri in [
            "s3://GKid:s3cr3t@cache?endpoint=http://127.0.0.1:3900",
            "s3://cache?endpoint=http://GKid:s3cr3t@127.0.0.1:3900&region=garage",
            "s3://cache?endpoint=https://GKid:s3cr3t@s3.example.org/&region=garage",
            "s3://cache?region=garage&secret=s3cr3t",
        ] {
            let err = parse(uri).unwrap_err().to_string();
            assert!(!err.contains("s3cr3t"), "{uri}: {err}");
            assert!(!err.contains('\n'), "{uri}: {err}");
        }
    }

    #[test]
    fn s3_errors_are_one_line_with_the_hint_first() {
        let target = parse("s3://cache?endpoint=http://127.0.0.1:3900").unwrap();
        let error = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_owned().into(),
        };
        let err = s3_error(
            &target,
            "HEAD nix-cache-info",
            &error("Server returned non-2xx status code: 400 Bad Request:"),
        )
        .to_string();
        assert!(err.contains("region="), "{err}");
        assert!(err.contains("\"us-east-1\""), "{err}");
        let err = s3_error(
            &target,
            "PUT nix-cache-info",
            &error("404 Not Found: <title>404 Not Found</title>\n<h1>404 Not Found</h1>\n"),
        )
        .to_string();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("website endpoint"), "{err}");
        let hint = err.find("is `endpoint=`").unwrap();
        assert!(hint < err.find("404 Not Found").unwrap(), "{err}");
    }

    /// The hostile pass's URI corpus: each is one clear usage error, never
    /// a panic of the S3 client, and never repeats a credential.
    #[test]
    fn hostile_uris_are_refused_without_echoing_credentials() {
        let e = "endpoint=http://127.0.0.1:3900";
        let cases: Vec<(String, &str)> = vec![
            // Credentials in the URI, plain or escaped, anywhere.
            (
                "s3://cache?endpoint=http://AKID:S3CR3T@127.0.0.1:3900".into(),
                "user name or password",
            ),
            (
                "s3://cache?endpoint=https://S3CR3T@h".into(),
                "user name or password",
            ),
            (
                format!("s3://AKID:S3CR3T@cache?{e}"),
                "user name or password",
            ),
            (
                "s3://cache?endpoint=http%3A%2F%2FAKID%3AS3CR3T%40h".into(),
                "user name or password",
            ),
            (
                "s3://cache?endpoint=AKID:S3CR3T@h:3900".into(),
                "user name or password",
            ),
            // Endpoints the S3 client would panic on, or that are no URL.
            ("s3://cache?endpoint=http://".into(), "not an http(s)"),
            ("s3://cache?endpoint=https://".into(), "not an http(s)"),
            ("s3://cache?endpoint=http://:80".into(), "not an http(s)"),
            ("s3://cache?endpoint=http://h%20x".into(), "not an http(s)"),
            ("s3://cache?endpoint=http://[::1".into(), "not an http(s)"),
            ("s3://cache?endpoint=ftp://h".into(), "not an http(s)"),
            ("s3://cache?endpoint=file:///tmp".into(), "not an http(s)"),
            ("s3://cache?endpoint=unix:/run/s".into(), "not an http(s)"),
            ("s3://cache?endpoint=http://h/path".into(), "path, query"),
            (
                "s3://cache?endpoint=http://h:99999".into(),
                "not an http(s)",
            ),
            // Missing, empty and repeated parameters.
            ("s3://cache?endpoint=".into(), "no value"),
            ("s3://cache?endpoint".into(), "no value"),
            (format!("s3://cache?{e}&region="), "no value"),
            (format!("s3://cache?{e}&{e}"), "given twice"),
            (format!("s3://cache?{e}&region=a&region=b"), "given twice"),
            (format!("s3://cache?{e}&region=a%2fb"), "region"),
            (format!("s3://cache?{e}&region=a b"), "region"),
            (format!("s3://cache?{e}&Endpoint=x"), "unknown parameter"),
            (
                format!("s3://cache?{e}&secret-access-key=S3CR3T"),
                "secret-access-key=***",
            ),
            (format!("s3://cache?token=S3CR3T&{e}"), "unknown parameter"),
            (
                format!("s3://cache?{e}&compression=zstd"),
                "unknown parameter",
            ),
            // compression-level and part-size-mib out of range.
            (
                format!("s3://cache?{e}&compression-level=0"),
                "compression-level",
            ),
            (
                format!("s3://cache?{e}&compression-level=20"),
                "compression-level",
            ),
            (
                format!("s3://cache?{e}&compression-level=-1"),
                "compression-level",
            ),
            (
                format!("s3://cache?{e}&compression-level=99999999999999999999"),
                "compression-level",
            ),
            (
                format!("s3://cache?{e}&compression-level=3.5"),
                "compression-level",
            ),
            (format!("s3://cache?{e}&part-size-mib=0"), "part-size-mib"),
            (format!("s3://cache?{e}&part-size-mib=4"), "part-size-mib"),
            (
                format!("s3://cache?{e}&part-size-mib=4097"),
                "part-size-mib",
            ),
            (
                format!("s3://cache?{e}&part-size-mib=18446744073709551616"),
                "part-size-mib",
            ),
            (
                format!("s3://cache?{e}&part-size-mib=lots"),
                "part-size-mib",
            ),
            // Bucket names.
            (format!("s3://a/b?{e}"), "bucket name"),
            (format!("s3://cache/..?{e}"), "bucket name"),
            (format!("s3://..?{e}"), "bucket name"),
            (format!("s3://...?{e}"), "bucket name"),
            (format!("s3://a..b?{e}"), "bucket name"),
            (format!("s3://-cache?{e}"), "bucket name"),
            (format!("s3://cache-?{e}"), "bucket name"),
            (format!("s3://a%2fb?{e}"), "bucket name"),
            (format!("s3://caché?{e}"), "bucket name"),
            (format!("s3://{}?{e}", "a".repeat(64)), "bucket name"),
        ];
        for (uri, says) in &cases {
            let err = match uri.parse::<StoreUri>() {
                Ok(u) => S3Target::parse(&u).map(|t| format!("{t:?}")).unwrap_err(),
                Err(e) => e,
            };
            let text = err.to_string();
            assert!(matches!(err, SyncError::Usage(_)), "{uri}: {text}");
            assert!(text.contains(says), "{uri}: {text}");
            assert!(
                !text.contains("S3CR3T") && !text.contains('\n'),
                "{uri}: {text}"
            );
        }
        // What stays accepted: a trailing slash, an https endpoint with a
        // default port, rebuilt without its trailing slash.
        let t = parse("s3://my-cache.1/?endpoint=https://s3.example.org/&region=eu_1").unwrap();
        assert_eq!(t.bucket, "my-cache.1");
        assert_eq!(t.endpoint.as_deref(), Some("https://s3.example.org"));
        assert_eq!(t.region, "eu_1");
    }

    /// The hostile pass's credential cases: each refused with a sentence
    /// naming the variable and file, never the value.
    #[test]
    fn credential_variables_and_files_are_checked_without_echoing_them() {
        use std::collections::HashMap;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, body: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            p.display().to_string()
        };
        let good_id = file("id", b"GK0123\n");
        let good_secret = file("secret", b"  S3CR3T-value\r\n\n");
        let empty = file("empty", b"\n \n");
        let huge = file("huge", &vec![b'S'; (MAX_CREDENTIAL_FILE + 1) as usize]);
        let binary = file("binary", &[0xff, 0xfe, b'S', 0]);
        let inner = file("inner", b"S3CR3T one\nS3CR3T two\n");
        let unreadable = file("unreadable", b"S3CR3T");
        std::fs::set_permissions(
            &unreadable,
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        let dir_path = dir.path().display().to_string();
        let run = |vars: &[(&str, &str)]| {
            let map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Credentials::from_lookup(&|name| map.get(name).cloned())
        };
        // Files with trailing whitespace work, as systemd writes them.
        let ok = run(&[
            ("AWS_ACCESS_KEY_ID_FILE", &good_id),
            ("AWS_SECRET_ACCESS_KEY_FILE", &good_secret),
        ])
        .unwrap();
        assert_eq!(ok.access_key_id, "GK0123");
        assert_eq!(ok.secret_access_key, "S3CR3T-value");
        assert_eq!(format!("{ok:?}"), "Credentials(<redacted>)");
        let id = ("AWS_ACCESS_KEY_ID", "GK0123");
        let mut refused = vec![
            (vec![id], "AWS_SECRET_ACCESS_KEY is not set".to_owned()),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", "/nonexistent/s")],
                "/nonexistent/s".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &empty)],
                "is empty".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &huge)],
                "larger than".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &binary)],
                "not UTF-8".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &inner)],
                "spaces, control".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &dir_path)],
                "not a regular file".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", "/dev/zero")],
                "not a regular file".to_owned(),
            ),
            (
                vec![
                    id,
                    ("AWS_SECRET_ACCESS_KEY", "S3CR3T"),
                    ("AWS_SECRET_ACCESS_KEY_FILE", &good_secret),
                ],
                "both AWS_SECRET_ACCESS_KEY and AWS_SECRET_ACCESS_KEY_FILE".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY", "S3CR3T\nx")],
                "control characters".to_owned(),
            ),
            (
                vec![id, ("AWS_SECRET_ACCESS_KEY", "S3CR3T\u{e9}")],
                "non-ASCII".to_owned(),
            ),
            (
                vec![
                    id,
                    ("AWS_SECRET_ACCESS_KEY", "S3CR3T"),
                    ("AWS_SESSION_TOKEN", "S3CR3T tok"),
                ],
                "AWS_SESSION_TOKEN".to_owned(),
            ),
        ];
        // Root reads a mode-000 file anyway; the case counts elsewhere.
        if std::fs::read(&unreadable).is_err() {
            refused.push((
                vec![id, ("AWS_SECRET_ACCESS_KEY_FILE", &unreadable)],
                "cannot read".to_owned(),
            ));
        }
        for (vars, says) in refused {
            let err = run(&vars).unwrap_err().to_string();
            assert!(err.contains(&says), "{vars:?}: {err}");
            assert!(!err.contains("S3CR3T"), "{vars:?}: {err}");
        }
    }
}
