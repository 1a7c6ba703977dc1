//! Prometheus metrics, all prefixed `larder_`, in the server's own registry.
//!
//! Labels are bounded: `route` is the matched route pattern (or
//! `unmatched`), never the raw URL. This file only defines them; requests
//! are counted by `request_metrics.rs`, bodies by `body.rs`.
//!
//! Every series whose labels are known up front is exported at 0 from
//! startup ([`Metrics::preset`], with the router's table of routes): a
//! counter that appears only at its first event shows "no data" on a
//! dashboard, and `increase()` misses that first event.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The label values one route's series take: what [`Metrics::preset`]
/// exports at 0.
#[derive(Debug, Clone, Copy)]
pub struct RouteSeries {
    /// The route pattern (`/nar/{file}`), or `unmatched`.
    pub route: &'static str,
    /// Statuses it answers with.
    pub statuses: &'static [u16],
    /// Encodings of its bodies (`bytes_sent`); empty: `identity` only.
    pub encodings: &'static [&'static str],
    /// Whether its bodies are streamed (stream duration, aborted streams).
    pub streams: bool,
}

/// The reasons a stream ends early (`larder_aborted_streams_total`).
pub const ABORT_REASONS: &[&str] = &["error", "client"];

pub struct Metrics {
    pub registry: Registry,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// Time to response headers, by route.
    pub duration: HistogramVec,
    /// Time to the last byte of a streamed body, by route.
    pub stream_duration: HistogramVec,
    /// Body bytes sent, by route and encoding.
    pub bytes_sent: IntCounterVec,
    /// Streamed bodies (NARs, files, logs) in flight.
    pub active_streams: IntGauge,
    /// Streams that ended early, by route and reason (`error`: the server
    /// aborted the connection; `client`: the client went away).
    pub aborted_streams: IntCounterVec,
    /// Time of one store DB lookup.
    pub db_query: Histogram,
    /// Uncompressed / compressed bytes of each finished zstd stream.
    pub compression_ratio: Histogram,
    pub compressed_in: IntCounter,
    pub compressed_out: IntCounter,
    /// Lookups answered by the path-info memo.
    pub memo_hits: IntCounter,
    /// The compressed-NAR cache.
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_evictions: IntCounter,
    pub cache_bytes: IntGauge,
    /// Cache hits handed to nginx (`accel-redirect`), and requests that
    /// came back from nginx's fallback because the file was gone.
    pub offload: IntCounterVec,
    /// Requests by view and status (`view/select.rs` places them).
    pub view_requests: IntCounterVec,
    /// Paths in each rooted view's closure.
    pub view_paths: IntGaugeVec,
    /// Time to recompute a view's closure after its roots or the store
    /// changed.
    pub view_recompute: Histogram,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let latency = || prometheus::exponential_buckets(0.0001, 4.0, 10);
        let requests = IntCounterVec::new(
            Opts::new("larder_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "larder_request_duration_seconds",
                "Time to response headers",
            )
            .buckets(latency()?),
            &["route"],
        )?;
        let stream_duration = HistogramVec::new(
            HistogramOpts::new(
                "larder_stream_duration_seconds",
                "Time to a body's last byte",
            )
            .buckets(latency()?),
            &["route"],
        )?;
        let bytes_sent = IntCounterVec::new(
            Opts::new("larder_bytes_sent_total", "Body bytes sent"),
            &["route", "encoding"],
        )?;
        let active_streams = IntGauge::new("larder_active_streams", "Streamed bodies in flight")?;
        let aborted_streams = IntCounterVec::new(
            Opts::new("larder_aborted_streams_total", "Streams that ended early"),
            &["route", "reason"],
        )?;
        let db_query = Histogram::with_opts(
            HistogramOpts::new("larder_db_query_seconds", "Store DB lookup time")
                .buckets(prometheus::exponential_buckets(0.00001, 4.0, 10)?),
        )?;
        let compression_ratio = Histogram::with_opts(
            HistogramOpts::new("larder_compression_ratio", "Uncompressed/compressed size")
                .buckets(vec![1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0]),
        )?;
        let compressed_in =
            IntCounter::new("larder_compression_input_bytes_total", "Bytes fed to zstd")?;
        let compressed_out = IntCounter::new(
            "larder_compression_output_bytes_total",
            "Bytes zstd produced",
        )?;
        let cache_hits = IntCounter::new(
            "larder_nar_cache_hits_total",
            "Compressed NARs served from the cache",
        )?;
        let cache_misses = IntCounter::new(
            "larder_nar_cache_misses_total",
            "Compressed NARs not in the cache",
        )?;
        let offload = IntCounterVec::new(
            Opts::new(
                "larder_nar_offload_total",
                "Cached compressed NARs handed to nginx (result=redirected), and requests nginx sent back because the file was gone (result=fallback)",
            ),
            &["result"],
        )?;
        for result in ["redirected", "fallback"] {
            offload.with_label_values(&[result]);
        }
        let cache_evictions = IntCounter::new(
            "larder_nar_cache_evictions_total",
            "Files evicted from the NAR cache",
        )?;
        let cache_bytes = IntGauge::new("larder_nar_cache_bytes", "Bytes in the NAR cache")?;
        let memo_hits = IntCounter::new(
            "larder_path_info_memo_hits_total",
            "Lookups answered without the DB",
        )?;
        let view_requests = IntCounterVec::new(
            Opts::new(
                "larder_view_requests_total",
                "HTTP requests placed in a view, by view and status",
            ),
            &["view", "status"],
        )?;
        let view_paths = IntGaugeVec::new(
            Opts::new("larder_view_paths", "Store paths a rooted view serves"),
            &["view"],
        )?;
        let view_recompute = Histogram::with_opts(
            HistogramOpts::new(
                "larder_view_recompute_seconds",
                "Time to recompute a view's closure",
            )
            .buckets(prometheus::exponential_buckets(0.001, 4.0, 8)?),
        )?;
        registry.register(Box::new(view_requests.clone()))?;
        registry.register(Box::new(view_paths.clone()))?;
        registry.register(Box::new(view_recompute.clone()))?;
        registry.register(Box::new(memo_hits.clone()))?;
        registry.register(Box::new(cache_hits.clone()))?;
        registry.register(Box::new(cache_misses.clone()))?;
        registry.register(Box::new(cache_evictions.clone()))?;
        registry.register(Box::new(offload.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(stream_duration.clone()))?;
        registry.register(Box::new(bytes_sent.clone()))?;
        registry.register(Box::new(active_streams.clone()))?;
        registry.register(Box::new(aborted_streams.clone()))?;
        registry.register(Box::new(db_query.clone()))?;
        registry.register(Box::new(compression_ratio.clone()))?;
        registry.register(Box::new(compressed_in.clone()))?;
        registry.register(Box::new(compressed_out.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            stream_duration,
            bytes_sent,
            active_streams,
            aborted_streams,
            db_query,
            compression_ratio,
            compressed_in,
            compressed_out,
            memo_hits,
            cache_hits,
            cache_misses,
            cache_evictions,
            cache_bytes,
            offload,
            view_requests,
            view_paths,
            view_recompute,
        })
    }

