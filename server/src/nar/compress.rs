//! zstd compression of a NAR stream, off the reactor.
//!
//! One blocking thread per compressed response pulls NAR chunks (with
//! `Handle::block_on`, which is allowed on blocking threads), feeds the zstd
//! encoder, and sends compressed chunks through a bounded channel. Large
//! NARs use zstd's own worker threads so that one download is not capped at
//! one core; small ones stay single-threaded, where the workers cost more
//! than they save. Only a few compressions run multi-threaded at once: with
//! many downloads the cores are busy anyway, and a multi-threaded context
//! costs about 3x the memory (measured with 64 slow clients of a 1 GB NAR:
//! 22 MB per stream multi-threaded, 8 MB single-threaded). If the client
//! goes away the channel closes, the next send fails and the thread stops.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::body::BodyItem;
use crate::config::Config;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::nar::nar_cache::{CacheFill, NarCache};

/// Below this NAR size zstd runs single-threaded.
const MULTITHREAD_FROM: u64 = 4 * 1024 * 1024;
/// Compressed bytes are sent in chunks of about this size.
const OUT_CHUNK: usize = 128 * 1024;
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
) -> ReceiverStream<BodyItem>
where
    S: Stream<Item = BodyItem> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let fill = cache.as_ref().and_then(|(cache, key)| cache.fill(key));
        let sink = ChannelWriter {
            tx: tx.clone(),
            buf: BytesMut::with_capacity(OUT_CHUNK),
            written: 0,
            fill,
        };
        let threads = Multithreaded::claim(size, settings.threads);
        match compress(input, sink, settings.level, threads.0, &handle) {
            Ok((written, fill)) => {
                // End the client's body and free the multi-threaded slot
                // first: publishing syncs the file and the index, which the
                // download need not wait for.
                drop(tx);
                drop(threads);
                if let (Some((cache, _)), Some(fill)) = (cache, fill) {
                    cache.publish(fill);
                }
                metrics.compressed_in.inc_by(size);
                metrics.compressed_out.inc_by(written);
                if written > 0 {
                    metrics
                        .compression_ratio
                        .observe(size as f64 / written as f64);
                }
            }
            // A closed channel means the client left: nothing to report to.
            Err(e) => drop(tx.blocking_send(Err(e))),
        }
    });
    ReceiverStream::new(rx)
}

fn compress<S>(
    mut input: S,
    sink: ChannelWriter,
    level: i32,
    threads: u32,
    handle: &tokio::runtime::Handle,
) -> Result<(u64, Option<CacheFill>), ServerError>
where
    S: Stream<Item = BodyItem> + Unpin,
{
    let mut encoder =
        zstd::stream::write::Encoder::new(sink, level).map_err(ServerError::Compression)?;
    if threads > 1 {
        encoder
            .multithread(threads)
            .map_err(ServerError::Compression)?;
    }
    while let Some(chunk) = handle.block_on(input.next()) {
        encoder
            .write_all(&chunk?)
            .map_err(ServerError::Compression)?;
    }
    let mut sink = encoder.finish().map_err(ServerError::Compression)?;
    sink.flush().map_err(ServerError::Compression)?;
    Ok((sink.written, sink.fill))
}

/// A `Write` that hands full chunks to the response body.
struct ChannelWriter {
    tx: mpsc::Sender<BodyItem>,
    buf: BytesMut,
    written: u64,
    fill: Option<CacheFill>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk: Bytes = self.buf.split().freeze();
        self.written += chunk.len() as u64;
        if let Some(fill) = &mut self.fill {
            fill.write(&chunk);
        }
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
