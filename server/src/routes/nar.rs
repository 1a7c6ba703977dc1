//! `GET|HEAD /nar/…`: a NAR, by every URL form Nix binary caches have
//! used, so a narinfo a client cached from another server still works:
//!
//! - `/nar/<narhash52>.nar?hash=<hash32>`: larder's and harmonia's form;
//! - `/nar/<hash32>-<narhash52>.nar`: nix-serve's and nix-serve-ng's;
//! - `/nar/<hash32>.nar`: nix-serve's oldest, with no NAR hash in it;
//! - each with `.nar.zst` for narinfo-level zstd.
//!
//! Everything that can fail is decided before the headers: the path is
//! valid in the DB, the URL's NAR hash (when it has one) is the DB's, and
//! the walk of the files succeeded and gives the DB's NAR size. Only then
//! do the headers go out, and the body streams; a failure after that
//! aborts the connection (see `body.rs`).
//!
//! Ranges (Nix resumes a cut download with `Range`, but only after a
//! response that said `Accept-Ranges: bytes` and had no
//! `Content-Encoding`):
//! - a `.nar` is served by seeking in the plan: `Accept-Ranges: bytes`;
//! - a `.nar.zst` in the compressed-NAR cache is a complete file:
//!   `Accept-Ranges: bytes`, ranges honoured;
//! - a `.nar.zst` compressed on the fly has no length or offsets yet:
//!   `Accept-Ranges: none`, and a `Range` is ignored (200, whole body), as
//!   RFC 9110 §14.2 allows. With `cache-dir` set, a single-range request
//!   for an uncached `.nar.zst` first compresses the whole NAR into the
//!   cache and then serves the range from the file. A resumed download
//!   gets the same bytes whenever the compression mode is the same: NARs
//!   under 4 MiB are always single-threaded; larger ones are filled
//!   multi-threaded, as `compress.rs` compresses them unless it is at its
//!   limit of multi-threaded streams, and zstd's multi-threaded output does
//!   not depend on the number of workers (`zstd -1 -T1`, `-T2`, `-T4` gave
//!   identical files for 27 MB; `--single-thread` a different one). A
//!   mismatch cannot go unnoticed: Nix checks the NAR hash of what it
//!   decompressed.
//!
//! Shared caches: `Cache-Control`, `ETag`, `If-None-Match` (304) and
//! `If-Range` as `http_cache.rs` describes.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use futures_util::StreamExt;
use larder_store::Sha256Hash;
use larder_store::db::PathInfo;
use larder_store::dump::{DumpError, NarStream};
use larder_store::nar::NarPlan;

use super::http_cache::{EntityTag, immutable, not_modified, short_lived, validators};
use super::negotiate::accepts;
use crate::body::{BodyItem, MeteredStream, chunked_body, reader_body, respond, sized_body};
use crate::error::ServerError;
use crate::lookup;
use crate::nar::compress::{ZstdSettings, zstd_stream};
use crate::nar::nar_cache::file_name;
use crate::nar::offload::{self, Offload};
use crate::nar::range::{self, ByteRange};
use crate::placement::ViewRef;
use crate::state::AppState;
use crate::view::View;

use super::names::NAR as ROUTE;
const NAR_TYPE: &str = "application/x-nix-nar";
/// Below this NAR size the on-the-fly compressor is single-threaded
/// (`nar/compress.rs`); a fill before serving makes the same choice.
const MULTITHREAD_FROM: u64 = 4 * 1024 * 1024;

/// What a NAR URL names.
#[derive(Debug, PartialEq, Eq)]
struct NarUrl {
    /// Absent in nix-serve's oldest form, `/nar/<hash32>.nar`.
    nar_hash: Option<Sha256Hash>,
    path_hash: Option<String>,
    zstd: bool,
}

fn parse_file(file: &str) -> Option<NarUrl> {
    let (stem, zstd) = match file.strip_suffix(".nar.zst") {
        Some(stem) => (stem, true),
        None => (file.strip_suffix(".nar")?, false),
    };
    let nar_hash = |s: &str| -> Option<Sha256Hash> {
        if s.len() != 52 {
            return None;
        }
        format!("sha256:{s}").parse().ok()
    };
    let (path_hash, nar_hash) = match stem.split_once('-') {
        Some((path, nar)) => (Some(path.to_owned()), Some(nar_hash(nar)?)),
        None if stem.len() == 32 => (Some(stem.to_owned()), None),
        None => (None, Some(nar_hash(stem)?)),
    };
    Some(NarUrl {
        nar_hash,
        path_hash,
        zstd,
    })
}

