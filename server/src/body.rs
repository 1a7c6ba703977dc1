//! Streamed response bodies: metering, and reading blocking sources on
//! demand.
//!
//! A body stream that yields an error makes actix drop the connection
//! without finishing the body (no terminating chunk, or fewer bytes than
//! `Content-Length`), so the client sees a failed download, never a clean
//! short one. That is how a mid-stream failure is reported.

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodyStream, BoxBody, MessageBody, SizedStream};
use actix_web::{HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures_util::Stream;
use larder_store::blocking_pool::PoolTask;

use crate::error::ServerError;
use crate::metrics::Metrics;

pub type BodyItem = Result<Bytes, ServerError>;

/// Chunk size for bodies read from blocking sources.
const READ_CHUNK: usize = 256 * 1024;

/// The most body bytes handed to actix at once. actix-http copies each
/// piece into the connection's write buffer, and that buffer keeps the
/// capacity of its largest fill for the connection's life: an idle
/// keep-alive connection that once carried a 256 KiB chunk held ~280 KiB.
/// Slicing costs no copy; smaller pieces cost one `send` each.
pub const SEND_PIECE: usize = 128 * 1024;

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
    /// The rest of the inner stream's last chunk, handed on in pieces of
    /// at most [`SEND_PIECE`].
    pending: Bytes,
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
            pending: Bytes::new(),
        }
    }
}

impl<S: Stream<Item = BodyItem> + Unpin> Stream for MeteredStream<S> {
    type Item = BodyItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyItem>> {
        let mut item = if self.pending.is_empty() {
            std::task::ready!(Pin::new(&mut self.inner).poll_next(cx))
        } else {
            Some(Ok(std::mem::take(&mut self.pending)))
        };
        if let Some(Ok(chunk)) = &mut item
            && chunk.len() > SEND_PIECE
        {
            self.pending = chunk.split_off(SEND_PIECE);
        }
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

/// `reader` as a stream of chunks of up to 256 KiB, each read by one job on
/// the file-read pool ([`larder_store::dump::read_pool`]) when the chunk
/// before it is taken (one chunk of read-ahead), so no file is read on the
/// reactor and a client that stops reading holds no thread.
pub fn blocking_read_stream<R>(reader: R) -> ReadStream<R>
where
    R: Read + Send + 'static,
{
    ReadStream {
        state: ReadState::Idle(Box::new(reader)),
    }
}

/// See [`blocking_read_stream`].
pub struct ReadStream<R> {
    state: ReadState<R>,
}

type ReadJob<R> = PoolTask<(Box<R>, std::io::Result<Vec<u8>>)>;

enum ReadState<R> {
    Idle(Box<R>),
    Reading(ReadJob<R>),
    Done,
}

fn read_next<R: Read + Send + 'static>(mut reader: Box<R>) -> ReadJob<R> {
    larder_store::dump::read_pool().run(move || {
        // `read_to_end` fills a fresh Vec's spare capacity without
        // zeroing it first (files read straight into it); zero-filling
        // every chunk was 6% of CPU serving cached NARs (bench/).
        let mut chunk = Vec::with_capacity(READ_CHUNK);
        let read = (&mut *reader)
            .take(READ_CHUNK as u64)
            .read_to_end(&mut chunk)
            .map(|_| chunk);
        (reader, read)
    })
}

impl<R: Read + Send + 'static> Stream for ReadStream<R> {
    type Item = BodyItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyItem>> {
        let this = &mut *self;
        if matches!(this.state, ReadState::Idle(_)) {
            let ReadState::Idle(reader) = std::mem::replace(&mut this.state, ReadState::Done)
            else {
                unreachable!()
            };
            this.state = ReadState::Reading(read_next(reader));
        }
        let ReadState::Reading(job) = &mut this.state else {
            return Poll::Ready(None);
        };
        let result = std::task::ready!(Pin::new(job).poll(cx));
        this.state = ReadState::Done;
        Poll::Ready(match result {
            Ok((_, Ok(chunk))) if chunk.is_empty() => None,
            Ok((reader, Ok(chunk))) => {
                this.state = ReadState::Reading(read_next(reader));
                Some(Ok(Bytes::from(chunk)))
            }
            Ok((_, Err(e))) => Some(Err(ServerError::io("reading a streamed body")(e))),
            Err(e) => Some(Err(ServerError::Internal(e.to_string()))),
        })
    }
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// Chunks larger than [`SEND_PIECE`] reach actix in pieces, none
    /// larger, the same bytes in the same order; the length check and the
    /// byte count see every piece.
    #[tokio::test]
    async fn large_chunks_are_handed_on_in_pieces() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let chunks: Vec<Bytes> = [2 * SEND_PIECE + 5, 7, SEND_PIECE, SEND_PIECE + 1]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from((0..n).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>()))
            .collect();
        let whole: Vec<u8> = chunks.iter().flatten().copied().collect();
        let source = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let len = whole.len() as u64;
        let stream = MeteredStream::new(source, metrics.clone(), "nar", "identity", Some(len));
        let pieces: Vec<Bytes> = stream.map(|item| item.unwrap()).collect().await;
        assert!(
            pieces
                .iter()
                .all(|p| !p.is_empty() && p.len() <= SEND_PIECE)
        );
        assert_eq!(pieces.len(), 3 + 1 + 1 + 2);
        assert_eq!(pieces.concat(), whole);
        let sent = metrics
            .bytes_sent
            .with_label_values(&["nar", "identity"])
            .get();
        assert_eq!(sent, len);
    }

    /// A source that ends early still fails the body when its last chunk
    /// went out in pieces.
    #[tokio::test]
    async fn a_short_source_fails_after_its_pieces() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let source = futures_util::stream::iter([Ok(Bytes::from(vec![1u8; SEND_PIECE + 3]))]);
        let len = SEND_PIECE as u64 + 10;
        let stream = MeteredStream::new(source, metrics, "nar", "identity", Some(len));
        let items: Vec<BodyItem> = stream.collect().await;
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok() && items[1].is_ok());
        assert!(items[2].is_err());
    }
}