    /// Create every series of `routes` at 0, so that it is exported before
    /// its first event.
    pub fn preset(&self, routes: &[RouteSeries]) {
        for r in routes {
            for status in r.statuses {
                self.requests
                    .with_label_values(&[r.route, &status.to_string()]);
            }
            self.duration.with_label_values(&[r.route]);
            let encodings: &[&str] = if r.encodings.is_empty() {
                &["identity"]
            } else {
                r.encodings
            };
            for encoding in encodings {
                self.bytes_sent.with_label_values(&[r.route, encoding]);
            }
            if r.streams {
                self.stream_duration.with_label_values(&[r.route]);
                for reason in ABORT_REASONS {
                    self.aborted_streams.with_label_values(&[r.route, reason]);
                }
            }
        }
    }

    /// The registry in Prometheus text format, with `larder_panics_total`.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut text = prometheus::TextEncoder::new().encode_to_string(&self.registry.gather())?;
        text.push_str(&larder_store::panics::exposition("larder_panics_total"));
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_series_are_exported_at_zero() {
        let metrics = Metrics::new().unwrap();
        metrics.preset(&[RouteSeries {
            route: "/nar/{file}",
            statuses: &[200, 206],
            encodings: &["identity", "zstd"],
            streams: true,
        }]);
        let text = metrics.render().unwrap();
        for series in [
            r#"larder_requests_total{route="/nar/{file}",status="206"} 0"#,
            r#"larder_bytes_sent_total{encoding="zstd",route="/nar/{file}"} 0"#,
            r#"larder_aborted_streams_total{reason="client",route="/nar/{file}"} 0"#,
            r#"larder_stream_duration_seconds_count{route="/nar/{file}"} 0"#,
            r#"larder_request_duration_seconds_count{route="/nar/{file}"} 0"#,
            "larder_nar_cache_hits_total 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }
}
