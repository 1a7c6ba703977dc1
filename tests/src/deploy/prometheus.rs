//! A real Prometheus (Debian's `prometheus` package) in a temporary
//! directory, scraping loopback targets every second, queried through its
//! HTTP API.

use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, require_tool};
use crate::process::{Running, wait_until};

/// A scrape job: its name and `host:port` targets serving `/metrics`.
pub struct ScrapeJob<'a> {
    pub name: &'a str,
    pub targets: Vec<String>,
}

pub struct Prometheus {
    process: Running,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(jobs: &[ScrapeJob]) -> Prometheus {
        require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(jobs)).expect("write prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let port = free_port();
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(File::create(&log).expect("log file"))
            .stderr(File::create(&log).expect("log file"));
        let mut prometheus = Prometheus {
            process: Running::spawn("prometheus", &mut cmd),
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        wait_until(&mut prometheus.process, || ureq::get(&ready).call().is_ok());
        prometheus
    }

    /// `/api/v1/query`: the result vector (each `{metric, value}`), or
    /// Prometheus's error message.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let reply = ureq::get(&format!("{}/api/v1/query", self.url))
            .query("query", expr)
            .call();
        let body: Value = match reply {
            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                let text = r.into_string().map_err(|e| e.to_string())?;
                serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?
            }
            Err(e) => return Err(e.to_string()),
        };
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Wait (up to 30 s) until `expr` returns at least one finite sample,
    /// and return the result; `Err` says what it returned last.
    pub fn await_data(&mut self, expr: &str) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.process.assert_alive();
            let last = match self.query(expr) {
                Ok(result) if result.iter().any(has_finite_value) => return Ok(result),
                Ok(result) => format!("no finite sample: {result:?}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Whether any scraped target exports a series named `metric` now.
    pub fn has_metric(&self, metric: &str) -> bool {
        let expr = format!("count({{__name__=\"{metric}\"}})");
        self.query(&expr).is_ok_and(|r| !r.is_empty())
    }

    /// Whether a series named `metric` appears within 10 s (a few scrapes).
    pub fn await_metric(&mut self, metric: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has_metric(metric) {
            self.process.assert_alive();
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        true
    }

    /// Wait until every job's targets are up, scraped at least twice.
    pub fn await_targets_up(&mut self, jobs: &[ScrapeJob]) {
        for job in jobs {
            let expr = format!(
                "count_over_time(up{{job=\"{}\"}}[1m]) >= 2 and up == 1",
                job.name
            );
            let want = job.targets.len();
            let result = self
                .await_data(&expr)
                .unwrap_or_else(|e| panic!("job {} never up: {e}\n{}", job.name, self.log()));
            assert_eq!(
                result.len(),
                want,
                "job {}: targets up: {result:?}",
                job.name
            );
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn has_finite_value(sample: &Value) -> bool {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

fn config_yaml(jobs: &[ScrapeJob]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for job in jobs {
        let targets: Vec<String> = job.targets.iter().map(|t| format!("\"{t}\"")).collect();
        yaml.push_str(&format!(
            "  - job_name: \"{}\"\n    static_configs:\n      - targets: [{}]\n",
            job.name,
            targets.join(", ")
        ));
    }
    yaml
}
