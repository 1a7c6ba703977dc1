//! The socket service: accept connections, check the peer's uid, then
//! answer framed requests one after another until the peer goes away.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use larder_signer::signing_key::SecretKey;
use larder_store::db::StoreDb;
use larder_store::fingerprint::Fingerprint;
use larder_store::signer_proto::{
    FrameError, MAX_BATCH, MAX_FRAME, Refusal, RefusalCode, Reply, Request, encode_frame,
    read_frame, write_frame,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use crate::metrics::Metrics;
use crate::policy::{self, Policy};

/// A connection idle this long is closed; the server reconnects on demand.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A reply that cannot be written within this is abandoned.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Signer {
    /// The keys, swapped whole on SIGHUP ([`Signer::replace_keys`]).
    pub keys: RwLock<Arc<Vec<SecretKey>>>,
    pub db: StoreDb,
    pub policy: Policy,
    /// Empty: any peer that can open the socket (its mode and group decide).
    pub allowed_uids: Vec<u32>,
    pub metrics: Metrics,
}

impl Signer {
    /// The keys in use now.
    pub fn keys(&self) -> Arc<Vec<SecretKey>> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Sign with `keys` from now on (requests already signing finish with
    /// the old set).
    pub fn replace_keys(&self, keys: Vec<SecretKey>) {
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
    }

    async fn answer(&self, request: Request) -> Reply {
        let op = match &request {
            Request::Sign { .. } => "sign",
            Request::SignBatch { .. } => "sign-batch",
            Request::PublicKeys => "public-keys",
            Request::LogKey => "log-key",
            Request::Metrics => "metrics",
        };
        self.metrics.requests.with_label_values(&[op]).inc();
        match request {
            Request::Sign { fingerprint, keys } => self.sign(&fingerprint, keys.as_deref()).await,
            Request::SignBatch { fingerprints, keys } => {
                self.sign_batch(&fingerprints, keys.as_deref()).await
            }
            Request::PublicKeys => {
                Reply::PublicKeys(self.keys().iter().map(|k| k.public().to_string()).collect())
            }
            Request::LogKey => Reply::LogKey(larder_signer::signing_key::log_key(&self.keys())),
            Request::Metrics => Reply::Metrics(self.metrics.render()),
        }
    }

    /// Sign with every key, or with the keys named in `only` (all of
    /// which must be held: a server view naming a key the signer lacks
    /// gets a refusal, not a narinfo its clients would reject).
    async fn sign(&self, fingerprint: &str, only: Option<&[String]>) -> Reply {
        let start = Instant::now();
        let keys = self.keys();
        if let Err(refusal) = all_held(&keys, only) {
            return self.refused(refusal);
        }
        let reply = match policy::check(self.policy, &self.db, fingerprint).await {
            Ok(fp) => self.signatures(&keys, only, &fp),
            Err(refusal) => self.refused(refusal),
        };
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        reply
    }

    /// [`Signer::sign`] for each of `fingerprints` (at most [`MAX_BATCH`]),
    /// each checked against the store, with one DB hop for all.
    async fn sign_batch(&self, fingerprints: &[String], only: Option<&[String]>) -> Reply {
        let start = Instant::now();
        if fingerprints.len() > MAX_BATCH {
            return self.refused(Refusal {
                code: RefusalCode::Malformed,
                reason: format!(
                    "a batch of {} fingerprints is over the limit of {MAX_BATCH}",
                    fingerprints.len()
                ),
            });
        }
        let keys = self.keys();
        if let Err(refusal) = all_held(&keys, only) {
            return self.refused(refusal);
        }
        let replies = policy::check_many(self.policy, &self.db, fingerprints)
            .await
            .into_iter()
            .map(|checked| match checked {
                Ok(fp) => self.signatures(&keys, only, &fp),
                Err(refusal) => self.refused(refusal),
            })
            .collect();
        self.metrics.duration.observe(start.elapsed().as_secs_f64());
        Reply::Batch(replies)
    }

    /// `fp` signed by each key of `keys` that `only` names (all: `None`).
    fn signatures(&self, keys: &[SecretKey], only: Option<&[String]>, fp: &Fingerprint) -> Reply {
        let text = fp.to_string();
        Reply::Signatures(
            keys.iter()
                .filter(|k| only.is_none_or(|names| names.iter().any(|n| n == k.name())))
                .map(|k| {
                    self.metrics.signatures.with_label_values(&[k.name()]).inc();
                    k.sign(&text).to_string()
                })
                .collect(),
        )
    }

    /// Log and count a refusal. Fingerprints name only public store paths.
    fn refused(&self, refusal: Refusal) -> Reply {
        tracing::warn!(code = refusal.code.as_str(), reason = %refusal.reason, "refused");
        self.metrics
            .refusals
            .with_label_values(&[refusal.code.as_str()])
            .inc();
        Reply::Refused(refusal)
    }

    /// `reply` as a frame; when it is over [`MAX_FRAME`] (a full batch
    /// signed by many keys with long names), a refusal that says how many
    /// fingerprints fit instead: hanging up without an answer would look
    /// like a crashed signer to the client.
    fn fitted_frame(&self, reply: &Reply) -> Option<Vec<u8>> {
        match encode_frame(reply) {
            Ok(frame) => Some(frame),
            Err(e) => {
                let fits = match reply {
                    Reply::Batch(replies) if !replies.is_empty() => {
                        let size = larder_store::signer_proto::to_json(reply).len();
                        let per_item = size.div_ceil(replies.len()).max(1);
                        format!(
                            "; at most {} fingerprints per sign-batch fit with these keys",
                            MAX_FRAME as usize / per_item
                        )
                    }
                    _ => String::new(),
                };
                let refusal = self.refused(Refusal {
                    code: RefusalCode::Malformed,
                    reason: format!("the answer does not fit in one frame ({e}){fits}"),
                });
                encode_frame(&refusal).ok()
            }
        }
    }

    async fn connection(self: Arc<Self>, mut stream: UnixStream) {
        self.metrics.connections.inc();
        let uid = stream.peer_cred().map(|c| c.uid()).ok();
        let allowed =
            self.allowed_uids.is_empty() || uid.is_some_and(|u| self.allowed_uids.contains(&u));
        if !allowed {
            // Read the request before answering: closing a unix socket with
            // unread data resets it, and the peer would never see why.
            let _ =
                tokio::time::timeout(WRITE_TIMEOUT, read_frame::<Request, _>(&mut stream)).await;
            let reply = self.refused(Refusal {
                code: RefusalCode::Forbidden,
                reason: format!("peer uid {uid:?} is not in --allow-uid"),
            });
            let _ = tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut stream, &reply)).await;
        } else {
            self.serve_requests(&mut stream).await;
        }
        self.metrics.connections.dec();
    }

    async fn serve_requests(&self, stream: &mut UnixStream) {
        loop {
            let request = match tokio::time::timeout(IDLE_TIMEOUT, read_frame(stream)).await {
                Err(_) | Ok(Err(FrameError::Closed)) => return,
                Ok(Ok(request)) => request,
                Ok(Err(e)) => {
                    // The stream may be out of step: answer once, then hang up.
                    let reply = self.refused(Refusal {
                        code: RefusalCode::Malformed,
                        reason: e.to_string(),
                    });
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, write_frame(stream, &reply)).await;
                    return;
                }
            };
            let reply = self.answer(request).await;
            let Some(frame) = self.fitted_frame(&reply) else {
                return;
            };
            let sent = async {
                stream.write_all(&frame).await?;
                stream.flush().await
            };
            match tokio::time::timeout(WRITE_TIMEOUT, sent).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

/// Every key name in `only` is one of `keys`.
fn all_held(keys: &[SecretKey], only: Option<&[String]>) -> Result<(), Refusal> {
    match only
        .unwrap_or_default()
        .iter()
        .find(|name| !keys.iter().any(|k| k.name() == name.as_str()))
    {
        Some(missing) => Err(Refusal {
            code: RefusalCode::UnknownKey,
            reason: format!("no key named {missing:?} is loaded"),
        }),
        None => Ok(()),
    }
}

pub async fn serve(listener: &UnixListener, signer: Arc<Signer>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(signer.clone().connection(stream));
            }
            // Out of descriptors and the like: keep serving the others.
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
