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
    /// # Errors
    /// [`SyncError::Usage`] naming the bad part and the expected shape.
    pub fn parse(uri: &StoreUri) -> Result<S3Target> {
        // The error names the bad part, never the whole URI: a URI someone
        // put a secret into (`s3://ID:SECRET@bucket`, `?secret=…`) must
        // not come back in an error message or a log.
        let bad = |what: String| {
            SyncError::Usage(format!(
                "s3:// URI: {what}; expected s3://BUCKET?endpoint=http://HOST:PORT&region=REGION \
                 (optional: compression-level=1..19, part-size-mib=5..4096)"
            ))
        };
        let rest = uri.as_str().strip_prefix("s3://").unwrap_or_default();
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        let endpoint = uri.param("endpoint").map(str::to_owned);
        let endpoint_host = endpoint
            .as_deref()
            .and_then(|e| e.split_once("://"))
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or_default());
        if bucket.contains('@') || endpoint_host.is_some_and(|h| h.contains('@')) {
            return Err(SyncError::Usage(format!(
                "s3:// URI: credentials in the URI are refused (they would show in `ps`, logs \
                 and the queue file): {CREDENTIALS_HINT}"
            )));
        }
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-'));
        if !bucket_ok {
            return Err(bad(format!(
                "bucket name {bucket:?} is not 3-63 of [a-z0-9.-]"
            )));
        }
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let key = kv.split_once('=').map_or(kv, |(k, _)| k);
            if !PARAMS.contains(&key) {
                return Err(bad(format!("unknown parameter {key:?}")));
            }
        }
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(bad(format!("endpoint {e:?} is not an http(s):// URL")));
        }
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
        Ok(S3Target {
            uri: uri.to_string(),
            bucket: bucket.to_owned(),
            endpoint,
            region: uri.param("region").unwrap_or("us-east-1").to_owned(),
            level,
            part_size: part_mib << 20,
        })
    }
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

impl Credentials {
    /// `NAME` from the environment, else the trimmed contents of the file
    /// named by `NAME_FILE`.
    fn variable(name: &str) -> Result<Option<String>> {
        if let Ok(v) = std::env::var(name)
            && !v.is_empty()
        {
            return Ok(Some(v));
        }
        let Some(file) = std::env::var_os(format!("{name}_FILE")).map(PathBuf::from) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&file).map_err(|e| SyncError::S3Credentials {
            detail: format!("cannot read {name}_FILE={}: {e}", file.display()),
        })?;
        Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
    }

    /// Read the credentials.
    ///
    /// # Errors
    /// [`SyncError::S3Credentials`] when one is missing or its file unreadable.
    pub fn from_env() -> Result<Credentials> {
        let missing = |name: &str| SyncError::S3Credentials {
            detail: format!("{name} is not set: {CREDENTIALS_HINT}"),
        };
        Ok(Credentials {
            access_key_id: Self::variable("AWS_ACCESS_KEY_ID")?
                .ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            secret_access_key: Self::variable("AWS_SECRET_ACCESS_KEY")?
                .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
            session_token: Self::variable("AWS_SESSION_TOKEN")?,
        })
    }
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

    /// Delete an object (absent is fine).
    ///
    /// # Errors
    /// [`SyncError::S3`].
    pub fn delete(&self, key: &str) -> Result<()> {
        match self.block_on(self.store.delete(&ObjectPath::from(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(&self.target, &format!("DELETE {key}"), &e)),
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
        // An `@` in the endpoint's path or query is no credential.
        assert!(parse("s3://cache?endpoint=http://127.0.0.1:3900/a@b").is_ok());
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
}
