//! Prometheus metrics of the receiver, served on `--metrics-listen`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every series the receiver exports.
pub struct ReceiveMetrics {
    registry: Registry,
    /// Imports run, by pusher.
    pub uploads: IntCounterVec,
    /// Request body bytes received (compressed NARs, narinfos, logs).
    pub bytes_received: IntCounter,
    /// Refused requests, by reason (see `ReceiveError::reason`).
    pub rejections: IntCounterVec,
    /// Seconds one `nix copy` import took.
    pub import_duration: Histogram,
    /// Bytes of decompressed NARs waiting in staging.
    pub staging_bytes: IntGauge,
    /// Paths a push found already in the host store (a narinfo GET/HEAD
    /// answered 200, or a PUT of a valid path) and rooted for the pusher
    /// without an import, by pusher.
    pub already_there: IntCounterVec,
}

impl ReceiveMetrics {
    pub fn new() -> ReceiveMetrics {
        let registry = Registry::new();
        let uploads = IntCounterVec::new(
            Opts::new(
                "larder_receive_uploads_total",
                "Imports of pushed paths run (a path pushed twice at once may count twice)",
            ),
            &["pusher"],
        )
        .expect("valid metric");
        let bytes_received = IntCounter::new(
            "larder_receive_bytes_total",
            "Request body bytes received (as uploaded, compressed)",
        )
        .expect("valid metric");
        let rejections = IntCounterVec::new(
            Opts::new(
                "larder_receive_rejections_total",
                "Requests refused, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let import_duration = Histogram::with_opts(
            HistogramOpts::new(
                "larder_receive_import_duration_seconds",
                "Time of one `nix copy` import into the host store",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0]),
        )
        .expect("valid metric");
        let staging_bytes = IntGauge::new(
            "larder_receive_staging_bytes",
            "Bytes of decompressed NARs waiting in the staging dir",
        )
        .expect("valid metric");
        let already_there = IntCounterVec::new(
            Opts::new(
                "larder_receive_already_there_total",
                "Paths a push found already in the host store and rooted for the pusher, \
                 nothing uploaded (narinfo GET/HEAD answered 200, or PUT of a valid path)",
            ),
            &["pusher"],
        )
        .expect("valid metric");
        for c in [
            Box::new(uploads.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(bytes_received.clone()),
            Box::new(rejections.clone()),
            Box::new(import_duration.clone()),
            Box::new(staging_bytes.clone()),
            Box::new(already_there.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        ReceiveMetrics {
            registry,
            uploads,
            bytes_received,
            rejections,
            import_duration,
            staging_bytes,
            already_there,
        }
    }

    /// Start every per-pusher series at 0, so a rate over them exists
    /// before a pusher's first push.
    pub fn init_pushers<'a>(&self, pushers: impl Iterator<Item = &'a str>) {
        for name in pushers {
            self.uploads.with_label_values(&[name]);
            self.already_there.with_label_values(&[name]);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8_lossy(&out).into_owned();
        text.push_str(&larder_store::panics::exposition(
            "larder_receive_panics_total",
        ));
        text
    }
}

impl Default for ReceiveMetrics {
    fn default() -> Self {
        ReceiveMetrics::new()
    }
}
