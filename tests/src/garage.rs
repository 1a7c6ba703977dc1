//! A real Garage (S3-compatible object store, `cargo install garage`) on
//! loopback for the `s3://` target's tests: a config in a temporary
//! directory, `garage server --single-node --default-bucket` (a 1-node
//! layout, an access key and a bucket made at start), and website access
//! on the bucket so that Nix reads it over plain HTTP.
//!
//! The bucket is named `localhost`: Garage's web endpoint picks the bucket
//! from the `Host` header, and a client of `http://localhost:PORT/` sends
//! `localhost` (bucket names cannot be IP addresses).
//!
//! Never skipped: without `garage` on PATH the test fails and says to run
//! `scripts/setup.sh --test`, which installs the pinned version.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::{Running, free_port};

/// The Garage release `scripts/setup.sh --test` installs.
pub const GARAGE_VERSION: &str = "2.5.0";
/// The bucket every test Garage has (see the module doc).
pub const BUCKET: &str = "localhost";
/// Test credentials (Garage's key id format: `GK` + 24 hex digits).
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "5e3f0c1a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

/// SHA-256 of the empty body, which Garage wants in `x-amz-content-sha256`.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub struct TestGarage {
    process: Option<Running>,
    dir: tempfile::TempDir,
    pub s3_port: u16,
    pub web_port: u16,
    rpc_port: u16,
}

/// `garage` from PATH, or a failure that says how to get it.
pub fn require_garage() -> PathBuf {
    let out = Command::new("garage").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => PathBuf::from("garage"),
        _ => panic!(
            "the real Garage is required for the s3:// tests and `garage` is not on PATH: \
             run `scripts/setup.sh --test` (cargo install --locked garage --version {GARAGE_VERSION})"
        ),
    }
}

impl TestGarage {
    /// Start Garage with one bucket ([`BUCKET`]) readable over its web
    /// endpoint; returns once the S3 API answers.
    pub fn start() -> TestGarage {
        require_garage();
        let dir = tempfile::Builder::new()
            .prefix("larder-garage-")
            .tempdir()
            .unwrap();
        let mut garage = TestGarage {
            process: None,
            dir,
            s3_port: free_port(),
            web_port: free_port(),
            rpc_port: free_port(),
        };
        garage.write_config();
        garage.restart();
        garage
            .cli(&["bucket", "website", "--allow", BUCKET])
            .expect_ok("garage bucket website --allow");
        garage
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let secret: String = (0..32).map(|i| format!("{:02x}", i * 7 % 256)).collect();
        let config = format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[s3_web]
bind_addr = "127.0.0.1:{web}"
root_domain = ".web.garage.localhost"
"#,
            rpc = self.rpc_port,
            s3 = self.s3_port,
            web = self.web_port,
        );
        std::fs::write(self.config_path(), config).unwrap();
    }

    /// (Re)start the server on the same data; returns once it answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("garage.log")).unwrap();
        let mut cmd = Command::new("garage");
        cmd.arg("-c")
            .arg(self.config_path())
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut process = Running::spawn("garage", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Ready once the bucket's website answers (404 for a missing key).
        while self.web_get("/nix-cache-info").is_none()
            || !self.cli(&["bucket", "info", BUCKET]).status.success()
        {
            if process.exited() {
                panic!("garage exited early:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "garage did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.process = Some(process);
    }

    /// The Garage server's process id while it runs (for CPU and memory
    /// readings in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Running::pid)
    }

    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Run `garage -c CONFIG ARGS…` (the admin CLI, over RPC).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("garage")
            .arg("-c")
            .arg(self.config_path())
            .args(args)
            .env("RUST_LOG", "garage=warn")
            .output()
            .expect("run garage")
    }

    /// The S3 API endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The `s3://` URI of the bucket.
    pub fn uri(&self) -> String {
        format!("s3://{BUCKET}?endpoint={}&region=garage", self.endpoint())
    }

    /// The bucket's website, as a Nix substituter URL.
    pub fn web_url(&self) -> String {
        format!("http://{BUCKET}:{}", self.web_port)
    }

    /// The credentials as the environment larder-sync reads.
    pub fn env(&self) -> [(&'static str, &'static str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ]
    }

    /// `GET path` on the web endpoint: `Some(status)` when it answered.
    pub fn web_get(&self, path: &str) -> Option<u16> {
        let url = format!("http://127.0.0.1:{}{path}", self.web_port);
        match ureq::get(&url).set("Host", BUCKET).call() {
            Ok(r) => Some(r.status()),
            Err(ureq::Error::Status(code, _)) => Some(code),
            Err(_) => None,
        }
    }

    /// The body of `path` on the web endpoint, if it is there (200).
    pub fn web_body(&self, path: &str) -> Option<Vec<u8>> {
        let url = format!("http://127.0.0.1:{}{path}", self.web_port);
        let resp = ureq::get(&url).set("Host", BUCKET).call().ok()?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).ok()?;
        Some(body)
    }

    /// Every key in the bucket, sorted: listed through the S3 API with
    /// curl's own SigV4 signing (the web endpoint cannot list), so the
    /// oracle shares no code with larder's client. Garage refuses a
    /// request without `x-amz-content-sha256` (HTTP 400 "Missing
    /// X-Amz-Content-Sha256 field"), which curl 7.88 does not add: the
    /// header is given (the empty body's SHA-256) and curl signs it.
    pub fn keys(&self) -> Vec<String> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail-with-body",
                "--aws-sigv4",
                "aws:amz:garage:s3",
            ])
            .args(["-H", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
            .arg("--user")
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .arg(format!(
                "{}/{BUCKET}?list-type=2&max-keys=1000",
                self.endpoint()
            ))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "list bucket: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("<IsTruncated>false</IsTruncated>"),
            "the listing is truncated (more than 1000 keys): {text}"
        );
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(|k| k.replace("&amp;", "&"))
            .collect();
        keys.sort();
        keys
    }

    /// Write `body` under `key` through the S3 API with curl's own SigV4
    /// signing (no larder code): for tests that plant hostile objects. The
    /// key is sent as written (`--path-as-is`), escaped per AWS's rules.
    pub fn put(&self, key: &str, body: &[u8]) -> Output {
        let file = self.dir.path().join("put-body");
        std::fs::write(&file, body).unwrap();
        let sha = larder_store::Sha256Hash::digest(body).to_base16();
        let mut data = std::ffi::OsString::from("@");
        data.push(&file);
        self.s3_request("PUT", key, &sha)
            .arg("--data-binary")
            .arg(data)
            .output()
            .expect("run curl")
    }

    /// Delete `key` through the S3 API (curl, as [`TestGarage::put`]).
    pub fn delete(&self, key: &str) -> Output {
        self.s3_request("DELETE", key, EMPTY_SHA256)
            .output()
            .expect("run curl")
    }

    fn s3_request(&self, method: &str, key: &str, content_sha256: &str) -> Command {
        let escaped: String = key
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail-with-body", "--path-as-is", "-X", method])
            .args(["--aws-sigv4", "aws:amz:garage:s3", "-H"])
            .arg(format!("x-amz-content-sha256: {content_sha256}"))
            .arg("--user")
            .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
            .arg(format!("{}/{BUCKET}/{escaped}", self.endpoint()));
        cmd
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestGarage {
    fn drop(&mut self) {
        self.stop();
    }
}

trait ExpectOk {
    fn expect_ok(self, what: &str) -> Output;
}

impl ExpectOk for Output {
    fn expect_ok(self, what: &str) -> Output {
        assert!(
            self.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        );
        self
    }
}
