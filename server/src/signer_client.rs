//! The server's side of larder-signer: ask for signatures over the unix
//! socket, reusing connections, with a timeout, and remember signatures per
//! fingerprint in a bounded cache (a narinfo for the same path content is
//! asked for again and again, and the answer never changes). With a
//! cache dir, the signatures are also kept across restarts
//! ([`crate::signature_log`], one file per key set, read back once the
//! signer has named its keys). Signing ahead ([`SignerClient::warm`]) asks
//! for many fingerprints in one round trip (`sign-batch`). A signature
//! already being asked for is waited for, not asked again
//! ([`crate::in_flight`]).
//!
//! Key rotation reaches the server without a restart: every
//! `--signer-key-check-secs` the next request asks the signer for its public
//! keys first, and when they changed (a signer restarted with another key
//! set, or reloaded on SIGHUP) the signature cache is flushed and the
//! landing page shows the new keys. A hung signer costs one timeout, not one
//! per request: see [`crate::signer_breaker`].
//!
//! Socket I/O is blocking std I/O on the blocking pool: connections can then
//! be shared by all actix workers (each worker is its own runtime, and a
//! tokio socket belongs to one), and a hung signer costs a blocking thread
//! until the timeout, never the reactor.

use std::io::Write;
use std::num::NonZeroUsize;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use larder_store::Sha256Hash;
use larder_store::signer_proto::{
    FrameError, MAX_BATCH, MAX_FRAME, Refusal, Reply, Request, encode_frame, read_frame_blocking,
    to_json,
};
use lru::LruCache;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use thiserror::Error;

use crate::in_flight::{Claim, InFlight};
use crate::signature_log::{EntryKey, SignatureLog};
use crate::signer_breaker::{Admission, Breaker, SignerState};

#[derive(Debug, Error)]
pub enum SignerError {
    /// The signer is down, hung or speaks garbage: transient.
    #[error("signer at {socket} unavailable: {detail}")]
    Unavailable { socket: String, detail: String },
    /// The signer answered and said no.
    #[error("signer refused ({}): {}", .0.code.as_str(), .0.reason)]
    Refused(Refusal),
}

pub struct SignerClientMetrics {
    pub duration: Histogram,
    pub failures: IntCounterVec,
    pub cache: IntCounterVec,
}

impl SignerClientMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "larder_signer_client_request_seconds",
                "Time of one request to larder-signer, as the server sees it",
            )
            .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16)?),
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "larder_signer_client_failures_total",
                "Requests to larder-signer that failed, by kind (short-circuit: turned away by the open circuit breaker without asking)",
            ),
            &["kind"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new(
                "larder_signature_cache_total",
                "Signature cache lookups by result (hit, miss), and signatures made ahead (prefetch)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        for kind in ["unavailable", "refused", "short-circuit"] {
            failures.with_label_values(&[kind]);
        }
        for result in ["hit", "miss", "prefetch"] {
            cache.with_label_values(&[result]);
        }
        Ok(SignerClientMetrics {
            duration,
            failures,
            cache,
        })
    }
}

pub struct SignerClient {
    socket: PathBuf,
    timeout: Duration,
    idle: Mutex<Vec<UnixStream>>,
    signatures: Mutex<SignatureCache>,
    /// Cache entries being asked for now.
    in_flight: InFlight,
    /// Where signatures are kept across restarts (`cache-dir`), if anywhere.
    log_dir: Option<PathBuf>,
    /// Entries the signature cache holds (and the log reads back).
    capacity: NonZeroUsize,
    /// The signer's public keys and when they were asked.
    public_keys: Mutex<Option<(Vec<String>, Instant)>>,
    key_check: Duration,
    /// Held while the public keys are asked (and a signature log read
    /// back): requests that find the check due meanwhile wait for that
    /// answer instead of each asking, and find the kept signatures.
    refreshing: tokio::sync::Mutex<()>,
    /// Bumped whenever the key set changes; a signature asked under an
    /// older generation is not cached.
    generation: AtomicU64,
    breaker: Breaker,
    warmers: Arc<tokio::sync::Semaphore>,
    metrics: SignerClientMetrics,
}

