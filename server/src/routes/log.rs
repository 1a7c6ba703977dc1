//! `GET /log/<drv basename>`: a build log from
//! `<state>/log/nix/drvs/<2 chars>/<rest>[.bz2]`.
//!
//! A bzip2 log goes out as is (`Content-Encoding: bzip2`, which Nix
//! decodes) only to clients that list bzip2 in `Accept-Encoding`; every
//! other client gets it decompressed on a blocking thread.

use std::fs::File;
use std::path::PathBuf;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use larder_store::StorePath;

use super::negotiate::accepts;
use crate::body::{reader_body, respond};
use crate::error::ServerError;
use crate::placement::ViewRef;
use crate::state::AppState;

use super::names::LOG as ROUTE;

enum LogFile {
    Plain(File, u64),
    Bzip2(File, u64),
}

pub async fn get(
    req: &HttpRequest,
    state: &AppState,
    drv: &str,
    view: &ViewRef,
) -> Result<HttpResponse, ServerError> {
    // A valid basename has no '/' and cannot be `..`: it stays in the log dir.
    let drv = StorePath::from_basename(drv)
        .map_err(|e| ServerError::NotFound(format!("log name {drv:?}: {e}")))?;
    // Before the file system: a log outside the view costs what an absent one does.
    if !view.admits_log(&drv) {
        return Err(ServerError::NotFound(format!(
            "log of {drv} is not in view {}",
            view.name
        )));
    }
    let name = drv.to_string();
    let base = state.location.log_dir().join(&name[..2]).join(&name[2..]);
    let log = web::block(move || open(base))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
    let head = req.method() == actix_web::http::Method::HEAD;
    let metrics = state.metrics.clone();
    let mut builder = HttpResponse::Ok();
    builder.content_type("text/plain; charset=utf-8");
    let body = match log {
        LogFile::Plain(file, len) => {
            reader_body(head, file, Some(len), metrics, ROUTE, "identity")?
        }
        LogFile::Bzip2(file, len) if accepts(req, "bzip2") => {
            builder
                .insert_header((header::CONTENT_ENCODING, "bzip2"))
                .insert_header((header::VARY, "Accept-Encoding"));
            reader_body(head, file, Some(len), metrics, ROUTE, "bzip2")?
        }
        LogFile::Bzip2(file, _) => {
            builder.insert_header((header::VARY, "Accept-Encoding"));
            let decoder = bzip2::read::BzDecoder::new(file);
            reader_body(head, decoder, None, metrics, ROUTE, "identity")?
        }
    };
    Ok(respond(builder, body))
}

/// The plain log if there is one, else the bzip2 one (blocking).
fn open(base: PathBuf) -> Result<LogFile, ServerError> {
    let open_sized = |path: &PathBuf| -> std::io::Result<(File, u64)> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok((file, meta.len()))
    };
    if let Ok((file, len)) = open_sized(&base) {
        return Ok(LogFile::Plain(file, len));
    }
    let mut bz2 = base.clone().into_os_string();
    bz2.push(".bz2");
    let bz2 = PathBuf::from(bz2);
    match open_sized(&bz2) {
        Ok((file, len)) => Ok(LogFile::Bzip2(file, len)),
        Err(e) => Err(ServerError::NotFound(format!(
            "no build log at {}[.bz2]: {e}",
            base.display()
        ))),
    }
}