fn query_hash(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("hash="))
        .map(str::to_owned)
}

pub async fn get(
    req: &HttpRequest,
    state: &AppState,
    file: &str,
    view: &ViewRef,
) -> Result<HttpResponse, ServerError> {
    let mut response = answer(req, state, file, view).await?;
    if state.config.accel_redirect.is_some() {
        // The answer depends on nginx's `X-Larder-Offload`: a shared cache
        // between a client and larder must never hand the empty answer
        // meant for nginx to a client (one that sent the header itself).
        offload::vary_on_it(response.headers_mut());
    }
    Ok(response)
}

async fn answer(
    req: &HttpRequest,
    state: &AppState,
    file: &str,
    view: &ViewRef,
) -> Result<HttpResponse, ServerError> {
    let url = parse_file(file)
        .ok_or_else(|| ServerError::NotFound(format!("not a NAR file name: {file:?}")))?;
    let info = checked_info(state, view, &url, req.query_string()).await?;
    let head = req.method() == actix_web::http::Method::HEAD;
    let offload = Offload::decide(state, req, head);
    let nar_hash = info.nar_hash.to_nix32();
    let cache_control = match url.nar_hash {
        Some(_) => immutable(view),
        None => short_lived(state.config.narinfo_max_age_secs, view),
    };
    let zstd_tag = EntityTag::weak(format!("{nar_hash}-zstd"));
    let identity_tag = EntityTag::strong(nar_hash.clone());
    // A Range under an If-Range that does not match: the whole body.
    let ranged_tag = if url.zstd { &zstd_tag } else { &identity_tag };
    let range_header = range::header(req.headers()).filter(|_| ranged_tag.range_allowed(req));
    let cache_key = format!("{nar_hash}-zstd{}", state.config.zstd_level);
    if url.zstd {
        if zstd_tag.none_match(req) {
            return Ok(not_modified(&zstd_tag, &cache_control, false));
        }
        let mut response = zst_file(state, &info, &cache_key, head, range_header, offload).await?;
        validators(&mut response, &zstd_tag, &cache_control);
        return Ok(response);
    }
    let range = match range_header {
        Some(h) => range::parse(h, info.nar_size)?,
        None => None,
    };
    let zstd = range.is_none() && accepts(req, "zstd");
    let tag = if zstd { &zstd_tag } else { &identity_tag };
    if tag.none_match(req) {
        return Ok(not_modified(tag, &cache_control, true));
    }
    let mut builder = nar_headers(zstd);
    builder
        .insert_header((header::ETAG, tag.header_value()))
        .insert_header((header::CACHE_CONTROL, cache_control));
    if zstd && let Some((file, len)) = cache_lookup(state, &cache_key).await? {
        if let Some(prefix) = offload.hit(state) {
            return Ok(redirected(state, builder, prefix, "encoded", &cache_key));
        }
        return Ok(respond(builder, file_body(state, file, len, None, head)?));
    }
    let plan = checked_plan(state, &info).await?;
    let response = Response {
        state,
        plan: &plan,
        head,
    };
    if zstd {
        return response.zstd(builder, &cache_key);
    }
    let size = plan.nar_size();
    let Some(range) = range else {
        return response.identity(builder, 0, size);
    };
    builder
        .status(StatusCode::PARTIAL_CONTENT)
        .insert_header((header::CONTENT_RANGE, range.content_range(size)));
    response.identity(builder, range.start, range.end)
}

