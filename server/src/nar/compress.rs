//! zstd compression of a NAR stream, off the reactor, on demand.
//!
//! The compressed stream pulls a NAR chunk when it is polled and hands it,
//! with the zstd encoder, to a job on the file-read pool; the job comes
//! back with whatever compressed bytes are ready. Nothing runs while the
//! client is not reading, and a stalled download holds its encoder and the
//! compressed bytes not yet sent, never a thread or an input chunk (the NAR
//! is read without read-ahead, each chunk when it is to be compressed). Large NARs use zstd's own worker threads
//! so that one download is not capped at one core; small ones stay
//! single-threaded, where the workers cost more than they save. Only a few
//! compressions run multi-threaded at once: with many downloads the cores
//! are busy anyway, and a multi-threaded context costs about 3x the memory
//! (measured with 64 slow clients of a 1 GB NAR: 22 MB per stream
//! multi-threaded, 8 MB single-threaded).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use larder_store::blocking_pool::PoolTask;
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

use crate::body::BodyItem;
use crate::config::Config;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::nar::nar_cache::{CacheFill, NarCache};

/// Below this NAR size zstd runs single-threaded.
const MULTITHREAD_FROM: u64 = 4 * 1024 * 1024;
/// zstd's largest block: input is fed in pieces of this size.
const BLOCK: usize = 128 * 1024;
/// zstd compresses a block straight into the caller's output when this
/// much room is free there (`ZSTD_compressBound` of a block); otherwise
/// into its own buffer, and copies.
const BLOCK_ROOM: usize = BLOCK + BLOCK / 256;
/// The most compressed bytes handed to the HTTP layer at once: actix copies
/// each piece into the connection's write buffer, which keeps the capacity
/// of the largest piece for the connection's life (128 KiB pieces: 64
/// streams held 5 MiB more).
const SEND_PIECE: usize = 32 * 1024;
/// Compressions running multi-threaded now, process-wide (cores are).
static MULTITHREADED: AtomicU32 = AtomicU32::new(0);

/// A claim on multi-threaded compression, released on drop.
struct Multithreaded(u32);

impl Multithreaded {
    /// `threads` workers if the NAR is large and fewer than `threads / 2`
    /// (at least one) multi-threaded compressions run; else none.
    fn claim(size: u64, threads: u32) -> Multithreaded {
        let limit = (threads / 2).max(1);
        let claimed = threads > 1
            && size >= MULTITHREAD_FROM
            && MULTITHREADED
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .is_ok();
        Multithreaded(if claimed { threads } else { 0 })
    }
}

