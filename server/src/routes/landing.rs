//! `GET /`: what this cache is and how to use it, with a nix.conf snippet.

use actix_web::{HttpRequest, HttpResponse, web};

use super::html_escape;
use crate::state::AppState;

pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let info = req.connection_info();
    // The Host header is the client's word: escaped like any other input.
    let url = html_escape(&format!("{}://{}", info.scheme(), info.host()));
    let store_dir = html_escape(state.location.store_dir());
    let priority = state.config.priority;
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>larder binary cache</title></head>
<body>
<h1>larder binary cache</h1>
<dl>
<dt>Cache URL</dt><dd><code>{url}</code></dd>
<dt>Store dir</dt><dd><code>{store_dir}</code></dd>
<dt>Priority</dt><dd>{priority}</dd>
<dt>Public keys</dt><dd>none configured: narinfo files carry the store's own signatures</dd>
</dl>
<p>Add to <code>/etc/nix/nix.conf</code>:</p>
<pre>extra-substituters = {url}
# with a signing key configured, also:
# extra-trusted-public-keys = &lt;key name&gt;:&lt;base64 public key&gt;</pre>
<p>Or try it once: <code>nix copy --from {url} /nix/store/…</code></p>
</body></html>
"#
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}