/// A `.nar.zst`: the cached file if there is one (ranges honoured), else
/// compressed on the fly (no ranges), unless a range asks for a fill first.
async fn zst_file(
    state: &AppState,
    info: &PathInfo,
    key: &str,
    head: bool,
    range_header: Option<&[u8]>,
    offload: Offload<'_>,
) -> Result<HttpResponse, ServerError> {
    if let Some(response) = cached_zst(state, key, head, range_header, offload).await? {
        return Ok(response);
    }
    if let (Some(cache), Some(h)) = (&state.nar_cache, range_header)
        && range::is_single_range(h)
    {
        match fill_first(state, cache.clone(), info, key).await {
            Ok(()) => {
                if let Some(response) =
                    cached_zst(state, key, head, range_header, Offload::No).await?
                {
                    return Ok(response);
                }
            }
            // The whole body then, which a client may still use.
            Err(e @ ServerError::Compression(_)) => {
                tracing::warn!(error = %e, "cannot fill the NAR cache for a range");
            }
            Err(e) => return Err(e),
        }
    }
    let plan = checked_plan(state, info).await?;
    let mut builder = HttpResponse::Ok();
    builder
        .content_type("application/zstd")
        .insert_header((header::ACCEPT_RANGES, "none"));
    Response {
        state,
        plan: &plan,
        head,
    }
    .zstd(builder, key)
}

/// The cached `.nar.zst` as a static file: `Accept-Ranges: bytes`, and the
/// requested range (206) or the whole file; handed to nginx when `offload`
/// says so.
async fn cached_zst(
    state: &AppState,
    key: &str,
    head: bool,
    range_header: Option<&[u8]>,
    offload: Offload<'_>,
) -> Result<Option<HttpResponse>, ServerError> {
    let Some((file, len)) = cache_lookup(state, key).await? else {
        return Ok(None);
    };
    let range = match range_header {
        Some(h) => range::parse(h, len)?,
        None => None,
    };
    let mut builder = HttpResponse::Ok();
    builder.content_type("application/zstd");
    if let Some(prefix) = offload.hit(state) {
        // nginx serves the file with its own `Accept-Ranges: bytes`; ours
        // too would reach the client twice.
        return Ok(Some(redirected(state, builder, prefix, "file", key)));
    }
    builder.insert_header((header::ACCEPT_RANGES, "bytes"));
    if let Some(range) = range {
        builder
            .status(StatusCode::PARTIAL_CONTENT)
            .insert_header((header::CONTENT_RANGE, range.content_range(len)));
    }
    let body = file_body(state, file, len, range, head)?;
    Ok(Some(respond(builder, body)))
}

/// Walk the path (or take its recent plan) and check it against the DB.
async fn checked_plan(state: &AppState, info: &PathInfo) -> Result<NarPlan, ServerError> {
    let plan = match state.plan_cache.get(&info.path, &info.nar_hash) {
        Some(plan) => plan,
        None => NarPlan::walk_async(state.location.real_path(&info.path)).await?,
    };
    if plan.nar_size() != info.nar_size {
        return Err(ServerError::StoreCorrupt {
            path: info.path.to_string(),
            what: format!(
                "NAR size {} on disk, {} in the DB",
                plan.nar_size(),
                info.nar_size
            ),
        });
    }
    state.plan_cache.put(&info.path, &info.nar_hash, &plan);
    Ok(plan)
}

/// Compress the whole NAR into the cache before answering (see the module
/// doc); zstd errors come as [`ServerError::Compression`].
async fn fill_first(
    state: &AppState,
    cache: Arc<crate::nar::nar_cache::NarCache>,
    info: &PathInfo,
    key: &str,
) -> Result<(), ServerError> {
    let plan = checked_plan(state, info).await?;
    let mut stream: NarStream = plan.stream(0)?;
    let settings = ZstdSettings::from_config(&state.config);
    let threads = if plan.nar_size() >= MULTITHREAD_FROM {
        settings.threads
    } else {
        0
    };
    let handle = tokio::runtime::Handle::current();
    let key = key.to_owned();
    web::block(move || {
        let chunks = std::iter::from_fn(|| handle.block_on(stream.next()))
            .map(|chunk| chunk.map_err(std::io::Error::other));
        cache.fill_with(&key, chunks, settings.level, threads)
    })
    .await
    .map_err(|e| ServerError::Internal(e.to_string()))?
    .map_err(ServerError::Compression)
}

