//! `GET|HEAD /nar/<narhash52>.nar?hash=<hash32>`, the nix-serve form
//! `/nar/<hash32>-<narhash52>.nar`, and `.nar.zst` for narinfo-level zstd.
//!
//! Everything that can fail is decided before the headers: the path is
//! valid in the DB, the URL's NAR hash is the DB's, and the walk of the
//! files succeeded and gives the DB's NAR size. Only then do the headers go
//! out (`Content-Length` = NAR size for identity), and the body streams; a
//! failure after that aborts the connection (see `body.rs`).

use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use futures_util::StreamExt;
use larder_store::Sha256Hash;
use larder_store::db::PathInfo;
use larder_store::dump::{DumpError, NarStream};
use larder_store::nar::NarPlan;

use super::negotiate::accepts;
use crate::body::{BodyItem, MeteredStream, chunked_body, reader_body, respond, sized_body};
use crate::error::ServerError;
use crate::lookup;
use crate::nar::compress::{ZstdSettings, zstd_stream};
use crate::nar::range;
use crate::state::AppState;

const ROUTE: &str = "/nar/{file}";
const NAR_TYPE: &str = "application/x-nix-nar";

/// What a NAR URL names.
#[derive(Debug, PartialEq, Eq)]
struct NarUrl {
    nar_hash: Sha256Hash,
    path_hash: Option<String>,
    zstd: bool,
}

fn parse_file(file: &str) -> Option<NarUrl> {
    let (stem, zstd) = match file.strip_suffix(".nar.zst") {
        Some(stem) => (stem, true),
        None => (file.strip_suffix(".nar")?, false),
    };
    let (path_hash, nar_hash) = match stem.split_once('-') {
        Some((path, nar)) => (Some(path.to_owned()), nar),
        None => (None, stem),
    };
    if nar_hash.len() != 52 {
        return None;
    }
    let nar_hash = format!("sha256:{nar_hash}").parse().ok()?;
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
    req: HttpRequest,
    state: web::Data<AppState>,
    file: web::Path<String>,
) -> Result<HttpResponse, ServerError> {
    let url = parse_file(&file)
        .ok_or_else(|| ServerError::NotFound(format!("not a NAR file name: {file:?}")))?;
    let info = checked_info(&state, &url, req.query_string()).await?;
    // Ranges are on identity NARs only; a `.nar.zst` is always whole.
    let range = match req.headers().get(header::RANGE) {
        Some(value) if !url.zstd => Some(
            value
                .to_str()
                .map_err(|_| ServerError::BadRequest("non-ASCII Range header".to_owned()))?
                .to_owned(),
        ),
        _ => None,
    };
    let zstd = url.zstd || (range.is_none() && accepts(&req, "zstd"));
    let mut builder = headers(url.zstd, zstd);
    let head = req.method() == actix_web::http::Method::HEAD;
    let cache_key = format!(
        "{}-zstd{}",
        info.nar_hash.to_nix32(),
        state.config.zstd_level
    );
    if zstd && let Some(body) = cached(&state, &cache_key, head).await? {
        return Ok(respond(builder, body));
    }
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
    let response = Response {
        state: &state,
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
    let range = range::parse(&range, size)?;
    builder
        .status(actix_web::http::StatusCode::PARTIAL_CONTENT)
        .insert_header((header::CONTENT_RANGE, range.content_range(size)));
    response.identity(builder, range.start, range.end)
}

/// The valid path the URL names, whose NAR hash is the URL's.
async fn checked_info(
    state: &AppState,
    url: &NarUrl,
    query: &str,
) -> Result<Arc<PathInfo>, ServerError> {
    let path_hash = url
        .path_hash
        .clone()
        .or_else(|| query_hash(query))
        .ok_or_else(|| ServerError::NotFound("NAR URL without ?hash=".to_owned()))?;
    let info = lookup::by_hash(state, &path_hash).await?;
    if info.nar_hash != url.nar_hash {
        return Err(ServerError::NotFound(format!(
            "{} has NAR hash {}, not {}",
            info.path, info.nar_hash, url.nar_hash
        )));
    }
    Ok(info)
}

/// A `.nar.zst` is a zstd file; a `.nar` is a NAR, maybe zstd-encoded for
/// this client, and varies with `Accept-Encoding`.
fn headers(zst_file: bool, zstd: bool) -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    if zst_file {
        builder.content_type("application/zstd");
        return builder;
    }
    builder
        .content_type(NAR_TYPE)
        .insert_header((header::VARY, "Accept-Encoding"))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    if zstd {
        builder.insert_header((header::CONTENT_ENCODING, "zstd"));
    }
    builder
}

/// The compressed NAR from the cache, if it is there: a static file.
async fn cached(state: &AppState, key: &str, head: bool) -> Result<Option<BoxBody>, ServerError> {
    let Some(cache) = state.nar_cache.clone() else {
        return Ok(None);
    };
    let key = key.to_owned();
    let found = web::block(move || cache.get(&key))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?;
    let Some((file, len)) = found else {
        return Ok(None);
    };
    let metrics = state.metrics.clone();
    reader_body(head, file, Some(len), metrics, ROUTE, "zstd").map(Some)
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
            let compressed = zstd_stream(self.nar(0, size)?, size, settings, metrics.clone(), fill);
            Ok(MeteredStream::new(compressed, metrics, ROUTE, "zstd", None))
        })?;
        Ok(respond(builder, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAR: &str = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";

    #[test]
    fn both_url_forms() {
        let plain = parse_file(&format!("{NAR}.nar")).unwrap();
        assert_eq!(plain.path_hash, None);
        assert!(!plain.zstd);
        let serve = parse_file(&format!("8y7yr95drh588a264899m27vi59a9f4q-{NAR}.nar.zst")).unwrap();
        assert_eq!(
            serve.path_hash.as_deref(),
            Some("8y7yr95drh588a264899m27vi59a9f4q")
        );
        assert!(serve.zstd);
        assert_eq!(serve.nar_hash, plain.nar_hash);
        assert!(parse_file(&format!("{NAR}.nar.bz2")).is_none());
        assert!(parse_file("abc.nar").is_none());
        assert!(parse_file(&format!("{}.nar", "e".repeat(52))).is_none());
        assert_eq!(query_hash("x=1&hash=abc").as_deref(), Some("abc"));
    }
}