/// The signatures in memory, and the file they are also appended to.
struct SignatureCache {
    entries: LruCache<EntryKey, Vec<String>>,
    log: Option<SignatureLog>,
    /// The key set `log` is (or is being) opened for.
    log_keys: Option<Vec<String>>,
}

impl SignatureCache {
    fn put(&mut self, key: EntryKey, sigs: Vec<String>) {
        if let Some(log) = &self.log {
            log.append(&key, &sigs);
        }
        self.entries.put(key, sigs);
    }
}

/// At most this many idle connections are kept.
const MAX_IDLE: usize = 32;
/// At most this many background [`SignerClient::warm`] runs at once.
const MAX_WARMERS: usize = 2;
/// Most fingerprints one [`SignerClient::warm`] batch asks for. A request
/// whose signature is in a batch waits for the whole batch (the signer
/// checks and signs ~30 µs a path), so a fresh server's first requests
/// would wait for hundreds of signatures with one batch of them all; 64 is
/// ~2 ms, for one more round trip (~0.1 ms) per 64 paths.
const WARM_BATCH: usize = 64;

impl SignerClient {
    pub fn new(
        socket: PathBuf,
        timeout: Duration,
        key_check: Duration,
        cache_entries: NonZeroUsize,
        log_dir: Option<PathBuf>,
        metrics: SignerClientMetrics,
    ) -> Self {
        SignerClient {
            socket,
            timeout,
            idle: Mutex::new(Vec::new()),
            signatures: Mutex::new(SignatureCache {
                entries: LruCache::new(cache_entries),
                log: None,
                log_keys: None,
            }),
            in_flight: InFlight::default(),
            log_dir,
            capacity: cache_entries,
            public_keys: Mutex::new(None),
            key_check,
            refreshing: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            breaker: Breaker::default(),
            warmers: Arc::new(tokio::sync::Semaphore::new(MAX_WARMERS)),
            metrics,
        }
    }

    /// Signatures for `fingerprint` by the keys named in `keys` (`None`:
    /// every key the signer holds), from the cache or the signer; and
    /// whether they came from the cache.
    pub async fn sign(
        self: &Arc<Self>,
        fingerprint: String,
        keys: Option<&[String]>,
    ) -> Result<(Vec<String>, bool), SignerError> {
        if self.key_check_due() {
            // Down: the cache still holds good signatures; the sign
            // request below reports the outage if it must ask.
            let _ = self.refresh_public_keys().await;
        }
        let key = cache_key(&fingerprint, keys);
        if let Some(sigs) = self.cached(&key) {
            return Ok((sigs, true));
        }
        // On its way (signed ahead, or asked by another request): its
        // answer is as good as a cache hit, and its failure is this
        // request's too (a hung signer costs one timeout, not two); a
        // refusal there leaves the entry empty, and this request asks
        // for itself, to get its own answer.
        let claim = match self.in_flight.claim_or_holder(&key) {
            Ok(claim) => claim,
            Err(holder) => {
                let failed = InFlight::wait(holder, self.timeout).await;
                if let Some(sigs) = self.cached(&key) {
                    return Ok((sigs, true));
                }
                if failed {
                    return Err(self.unavailable(
                        "the request for the same signature found the signer unavailable".into(),
                    ));
                }
                self.in_flight.claim(&[])
            }
        };
        self.metrics.cache.with_label_values(&["miss"]).inc();
        Ok((self.sign_uncached(fingerprint, keys, &claim).await?, false))
    }

    /// The cached signatures of `key`, counted as a hit.
    fn cached(&self, key: &EntryKey) -> Option<Vec<String>> {
        let sigs = lock(&self.signatures).entries.get(key).cloned()?;
        self.metrics.cache.with_label_values(&["hit"]).inc();
        Some(sigs)
    }