impl Drop for Multithreaded {
    fn drop(&mut self) {
        if self.0 > 0 {
            MULTITHREADED.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How a NAR is compressed: zstd's level, and the most worker threads one
/// large NAR may use.
#[derive(Debug, Clone, Copy)]
pub struct ZstdSettings {
    pub level: i32,
    pub threads: u32,
}

impl ZstdSettings {
    /// `zstd-level` and `zstd-threads` from the configuration.
    pub fn from_config(config: &Config) -> Self {
        ZstdSettings {
            level: config.zstd_level,
            threads: config.zstd_threads,
        }
    }
}

/// Compress `input` (of `size` bytes) into a stream of zstd frames.
/// With `cache` (and its key), the compressed bytes also go to a cache
/// file, published only if the whole NAR compressed.
pub fn zstd_stream<S>(
    input: S,
    size: u64,
    settings: ZstdSettings,
    metrics: Arc<Metrics>,
    cache: Option<(Arc<NarCache>, String)>,
) -> ZstdStream<S>
where
    S: Stream<Item = BodyItem> + Unpin + Send + 'static,
{
    ZstdStream {
        input,
        state: State::Start,
        pending: Bytes::new(),
        size,
        settings,
        metrics,
        cache,
    }
}

/// The compressed stream; see [`zstd_stream`].
pub struct ZstdStream<S> {
    input: S,
    state: State,
    /// Compressed bytes not yet handed on, in pieces of [`SEND_PIECE`].
    pending: Bytes,
    size: u64,
    settings: ZstdSettings,
    metrics: Arc<Metrics>,
    cache: Option<(Arc<NarCache>, String)>,
}

type Encoder = zstd::stream::raw::Encoder<'static>;
type Job<T> = PoolTask<Result<T, ServerError>>;

enum State {
    /// Before the first chunk: the encoder is made on the pool with it.
    Start,
    Idle(Box<Compressor>),
    Compressing(Job<(Box<Compressor>, Bytes)>),
    Finishing(Job<(Sink, Bytes)>),
    Done,
}

/// The encoder and the claim on multi-threaded compression it holds.
struct Compressor {
    encoder: Encoder,
    sink: Sink,
    _threads: Multithreaded,
}

impl Compressor {
    fn new(
        size: u64,
        settings: ZstdSettings,
        fill: Option<CacheFill>,
    ) -> Result<Compressor, ServerError> {
        let threads = Multithreaded::claim(size, settings.threads);
        let mut encoder = Encoder::new(settings.level).map_err(ServerError::Compression)?;
        if threads.0 > 1 {
            encoder
                .set_parameter(zstd::zstd_safe::CParameter::NbWorkers(threads.0))
                .map_err(ServerError::Compression)?;
        }
        Ok(Compressor {
            encoder,
            sink: Sink { written: 0, fill },
            _threads: threads,
        })
    }

    /// Feeds `chunk`; the compressed bytes ready so far.
    ///
    /// The input goes in block by block into an output buffer with room
    /// for a whole compressed block, so that zstd compresses each block
    /// straight into it: zstd's own output buffer is never touched (never
    /// resident), and the bytes are handed on without a copy.
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, ServerError> {
        let mut out = Vec::with_capacity(chunk.len() / 2 + BLOCK_ROOM);
        for block in chunk.chunks(BLOCK) {
            let mut input = InBuffer::around(block);
            while input.pos() < block.len() {
                out.reserve(BLOCK_ROOM);
                let pos = out.len();
                let mut output = OutBuffer::around_pos(&mut out, pos);
                self.encoder
                    .run(&mut input, &mut output)
                    .map_err(ServerError::Compression)?;
            }
        }
        Ok(self.sink.take(out))
    }

    /// Ends the frame; the sink and the last compressed bytes.
    fn finish(mut self) -> Result<(Sink, Bytes), ServerError> {
        let mut out = Vec::with_capacity(BLOCK_ROOM);
        loop {
            out.reserve(BLOCK_ROOM);
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let left = self
                .encoder
                .finish(&mut output, true)
                .map_err(ServerError::Compression)?;
            if left == 0 {
                break;
            }
        }
        let last = self.sink.take(out);
        Ok((self.sink, last))
    }
}

impl<S> ZstdStream<S> {
    fn pool() -> &'static larder_store::blocking_pool::BlockingPool {
        larder_store::dump::read_pool()
    }

    /// The first chunk: make the encoder (and the cache file) and feed it.
    fn start(&self, chunk: Bytes) -> Job<(Box<Compressor>, Bytes)> {
        let (size, settings) = (self.size, self.settings);
        let cache = self.cache.clone();
        Self::pool().run(move || {
            let fill = cache.as_ref().and_then(|(cache, key)| cache.fill(key));
            let mut compressor = Box::new(Compressor::new(size, settings, fill)?);
            let out = compressor.feed(&chunk)?;
            Ok((compressor, out))
        })
    }

    /// The stream ended: publish the cache file off the client's path and
    /// count the compression.
    fn finished(&mut self, sink: Sink) {
        let written = sink.written;
        if let (Some((cache, _)), Some(fill)) = (self.cache.take(), sink.fill) {
            // Publishing syncs the file and the index, which the download
            // need not wait for; the job runs though nobody awaits it.
            drop(Self::pool().run(move || cache.publish(fill)));
        }
        self.metrics.compressed_in.inc_by(self.size);
        self.metrics.compressed_out.inc_by(written);
        if written > 0 {
            self.metrics
                .compression_ratio
                .observe(self.size as f64 / written as f64);
        }
    }
}

impl<S> Drop for ZstdStream<S> {
    /// A download that ends early leaves an encoder (whose zstd workers are
    /// joined when it is freed) and an unfinished cache file (deleted): not
    /// work for the reactor.
    fn drop(&mut self) {
        if let State::Idle(compressor) = std::mem::replace(&mut self.state, State::Done) {
            drop(Self::pool().run(move || drop(compressor)));
        }
    }
}

fn lost(e: larder_store::blocking_pool::PoolStopped) -> ServerError {
    ServerError::Internal(format!("compressing a NAR: {e}"))
}

impl<S: Stream<Item = BodyItem> + Unpin> Stream for ZstdStream<S> {
    type Item = BodyItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BodyItem>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let piece = this.pending.split_to(SEND_PIECE.min(this.pending.len()));
                return Poll::Ready(Some(Ok(piece)));
            }
            match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(None),
                state @ (State::Start | State::Idle(_)) => {
                    let item = match Pin::new(&mut this.input).poll_next(cx) {
                        Poll::Pending => {
                            this.state = state;
                            return Poll::Pending;
                        }
                        Poll::Ready(item) => item,
                    };
                    this.state = match (state, item) {
                        (_, Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                        (State::Idle(mut compressor), Some(Ok(chunk))) => {
                            State::Compressing(Self::pool().run(move || {
                                let out = compressor.feed(&chunk)?;
                                Ok((compressor, out))
                            }))
                        }
                        (_, Some(Ok(chunk))) => State::Compressing(this.start(chunk)),
                        (State::Idle(compressor), None) => {
                            State::Finishing(Self::pool().run(move || compressor.finish()))
                        }
                        // An empty NAR cannot be: it has at least its header.
                        (_, None) => State::Compressing(this.start(Bytes::new())),
                    };
                }
                State::Compressing(mut job) => {
                    let done = match Pin::new(&mut job).poll(cx) {
                        Poll::Pending => {
                            this.state = State::Compressing(job);
                            return Poll::Pending;
                        }
                        Poll::Ready(done) => done,
                    };
                    let (compressor, out) = match done.map_err(lost).and_then(|r| r) {
                        Ok(done) => done,
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    };
                    this.state = State::Idle(compressor);
                    this.pending = out;
                }
                State::Finishing(mut job) => {
                    let done = match Pin::new(&mut job).poll(cx) {
                        Poll::Pending => {
                            this.state = State::Finishing(job);
                            return Poll::Pending;
                        }
                        Poll::Ready(done) => done,
                    };
                    let (sink, last) = match done.map_err(lost).and_then(|r| r) {
                        Ok(done) => done,
                        Err(e) => return Poll::Ready(Some(Err(e))),
                    };
                    this.finished(sink);
                    this.pending = last;
                }
            }
        }
    }
}