/// The valid path of `view` the URL names, whose NAR hash is the URL's.
/// There is no NAR-hash index: a URL without the path's hash part (in
/// its name or `?hash=`) is absent, so a NAR hash alone finds nothing.
async fn checked_info(
    state: &AppState,
    view: &View,
    url: &NarUrl,
    query: &str,
) -> Result<Arc<PathInfo>, ServerError> {
    let path_hash = url
        .path_hash
        .clone()
        .or_else(|| query_hash(query))
        .ok_or_else(|| ServerError::NotFound("NAR URL without ?hash=".to_owned()))?;
    let info = lookup::by_hash(state, view, &path_hash).await?;
    if let Some(nar_hash) = &url.nar_hash
        && info.nar_hash != *nar_hash
    {
        return Err(ServerError::NotFound(format!(
            "{} has NAR hash {}, not {nar_hash}",
            info.path, info.nar_hash
        )));
    }
    Ok(info)
}

/// A `.nar`: a NAR, maybe zstd-encoded for this client, varying with
/// `Accept-Encoding`; ranges are on the identity encoding only, so a
/// zstd-encoded answer says `Accept-Ranges: none`.
fn nar_headers(zstd: bool) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .content_type(NAR_TYPE)
        .insert_header((header::VARY, "Accept-Encoding"));
    // Ranges are offsets in the identity NAR: a client resuming a zstd
    // body with one would splice plain bytes onto compressed ones.
    if zstd {
        builder
            .insert_header((header::CONTENT_ENCODING, "zstd"))
            .insert_header((header::ACCEPT_RANGES, "none"));
    } else {
        builder.insert_header((header::ACCEPT_RANGES, "bytes"));
    }
    builder
}

/// The cached compressed NAR for `key`, opened, with its size.
async fn cache_lookup(
    state: &AppState,
    key: &str,
) -> Result<Option<(std::fs::File, u64)>, ServerError> {
    let Some(cache) = state.nar_cache.clone() else {
        return Ok(None);
    };
    let key = key.to_owned();
    web::block(move || cache.get(&key))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))
}

/// An empty answer that tells nginx to send the cache file of `key` from
/// its internal location `<prefix><kind>/` (`file`: as a `.nar.zst`;
/// `encoded`: with `Content-Encoding: zstd`). nginx keeps this response's
/// `Content-Type`, `Accept-Ranges` (set here only for `encoded`: `none`;
/// for `file` nginx adds its own) and `Cache-Control`; the recipe adds
/// the rest.
fn redirected(
    state: &AppState,
    mut builder: HttpResponseBuilder,
    prefix: &str,
    kind: &str,
    key: &str,
) -> HttpResponse {
    state
        .metrics
        .offload
        .with_label_values(&["redirected"])
        .inc();
    builder
        .insert_header((
            "x-accel-redirect",
            format!("{prefix}{kind}/{}", file_name(key)),
        ))
        .finish()
}

/// `file` (of `len` bytes) or its `range` as a metered body.
fn file_body(
    state: &AppState,
    mut file: std::fs::File,
    len: u64,
    range: Option<ByteRange>,
    head: bool,
) -> Result<BoxBody, ServerError> {
    let metrics = state.metrics.clone();
    let Some(range) = range else {
        return reader_body(head, file, Some(len), metrics, ROUTE, "zstd");
    };
    file.seek(SeekFrom::Start(range.start))
        .map_err(ServerError::io("seeking in a cached NAR"))?;
    let part = file.take(range.len());
    reader_body(head, part, Some(range.len()), metrics, ROUTE, "zstd")
}

/// The body of a checked NAR response.
struct Response<'a> {
    state: &'a AppState,
    plan: &'a NarPlan,
    head: bool,
}

fn from_dump(item: Result<bytes::Bytes, DumpError>) -> BodyItem {
    item.map_err(ServerError::from)
}