    /// A permit to [`SignerClient::warm`], if fewer than [`MAX_WARMERS`]
    /// runs are going on: signing ahead is best effort and must not pile up
    /// under load.
    pub fn warm_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.warmers.clone().try_acquire_owned().ok()
    }

    /// Sign ahead what clients will ask next (a narinfo's references: Nix
    /// fetches a closure's narinfos one after another; paths new in the
    /// store), so that their requests find the cache warm: the fingerprints
    /// not cached yet, in batches of one round trip each. A fingerprint
    /// the signer refuses is skipped; the first failed batch ends a run.
    pub async fn warm(self: &Arc<Self>, fingerprints: Vec<String>, keys: Option<&[String]>) {
        let signing_keys: Vec<String> = match keys {
            Some(names) => names.to_vec(),
            None => lock(&self.public_keys)
                .as_ref()
                .map(|(k, _)| k.clone())
                .unwrap_or_default(),
        };
        let mut rest = fingerprints;
        while !rest.is_empty() {
            // Again before each batch: requests sign paths meanwhile.
            let missing: Vec<String> = {
                let cache = lock(&self.signatures);
                let mut missing = Vec::new();
                while missing.len() < WARM_BATCH {
                    let Some(fp) = rest.pop() else { break };
                    if !cache.entries.contains(&cache_key(&fp, keys)) {
                        missing.push(fp);
                    }
                }
                missing
            };
            if missing.is_empty() {
                continue;
            }
            let n = batch_len(&missing, &signing_keys);
            let mut missing = missing;
            rest.extend(missing.split_off(n));
            if self.sign_batch(missing, keys).await.is_err() {
                return;
            }
        }
    }

    /// One `sign-batch` round trip; every signature answered is cached.
    async fn sign_batch(
        self: &Arc<Self>,
        fingerprints: Vec<String>,
        keys: Option<&[String]>,
    ) -> Result<(), SignerError> {
        let entry_keys: Vec<EntryKey> = fingerprints.iter().map(|fp| cache_key(fp, keys)).collect();
        let claim = self.in_flight.claim(&entry_keys);
        // What a request is asking for right now comes from its answer.
        let (fingerprints, entry_keys): (Vec<String>, Vec<EntryKey>) = fingerprints
            .into_iter()
            .zip(entry_keys)
            .filter(|(_, key)| claim.holds(key))
            .unzip();
        if fingerprints.is_empty() {
            return Ok(());
        }
        let request = Request::SignBatch {
            fingerprints,
            keys: keys.map(<[String]>::to_vec),
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let replies = match self.call(request).await.inspect_err(|e| mark(&claim, e))? {
            Reply::Batch(replies) if replies.len() == entry_keys.len() => replies,
            other => return Err(self.unexpected(&other)),
        };
        let mut cache = lock(&self.signatures);
        if self.generation.load(Ordering::SeqCst) != generation {
            return Ok(());
        }
        for (key, reply) in entry_keys.into_iter().zip(replies) {
            if let Reply::Signatures(sigs) = reply {
                self.metrics.cache.with_label_values(&["prefetch"]).inc();
                cache.put(key, sigs);
            }
        }
        Ok(())
    }

    /// One `sign` round trip, for a request holding `claim` on its entry.
    async fn sign_uncached(
        self: &Arc<Self>,
        fingerprint: String,
        keys: Option<&[String]>,
        claim: &Claim<'_>,
    ) -> Result<Vec<String>, SignerError> {
        let key = cache_key(&fingerprint, keys);
        let request = Request::Sign {
            fingerprint,
            keys: keys.map(<[String]>::to_vec),
        };
        let generation = self.generation.load(Ordering::SeqCst);
        match self.call(request).await.inspect_err(|e| mark(claim, e))? {
            Reply::Signatures(sigs) => {
                let mut cache = lock(&self.signatures);
                if self.generation.load(Ordering::SeqCst) == generation {
                    cache.put(key, sigs.clone());
                }
                Ok(sigs)
            }
            other => Err(self.unexpected(&other)),
        }
    }

    /// The signer's public keys, asked again once they are older than
    /// `--signer-key-check-secs`.
    pub async fn public_keys(self: &Arc<Self>) -> Result<Vec<String>, SignerError> {
        if !self.key_check_due() {
            if let Some((keys, _)) = lock(&self.public_keys).clone() {
                return Ok(keys);
            }
        }
        self.refresh_public_keys().await
    }

    /// Bumped whenever the signer's key set changes (every cached
    /// signature is then gone, and signing ahead starts over).
    pub fn key_generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The signer as last seen: down while the circuit breaker is open.
    pub fn state(&self) -> SignerState {
        self.breaker.state()
    }

    fn key_check_due(&self) -> bool {
        lock(&self.public_keys)
            .as_ref()
            .is_none_or(|(_, asked)| asked.elapsed() >= self.key_check)
    }

    /// Ask the signer for its public keys; when they differ from the last
    /// answer, forget every cached signature (they may be by a key the
    /// signer no longer holds, and lack the new one). With a cache dir, the
    /// first answer of a key set opens its signature log and reads back
    /// what it holds.
    async fn refresh_public_keys(self: &Arc<Self>) -> Result<Vec<String>, SignerError> {
        let _refreshing = self.refreshing.lock().await;
        if !self.key_check_due() {
            if let Some((keys, _)) = lock(&self.public_keys).clone() {
                return Ok(keys);
            }
        }
        let keys = match self.call(Request::PublicKeys).await? {
            Reply::PublicKeys(keys) => keys,
            other => return Err(self.unexpected(&other)),
        };
        let changed = {
            let mut known = lock(&self.public_keys);
            let changed = known.as_ref().is_some_and(|(old, _)| *old != keys);
            *known = Some((keys.clone(), Instant::now()));
            changed
        };
        let dir = {
            let mut cache = lock(&self.signatures);
            if changed {
                self.generation.fetch_add(1, Ordering::SeqCst);
                cache.entries.clear();
                cache.log = None;
                tracing::info!(keys = ?keys, "the signer's keys changed: signature cache flushed");
            }
            let Some(dir) = self.log_dir.clone() else {
                return Ok(keys);
            };
            if cache.log_keys.as_ref() == Some(&keys) {
                return Ok(keys);
            }
            cache.log_keys = Some(keys.clone());
            dir
        };
        // The key the log's lines are MACed with: a signer too old to
        // give one gets no log (signatures are then kept in memory only).
        let mac_key = match self.call(Request::LogKey).await {
            Ok(Reply::LogKey(key)) => key,
            Ok(other) => {
                let e = self.unexpected(&other);
                tracing::warn!(error = %e, "no log key from the signer: signatures kept in memory only");
                return Ok(keys);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no log key from the signer: signatures kept in memory only");
                // Unreachable: asked again at the next key check. Refused
                // (a signer older than `log-key`): not until its keys change.
                if matches!(e, SignerError::Unavailable { .. }) {
                    lock(&self.signatures).log_keys = None;
                }
                return Ok(keys);
            }
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let key_set = keys.clone();
        let capacity = self.capacity;
        let opened = tokio::task::spawn_blocking(move || {
            SignatureLog::open(&dir, &key_set, &mac_key, capacity)
        })
        .await;
        let mut cache = lock(&self.signatures);
        match opened {
            Ok(Ok((log, entries))) => {
                if self.generation.load(Ordering::SeqCst) == generation
                    && cache.log_keys.as_ref() == Some(&keys)
                {
                    tracing::info!(
                        signatures = entries.len(),
                        "signatures read back from the cache dir"
                    );
                    for (key, sigs) in entries {
                        cache.entries.put(key, sigs);
                    }
                    cache.log = Some(log);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot keep signatures in the cache dir: kept in memory only");
            }
            Err(e) => tracing::warn!(error = %e, "opening the signature log failed"),
        }
        Ok(keys)
    }

    /// The signer's own metrics in Prometheus text, for the server's `/metrics`.
    pub async fn metrics_text(self: &Arc<Self>) -> Result<String, SignerError> {
        match self.call(Request::Metrics).await? {
            Reply::Metrics(text) => Ok(text),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, reply: &Reply) -> SignerError {
        self.unavailable(format!("unexpected reply {}", to_json(reply)))
    }

    fn unavailable(&self, detail: String) -> SignerError {
        SignerError::Unavailable {
            socket: self.socket.display().to_string(),
            detail,
        }
    }

    async fn call(self: &Arc<Self>, request: Request) -> Result<Reply, SignerError> {
        if self.breaker.admit() == Admission::Reject {
            self.metrics
                .failures
                .with_label_values(&["short-circuit"])
                .inc();
            return Err(self.unavailable(
                "down at the last attempt; the next probe is due within a second".to_owned(),
            ));
        }
        let this = self.clone();
        let start = Instant::now();
        // The breaker learns the outcome in the blocking task itself: a
        // request whose client went away must still close or re-open it.
        let result = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = this.call_blocking(&request);
            match &result {
                Ok(_) => this.breaker.succeeded(),
                Err(_) => this.breaker.failed(started.elapsed() >= this.timeout / 2),
            }
            result
        })
        .await
        .unwrap_or_else(|e| {
            self.breaker.failed(true);
            Err(self.unavailable(format!("blocking task failed: {e}")))
        });
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        let result = result.and_then(|reply| match reply {
            Reply::Refused(refusal) => Err(SignerError::Refused(refusal)),
            reply => Ok(reply),
        });
        if let Err(e) = &result {
            let kind = match e {
                SignerError::Unavailable { .. } => "unavailable",
                SignerError::Refused(_) => "refused",
            };
            self.metrics.failures.with_label_values(&[kind]).inc();
        }
        result
    }

    /// One request/reply. A pooled connection may have been closed by a
    /// restarted signer: then retry once on a fresh connection. Not after
    /// a timeout: the signer is alive but not answering (stopped, stuck),
    /// a fresh connection would wait the whole `--signer-timeout` again,
    /// and every narinfo behind it (waiting in [`crate::in_flight`] or for
    /// the breaker) with it.
    fn call_blocking(&self, request: &Request) -> Result<Reply, SignerError> {
        let frame = encode_frame(request).map_err(|e| self.unavailable(e.to_string()))?;
        let pooled = lock(&self.idle).pop();
        if let Some(mut stream) = pooled {
            match exchange(&mut stream, &frame) {
                Ok(reply) => {
                    self.put_back(stream);
                    return Ok(reply);
                }
                Err(e) if e.timed_out => return Err(self.unavailable(e.detail)),
                Err(_) => {}
            }
        }
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| self.unavailable(format!("connect: {e}")))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.unavailable(e.to_string()))?;
        let reply = exchange(&mut stream, &frame).map_err(|e| self.unavailable(e.detail))?;
        self.put_back(stream);
        Ok(reply)
    }

    fn put_back(&self, stream: UnixStream) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
    }
}

