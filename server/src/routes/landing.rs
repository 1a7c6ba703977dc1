//! `GET /`: what this cache (view) is and how to use it, with the nix.conf
//! snippet `/nix.conf` also serves.

use actix_web::{HttpRequest, HttpResponse, web};

use super::html::html_escape;
use super::setup::{cache_url, nix_conf, view_keys};
use crate::placement::ViewRef;
use crate::state::AppState;

pub async fn get(req: HttpRequest, state: web::Data<AppState>, view: ViewRef) -> HttpResponse {
    let raw_url = cache_url(&req, &state, &view);
    let url = html_escape(&raw_url);
    let store_dir = html_escape(state.location.store_dir());
    let priority = view.priority;
    let keys = view_keys(&state, &view).await;
    let shown_keys = match &keys {
        Ok(k) if k.is_empty() => {
            "none: no signer configured, narinfo files carry the store's own signatures".to_owned()
        }
        Ok(k) => format!("<code>{}</code>", html_escape(&k.join(" "))),
        Err(()) => "the signer cannot be reached right now".to_owned(),
    };
    let snippet = html_escape(&nix_conf(&raw_url, &keys, view.tokens.is_some()));
    let name = html_escape(&view.name);
    let what = match view.size() {
        None => "the whole store".to_owned(),
        Some(n) => format!("the closures of its roots ({n} paths)"),
    };
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>larder binary cache</title></head>
<body>
<h1>larder binary cache</h1>
<dl>
<dt>View</dt><dd><code>{name}</code>: {what}</dd>
<dt>Cache URL</dt><dd><code>{url}</code></dd>
<dt>Store dir</dt><dd><code>{store_dir}</code></dd>
<dt>Priority</dt><dd>{priority}</dd>
<dt>Public keys</dt><dd>{shown_keys}</dd>
</dl>
<p>Add to <code>/etc/nix/nix.conf</code> (also at <a href="{url}/nix.conf"><code>{url}/nix.conf</code></a>):</p>
<pre>{snippet}</pre>
<p>Or try it once: <code>nix copy --from {url} /nix/store/…</code></p>
</body></html>
"#
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}