/// Where compressed bytes go besides the client: the count, and the cache
/// file they are written to as they are made.
struct Sink {
    written: u64,
    fill: Option<CacheFill>,
}

impl Sink {
    /// `out`, counted and written to the cache file, as one piece of the
    /// stream; its spare capacity is given back.
    fn take(&mut self, mut out: Vec<u8>) -> Bytes {
        out.shrink_to_fit();
        self.written += out.len() as u64;
        if let Some(fill) = &mut self.fill
            && !out.is_empty()
        {
            fill.write(&out);
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// Compressible but not trivial bytes: a counter's decimal digits.
    fn sample(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        let mut n = 0u64;
        while out.len() < len {
            out.extend_from_slice(format!("{n} ").as_bytes());
            n = n.wrapping_mul(6364136223846793005).wrapping_add(1) % 1_000_003;
        }
        out.truncate(len);
        out
    }

    /// Chunks of uneven sizes (not whole zstd blocks), single- and
    /// multi-threaded: the stream decodes to its input, and no piece is
    /// larger than SEND_PIECE.
    async fn round_trip(len: usize, threads: u32) {
        let input = sample(len);
        let chunks: Vec<BodyItem> = input
            .chunks(200_001)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let settings = ZstdSettings { level: 1, threads };
        let metrics = Arc::new(Metrics::new().unwrap());
        let mut stream = zstd_stream(
            futures_util::stream::iter(chunks),
            len as u64,
            settings,
            metrics,
            None,
        );
        let mut compressed = Vec::new();
        while let Some(piece) = stream.next().await {
            let piece = piece.unwrap();
            assert!(!piece.is_empty() && piece.len() <= SEND_PIECE);
            compressed.extend_from_slice(&piece);
        }
        assert!(zstd::decode_all(&compressed[..]).unwrap() == input);
    }

    #[tokio::test]
    async fn uneven_chunks_compress_to_their_bytes() {
        round_trip(3_000_000, 1).await;
        round_trip(9_000_000, 2).await;
        round_trip(1, 1).await;
    }
}
