//! The signer's Prometheus metrics. The signer links no HTTP stack: its
//! metrics travel over its own socket (the `metrics` request), and
//! larder-server appends them to its `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use larder_store::signer_proto::RefusalCode;

pub struct Metrics {
    registry: Registry,
    pub signatures: IntCounterVec,
    pub refusals: IntCounterVec,
    pub requests: IntCounterVec,
    pub duration: Histogram,
    pub connections: IntGauge,
}

impl Metrics {
    pub fn new(key_names: &[&str]) -> Self {
        let registry = Registry::new();
        let signatures = IntCounterVec::new(
            Opts::new("larder_signer_signatures_total", "Signatures made, by key"),
            &["key"],
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "larder_signer_refusals_total",
                "Requests refused, by reason code",
            ),
            &["code"],
        )
        .expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new(
                "larder_signer_requests_total",
                "Requests answered, by operation",
            ),
            &["op"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "larder_signer_request_duration_seconds",
                "Time to check and sign one request",
            )
            .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        let connections = IntGauge::new("larder_signer_connections", "Open client connections")
            .expect("valid metric");
        for c in [
            Box::new(signatures.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(refusals.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(connections.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        // Export zeros from the start, so dashboards and alerts see every series.
        for key in key_names {
            signatures.with_label_values(&[key]);
        }
        for code in RefusalCode::ALL {
            refusals.with_label_values(&[code.as_str()]);
        }
        // The `op` labels `service.rs` counts requests under.
        for op in ["sign", "sign-batch", "public-keys", "log-key", "metrics"] {
            requests.with_label_values(&[op]);
        }
        Metrics {
            registry,
            signatures,
            refusals,
            requests,
            duration,
            connections,
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        let mut text = String::from_utf8(out).expect("Prometheus text is UTF-8");
        text.push_str(&larder_store::panics::exposition(
            "larder_signer_panics_total",
        ));
        text
    }
}
