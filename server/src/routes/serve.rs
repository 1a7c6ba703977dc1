//! `GET /serve/<hash32>/<path>`: one file (or a directory listing) inside a
//! store path, never outside it.
//!
//! The path is percent-decoded once, then walked component by component
//! with `lstat`: `..` in the URL is refused, and a symlink is followed only
//! when it is relative and stays inside the same store path (its `..`s may
//! not climb above the store path's root). Absolute symlinks are refused:
//! they point outside the store path even when they point into the store.
//!
//! Names are bytes: a directory listing links each entry by its raw name,
//! percent-encoded byte by byte, so a name that is not UTF-8 gets a link
//! that resolves to it (and two such names never share one).
//!
//! Whatever a store path holds is served in the cache's own origin, so
//! every answer carries [`CONTENT_SECURITY_POLICY`] (a sandbox: no script,
//! no same-origin access, nothing loaded) and `X-Content-Type-Options:
//! nosniff`: a pushed `.html` with a script is shown, never run.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};

use super::html::html_escape;
use crate::body::{reader_body, respond};
use crate::error::ServerError;
use crate::lookup;
use crate::placement::ViewRef;
use crate::state::AppState;

use super::names::SERVE_TAIL as ROUTE;
/// As many symlinks as Linux follows in one lookup.
const MAX_SYMLINKS: usize = 40;
/// What a `/serve` answer may do in a browser: nothing but be shown.
/// `sandbox` gives the document a unique opaque origin with scripts, forms
/// and popups off; `default-src 'none'` loads nothing else, while inline
/// styles and images from the same response stay allowed.
pub const CONTENT_SECURITY_POLICY: &str =
    "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'";

enum Target {
    File(File, u64, PathBuf),
    /// Entry names as raw bytes, sorted.
    Directory(Vec<Vec<u8>>),
}

/// A 200 with the headers every `/serve` answer carries.
fn confined() -> HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    builder
}

/// `hash`: the hash part as the router left it (percent-decoded except
/// `%`, `/` and `+`; see `dynamic.rs`).
pub async fn get(
    req: &HttpRequest,
    state: &AppState,
    hash: &str,
    view: &ViewRef,
) -> Result<HttpResponse, ServerError> {
    if !view.serve {
        return Err(ServerError::NotFound(format!(
            "/serve is off in view {}",
            view.name
        )));
    }
    let info = lookup::by_hash(state, view, hash).await?;
    let root = state.location.real_path(&info.path);
    // The raw (still percent-encoded) path, so that `%2e%2e` and `%2f` are
    // decoded exactly once, here, before the `..` check.
    let raw_tail = req
        .path()
        .strip_prefix("/serve/")
        .and_then(|rest| rest.strip_prefix(hash))
        .unwrap_or("");
    let tail = components(raw_tail)?;
    let target = web::block(move || resolve(&root, tail))
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))??;
    Ok(match target {
        Target::File(file, len, path) => {
            let head = req.method() == actix_web::http::Method::HEAD;
            let metrics = state.metrics.clone();
            let body = reader_body(head, file, Some(len), metrics, ROUTE, "identity")?;
            let mut builder = confined();
            builder.content_type(content_type(&path));
            respond(builder, body)
        }
        Target::Directory(entries) => confined()
            .content_type("text/html; charset=utf-8")
            // Links under the view's prefix, which the router stripped.
            .body(listing(
                &format!("{}{}", view.base_path(), req.path()),
                &entries,
            )),
    })
}

/// Percent-decode and split; refuse `..` and NUL.
fn components(raw: &str) -> Result<Vec<OsString>, ServerError> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let mut out = Vec::new();
    for part in decoded.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(ServerError::BadRequest("`..` in a /serve path".to_owned())),
            p if p.contains(&0) => {
                return Err(ServerError::BadRequest("NUL in a /serve path".to_owned()));
            }
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Ok(out)
}

/// Walk `tail` under `root` (blocking), following only symlinks that stay
/// inside `root`.
fn resolve(root: &Path, tail: Vec<OsString>) -> Result<Target, ServerError> {
    let refused =
        |what: String| ServerError::NotFound(format!("/serve under {}: {what}", root.display()));
    let root_meta = std::fs::symlink_metadata(root).map_err(|e| refused(e.to_string()))?;
    if root_meta.file_type().is_symlink() {
        return Err(refused("the store path itself is a symlink".to_owned()));
    }
    // Components still to walk, last first; and where we are below `root`.
    let mut pending: Vec<OsString> = tail.into_iter().rev().collect();
    let mut here: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            // Only symlink targets get here: the URL's `..` was refused.
            here.pop()
                .ok_or_else(|| refused("a symlink climbs out of the store path".to_owned()))?;
            continue;
        }
        let candidate: PathBuf = std::iter::once(root.as_os_str())
            .chain(here.iter().map(OsString::as_os_str))
            .chain([part.as_os_str()])
            .collect();
        let meta = std::fs::symlink_metadata(&candidate)
            .map_err(|e| refused(format!("{}: {e}", candidate.display())))?;
        if !meta.file_type().is_symlink() {
            here.push(part);
            continue;
        }
        hops += 1;
        if hops > MAX_SYMLINKS {
            return Err(refused("too many symlinks".to_owned()));
        }
        let link = std::fs::read_link(&candidate).map_err(|e| refused(e.to_string()))?;
        for component in link.components().rev() {
            match component {
                Component::Normal(c) => pending.push(c.to_owned()),
                Component::ParentDir => pending.push(OsString::from("..")),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refused(format!("absolute symlink {}", candidate.display())));
                }
            }
        }
    }
    let path: PathBuf = std::iter::once(root.as_os_str())
        .chain(here.iter().map(OsString::as_os_str))
        .collect();
    open_target(path).map_err(|e| refused(e.to_string()))
}

