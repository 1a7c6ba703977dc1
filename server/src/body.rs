//! Streamed response bodies: metering, and reading blocking sources.
//!
//! A body stream that yields an error makes actix drop the connection
//! without finishing the body (no terminating chunk, or fewer bytes than
//! `Content-Length`), so the client sees a failed download, never a clean
//! short one. That is how a mid-stream failure is reported.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodyStream, BoxBody, MessageBody, SizedStream};
use actix_web::{HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ServerError;
use crate::metrics::Metrics;

pub type BodyItem = Result<Bytes, ServerError>;

/// Chunk size for bodies read from blocking sources.
const READ_CHUNK: usize = 256 * 1024;

/// Counts a body's bytes, its duration to the last byte, and how it ended.
pub struct MeteredStream<S> {
    inner: S,
    metrics: Arc<Metrics>,
    route: &'static str,
    bytes: prometheus::IntCounter,
    start: Instant,
    /// Bytes still due when the length is known: actix stops polling a
    /// sized body once it has them, so reaching zero is its end.
    remaining: Option<u64>,
    finished: bool,
}

impl<S> MeteredStream<S> {
    /// `len`: the body's size when known (`Content-Length`).
    pub fn new(
        inner: S,
        metrics: Arc<Metrics>,
        route: &'static str,
        encoding: &str,
        len: Option<u64>,
    ) -> Self {
        metrics.active_streams.inc();
        let bytes = metrics.bytes_sent.with_label_values(&[route, encoding]);
        MeteredStream {
            inner,
            metrics,
            route,
            bytes,
            start: Instant::now(),
            remaining: len,
            finished: false,
        }
    }
}

impl<S: Stream<Item = BodyItem> + Unpin> Stream for MeteredStream<S> {
    type Item = BodyItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyItem>> {
        let mut item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        if let (None, Some(missing @ 1..)) = (&item, self.remaining) {
            // A source that ends before its Content-Length (a file that
            // shrank) must abort the connection, not end the body cleanly.
            self.remaining = Some(0);
            item = Some(Err(ServerError::Internal(format!(
                "body source ended {missing} bytes early"
            ))));
        }
        match &item {
            Some(Ok(chunk)) => {
                self.bytes.inc_by(chunk.len() as u64);
                if let Some(remaining) = self.remaining.as_mut() {
                    *remaining = remaining.saturating_sub(chunk.len() as u64);
                    if *remaining == 0 {
                        self.finish();
                    }
                }
            }
            Some(Err(e)) => {
                tracing::error!(route = self.route, error = %e, "aborting a response mid-stream");
                self.metrics
                    .aborted_streams
                    .with_label_values(&[self.route, "error"])
                    .inc();
                self.finished = true;
            }
            None => self.finish(),
        }
        Poll::Ready(item)
    }
}

impl<S> MeteredStream<S> {
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.metrics
                .stream_duration
                .with_label_values(&[self.route])
                .observe(self.start.elapsed().as_secs_f64());
        }
    }
}

impl<S> Drop for MeteredStream<S> {
    fn drop(&mut self) {
        self.metrics.active_streams.dec();
        if !self.finished {
            tracing::debug!(route = self.route, "client went away mid-stream");
            self.metrics
                .aborted_streams
                .with_label_values(&[self.route, "client"])
                .inc();
        }
    }
}

/// Stream `reader`, read on a blocking thread in large chunks, so no file
/// is read on the reactor.
pub fn blocking_read_stream<R>(mut reader: R) -> ReceiverStream<BodyItem>
where
    R: Read + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        loop {
            // `read_to_end` fills a fresh Vec's spare capacity without
            // zeroing it first (files read straight into it); zero-filling
            // every chunk was 6% of CPU serving cached NARs (bench/).
            let mut chunk = Vec::with_capacity(READ_CHUNK);
            let item = match (&mut reader)
                .take(READ_CHUNK as u64)
                .read_to_end(&mut chunk)
            {
                Ok(0) => return,
                Ok(_) => Ok(Bytes::from(chunk)),
                Err(e) => Err(ServerError::io("reading a streamed body")(e)),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A body of known length (`Content-Length`). For HEAD the stream is never
/// made, so nothing is read from disk for a HEAD.
pub fn sized_body<S, F>(head: bool, len: u64, make: F) -> Result<BoxBody, ServerError>
where
    S: Stream<Item = BodyItem> + 'static,
    F: FnOnce() -> Result<S, ServerError>,
{
    if head {
        return Ok(SizedStream::new(len, futures_util::stream::empty::<BodyItem>()).boxed());
    }
    Ok(SizedStream::new(len, make()?).boxed())
}

/// A body of unknown length (chunked), likewise never made for HEAD.
pub fn chunked_body<S, F>(head: bool, make: F) -> Result<BoxBody, ServerError>
where
    S: Stream<Item = BodyItem> + 'static,
    F: FnOnce() -> Result<S, ServerError>,
{
    if head {
        return Ok(BodyStream::new(futures_util::stream::empty::<BodyItem>()).boxed());
    }
    Ok(BodyStream::new(make()?).boxed())
}

/// A blocking reader (a file, a decoder) as a metered body; sized when
/// `len` is known.
pub fn reader_body<R>(
    head: bool,
    reader: R,
    len: Option<u64>,
    metrics: Arc<Metrics>,
    route: &'static str,
    encoding: &str,
) -> Result<BoxBody, ServerError>
where
    R: Read + Send + 'static,
{
    let make = || {
        let stream = blocking_read_stream(reader);
        Ok(MeteredStream::new(stream, metrics, route, encoding, len))
    };
    match len {
        Some(len) => sized_body(head, len, make),
        None => chunked_body(head, make),
    }
}

/// Marks a response whose body a [`MeteredStream`] counts, so that the
/// metrics middleware does not count it again.
#[derive(Debug, Clone, Copy)]
pub struct Metered;

/// The response for a body made by this module's helpers.
pub fn respond(mut builder: HttpResponseBuilder, body: BoxBody) -> HttpResponse {
    let mut response = builder.body(body);
    response.extensions_mut().insert(Metered);
    response
}