impl Response<'_> {
    fn nar(
        &self,
        start: u64,
        end: u64,
    ) -> Result<impl futures_util::Stream<Item = BodyItem> + Unpin + Send + 'static, ServerError>
    {
        let stream: NarStream = self.plan.stream_range(start, end)?;
        Ok(stream.map(from_dump as fn(_) -> _))
    }

    fn identity(
        &self,
        builder: HttpResponseBuilder,
        start: u64,
        end: u64,
    ) -> Result<HttpResponse, ServerError> {
        let len = end - start;
        let body = sized_body(self.head, len, || {
            let metrics = self.state.metrics.clone();
            Ok(MeteredStream::new(
                self.nar(start, end)?,
                metrics,
                ROUTE,
                "identity",
                Some(len),
            ))
        })?;
        Ok(respond(builder, body))
    }

    fn zstd(&self, builder: HttpResponseBuilder, key: &str) -> Result<HttpResponse, ServerError> {
        let body = chunked_body(self.head, || {
            let size = self.plan.nar_size();
            let metrics = self.state.metrics.clone();
            let fill = self.state.nar_cache.clone().map(|c| (c, key.to_owned()));
            let settings = ZstdSettings::from_config(&self.state.config);
            // No read-ahead: the encoder holds the NAR's recent bytes
            // anyway, and a stream waiting for its client then holds no
            // input chunk (64 streams: 16 MiB).
            let nar = self.plan.stream(0)?.without_read_ahead();
            let nar = nar.map(from_dump as fn(_) -> _);
            let compressed = zstd_stream(nar, size, settings, metrics.clone(), fill);
            Ok(MeteredStream::new(compressed, metrics, ROUTE, "zstd", None))
        })?;
        Ok(respond(builder, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAR: &str = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";

    #[test]
    fn both_url_forms() {
        let plain = parse_file(&format!("{NAR}.nar")).unwrap();
        assert_eq!(plain.path_hash, None);
        assert!(plain.nar_hash.is_some());
        assert!(!plain.zstd);
        let serve = parse_file(&format!("8y7yr95drh588a264899m27vi59a9f4q-{NAR}.nar.zst")).unwrap();
        assert_eq!(
            serve.path_hash.as_deref(),
            Some("8y7yr95drh588a264899m27vi59a9f4q")
        );
        assert!(serve.zstd);
        assert_eq!(serve.nar_hash, plain.nar_hash);
        let oldest = parse_file("8y7yr95drh588a264899m27vi59a9f4q.nar").unwrap();
        assert_eq!(
            oldest.path_hash.as_deref(),
            Some("8y7yr95drh588a264899m27vi59a9f4q")
        );
        assert_eq!(oldest.nar_hash, None);
        assert!(
            parse_file("8y7yr95drh588a264899m27vi59a9f4q.nar.zst")
                .unwrap()
                .zstd
        );
        assert!(parse_file("8y7yr95drh588a264899m27vi59a9f4q-short.nar").is_none());
        assert!(parse_file(&format!("{NAR}.nar.bz2")).is_none());
        assert!(parse_file("abc.nar").is_none());
        assert!(parse_file(&format!("{}.nar", "e".repeat(52))).is_none());
        assert_eq!(query_hash("x=1&hash=abc").as_deref(), Some("abc"));
    }

    proptest! {
        /// Every name a NAR URL may have is classified as what it names.
        #[test]
        fn nar_urls_classify_exactly(
            nar in any::<[u8; 32]>(),
            path in "[0-9abcdfghijklmnpqrsvwxyz]{32}",
            form in 0..3u8,
            zstd in any::<bool>(),
        ) {
            // Both parts, the NAR hash alone, or the path hash alone.
            let nar = (form != 2).then_some(Sha256Hash(nar));
            let path = (form != 1).then_some(path);
            let stem = match (&path, &nar) {
                (Some(p), Some(n)) => format!("{p}-{}", n.to_nix32()),
                (Some(p), None) => p.clone(),
                (None, Some(n)) => n.to_nix32(),
                (None, None) => unreachable!(),
            };
            let file = format!("{stem}.nar{}", if zstd { ".zst" } else { "" });
            prop_assert_eq!(parse_file(&file), Some(NarUrl { nar_hash: nar, path_hash: path, zstd }));
        }

        /// Anything else: no panic, and only `.nar`/`.nar.zst` names with a
        /// well-formed NAR hash (when there is one) are taken.
        #[test]
        fn other_nar_names_are_refused(file in "[0-9a-z./%-]{0,90}(\\.nar(\\.zst)?)?") {
            if let Some(url) = parse_file(&file) {
                prop_assert!(file.ends_with(".nar") || file.ends_with(".nar.zst"));
                if let Some(h) = url.nar_hash {
                    prop_assert!(file.contains(&h.to_nix32()));
                }
                prop_assert!(url.nar_hash.is_some() || url.path_hash.as_ref().is_some_and(|p| p.len() == 32));
            }
        }
    }
}