fn open_target(path: PathBuf) -> std::io::Result<Target> {
    let meta = std::fs::symlink_metadata(&path)?;
    if meta.is_dir() {
        let mut entries: Vec<Vec<u8>> = std::fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name().into_vec()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        return Ok(Target::Directory(entries));
    }
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let file = File::open(&path)?;
    Ok(Target::File(file, meta.len(), path))
}

/// The listing of a directory: one link per entry, its href the raw name
/// percent-encoded byte by byte (what [`components`] decodes back), its
/// text the name shown lossily.
fn listing(url_path: &str, entries: &[Vec<u8>]) -> String {
    let base = html_escape(url_path.trim_end_matches('/'));
    let items: String = entries
        .iter()
        .map(|e| {
            let href = percent_encoding::percent_encode(e, percent_encoding::NON_ALPHANUMERIC);
            format!(
                "<li><a href=\"{base}/{href}\">{}</a></li>\n",
                html_escape(&String::from_utf8_lossy(e))
            )
        })
        .collect();
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{base}</title></head><body><ul>\n{items}</ul></body></html>\n"
    )
}

fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().map(OsStr::as_bytes).unwrap_or_default();
    match ext {
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"css" => "text/css",
        b"js" => "text/javascript",
        b"json" => "application/json",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"pdf" => "application/pdf",
        b"txt" | b"md" | b"nix" | b"sh" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn listing_links_round_trip_raw_names() {
        let names = vec![b"a\xfe".to_vec(), b"a\xff".to_vec(), b"<b> &.html".to_vec()];
        let html = listing("/serve/x/dir/", &names);
        assert!(html.contains("href=\"/serve/x/dir/a%FE\""), "{html}");
        assert!(html.contains("href=\"/serve/x/dir/a%FF\""), "{html}");
        assert!(html.contains("&lt;b&gt; &amp;.html</a>"), "{html}");
        for name in &names {
            let href = percent_encoding::percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
            let back = components(&format!("/{href}")).unwrap();
            assert_eq!(back, vec![OsString::from_vec(name.clone())]);
        }
    }

    #[test]
    fn url_components_refuse_parent_dirs_however_encoded() {
        for raw in ["/../etc", "/a/%2e%2e/b", "/%2E%2E", "/a%2f..%2fb", "/a/%00"] {
            assert!(
                matches!(components(raw), Err(ServerError::BadRequest(_))),
                "{raw}"
            );
        }
        let ok = components("/bin/./hello%20world").unwrap();
        assert_eq!(
            ok,
            vec![OsString::from("bin"), OsString::from("hello world")]
        );
    }

    #[test]
    fn symlinks_stay_inside_the_store_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("p");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        let link =
            |target: &str, name: &str| std::os::unix::fs::symlink(target, root.join(name)).unwrap();
        link("sub/file", "inside");
        link("../secret", "up");
        link("/etc/passwd", "absolute");
        link("sub/../sub/file", "roundabout");
        link("loop", "loop");
        let get = |p: &str| resolve(&root, components(p).unwrap());
        assert!(matches!(get("/inside"), Ok(Target::File(_, 1, _))));
        assert!(matches!(get("/roundabout"), Ok(Target::File(_, 1, _))));
        assert!(matches!(get("/sub"), Ok(Target::Directory(e)) if e == [b"file"]));
        for bad in ["/up", "/absolute", "/loop", "/missing"] {
            assert!(matches!(get(bad), Err(ServerError::NotFound(_))), "{bad}");
        }
    }

    proptest! {
        /// However a `/serve` tail is spelled (any mix of `.`, `%2e`, `%2f`,
        /// `%00`, `%25`, backslashes and overlong UTF-8), its components
        /// never climb, never hold a separator or a NUL, and a decoded `..`
        /// is always refused.
        #[test]
        fn serve_paths_never_climb(raw in prop::collection::vec(
            prop::sample::select(vec![
                "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%00", "%25", "%252e", "\\",
                "%5c", "%c0%ae", "%c0%af", "a", "etc", "%", "%zz", "%e2%80%a8",
            ]),
            0..12,
        )) {
            let raw = raw.concat();
            let decoded: Vec<u8> = percent_encoding::percent_decode_str(&raw).collect();
            let climbs = decoded.split(|&b| b == b'/').any(|p| p == b"..");
            match components(&raw) {
                Ok(parts) => {
                    prop_assert!(!climbs, "{:?}", raw);
                    for p in parts {
                        let b = p.as_bytes();
                        prop_assert!(!b.is_empty() && b != b"." && b != b"..", "{:?}", raw);
                        prop_assert!(!b.contains(&b'/') && !b.contains(&0), "{:?}", raw);
                    }
                }
                Err(e) => prop_assert!(matches!(e, ServerError::BadRequest(_)), "{:?}", raw),
            }
        }
    }
}