/// How many of `fingerprints` go in one `sign-batch`: at most
/// [`MAX_BATCH`], with the request and the reply (one signature per key of
/// `keys`, `name:…` or `name:base64` public keys) each within half a frame:
/// a full batch signed by ten keys with 20-character names is a 1.1 MB
/// reply, over [`MAX_FRAME`]. At least one.
fn batch_len(fingerprints: &[String], keys: &[String]) -> usize {
    // `"name:<88 base64>",` per key, `{"signatures":[…]},` per fingerprint.
    let reply_each: usize = 20
        + keys
            .iter()
            .map(|k| k.split(':').next().unwrap_or(k).len() + 92)
            .sum::<usize>()
            .max(200);
    let budget = MAX_FRAME as usize / 2;
    let mut request = 0;
    fingerprints
        .iter()
        .take(MAX_BATCH.min(budget / reply_each))
        .take_while(|fp| {
            request += fp.len() + 8;
            request < budget
        })
        .count()
        .max(1)
}

/// The signature cache's key: SHA-256 of the key names asked for, a
/// newline, and the fingerprint (a fingerprint has no newline, so the two
/// cannot run together). 32 bytes instead of a fingerprint of up to
/// kilobytes, and what the signature log keeps.
/// Tell the requests waiting on `claim` that the signer was unavailable
/// (a refusal is not that: they ask for themselves).
fn mark(claim: &Claim<'_>, error: &SignerError) {
    if matches!(error, SignerError::Unavailable { .. }) {
        claim.unavailable();
    }
}

