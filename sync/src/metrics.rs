//! Prometheus metrics for the push side, and a minimal HTTP listener that
//! answers `GET /metrics` (and 404 to anything else). Queue depth and the
//! oldest pending age are read from the queue file at scrape time, so they
//! agree with `larder-sync status` whichever process enqueued.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Registry, TextEncoder};

use crate::error::{Result, SyncError};
use crate::queue::{Queue, QueueStats, now_ms};

/// Requests larger than this are refused: a scrape is one short line.
const MAX_REQUEST_BYTES: usize = 8192;

pub struct Metrics {
    registry: Registry,
    pub queue_depth: IntGauge,
    pub oldest_pending_age: Gauge,
    pub pushed: IntCounter,
    pub skipped: IntCounter,
    pub push_failures: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let metrics = Metrics {
            queue_depth: gauge("larder_sync_queue_depth", "Paths waiting to be pushed"),
            oldest_pending_age: Gauge::new(
                "larder_sync_oldest_pending_age_seconds",
                "Age of the oldest path waiting to be pushed (0 when none)",
            )
            .expect("valid metric"),
            pushed: counter("larder_sync_pushed_total", "Paths copied to the target"),
            skipped: counter(
                "larder_sync_skipped_total",
                "Paths not copied: the target or an upstream already had them, or they left the local store",
            ),
            push_failures: counter(
                "larder_sync_push_failures_total",
                "Failed pushes queued for retry (a batch, or one path isolated from its batch)",
            ),
            registry,
        };
        for c in [&metrics.pushed, &metrics.skipped, &metrics.push_failures] {
            metrics
                .registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        metrics
            .registry
            .register(Box::new(metrics.queue_depth.clone()))
            .expect("unique metric");
        metrics
            .registry
            .register(Box::new(metrics.oldest_pending_age.clone()))
            .expect("unique metric");
        metrics
    }

    pub fn observe(&self, stats: &QueueStats) {
        self.queue_depth
            .set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
        let age_ms = stats
            .oldest
            .as_ref()
            .map_or(0, |(_, at)| (now_ms() - at).max(0));
        self.oldest_pending_age.set(age_ms as f64 / 1000.0);
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8_lossy(&out).into_owned();
        text.push_str(&larder_store::panics::exposition(
            "larder_sync_panics_total",
        ));
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Bind `addr` now (so a bad address fails at startup) and answer scrapes
/// on a thread of its own.
pub fn serve(addr: &str, metrics: Arc<Metrics>, queue_path: &Path) -> Result<()> {
    let bind_err = |source| SyncError::Metrics {
        addr: addr.to_owned(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind_err)?;
    let queue = Queue::open(queue_path)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Ok(stats) = queue.stats() {
                    metrics.observe(&stats);
                }
                if let Err(e) = answer(stream, &metrics) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        })
        .map_err(bind_err)?;
    Ok(())
}

fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || request.len() + n > MAX_REQUEST_BYTES {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut parts = line.split_whitespace();
    let (status, content_type, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