fn cache_key(fingerprint: &str, keys: Option<&[String]>) -> EntryKey {
    let text = match keys {
        None => fingerprint.to_owned(),
        Some(names) => format!("{}\n{fingerprint}", names.join(",")),
    };
    Sha256Hash::digest(text.as_bytes()).0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these plain caches inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Write one frame, read one frame.
/// Why one [`exchange`] failed.
struct ExchangeError {
    detail: String,
    /// The socket's read or write timeout ran out: the peer is there but
    /// did not answer in time.
    timed_out: bool,
}

fn exchange(stream: &mut UnixStream, frame: &[u8]) -> Result<Reply, ExchangeError> {
    // A timed-out read or write of a socket is `WouldBlock` (EAGAIN) on
    // Linux, `TimedOut` elsewhere.
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    stream.write_all(frame).map_err(|e| ExchangeError {
        detail: format!("write: {e}"),
        timed_out: timed_out(&e),
    })?;
    read_frame_blocking(stream).map_err(|e| ExchangeError {
        timed_out: matches!(&e, FrameError::Io(io) if timed_out(io)),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_leave_room_for_the_reply_of_every_key() {
        let fp = format!(
            "1;/nix/store/{}-x;sha256:{};1;",
            "a".repeat(32),
            "b".repeat(52)
        );
        let many = vec![fp; 2000];
        let key = |i: usize| format!("cache.example.org-{i}:{}", "A".repeat(44));
        // One or two keys: full batches.
        assert_eq!(batch_len(&many, &[key(1)]), MAX_BATCH);
        assert_eq!(batch_len(&many, &[key(1), key(2)]), MAX_BATCH);
        // Ten keys: a reply of 1024 would be ~1.1 MB.
        let ten: Vec<String> = (0..10).map(key).collect();
        let n = batch_len(&many, &ten);
        assert!(n < MAX_BATCH && n > 100, "{n}");
        let reply_bytes = n
            * (20
                + ten
                    .iter()
                    .map(|k| k.split(':').next().unwrap().len() + 92)
                    .sum::<usize>());
        assert!(reply_bytes <= MAX_FRAME as usize / 2, "{reply_bytes}");
        // Long fingerprints: the request's budget.
        let long = vec!["x".repeat(100_000); 20];
        assert_eq!(batch_len(&long, &[key(1)]), 5);
        assert_eq!(batch_len(&["y".repeat(MAX_FRAME as usize)], &[]), 1);
    }

    /// A signer that answers its first request, then reads every request
    /// and answers none (as a stopped or stuck one): the request on the
    /// pooled connection times out, and no second connection is opened to
    /// wait the timeout again. Counts connections, not time.
    #[tokio::test]
    async fn a_timed_out_pooled_connection_is_not_retried() {
        use std::os::unix::net::UnixListener;
        use std::sync::atomic::AtomicUsize;

        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("signer.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (accepted, answered) = (accepted.clone(), answered.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let mut stream = stream.unwrap();
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let answered = answered.clone();
                    std::thread::spawn(move || {
                        while read_frame_blocking::<Request, _>(&mut stream).is_ok() {
                            if !answered.swap(true, Ordering::SeqCst) {
                                let reply = Reply::PublicKeys(vec!["k:x".into()]);
                                stream.write_all(&encode_frame(&reply).unwrap()).unwrap();
                            }
                        }
                    });
                }
            });
        }
        let client = Arc::new(SignerClient::new(
            socket,
            Duration::from_millis(300),
            Duration::from_secs(3600),
            NonZeroUsize::new(10).unwrap(),
            None,
            SignerClientMetrics::new(&Registry::new()).unwrap(),
        ));
        assert_eq!(client.public_keys().await.unwrap(), ["k:x"]);
        let err = client
            .sign("1;/nix/store/x".into(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, SignerError::Unavailable { .. }), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "{err}");
    }
}
