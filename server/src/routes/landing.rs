//! `GET /`: what this cache is and how to use it, with a nix.conf snippet.

use actix_web::{HttpRequest, HttpResponse, web};

use super::html::html_escape;
use crate::state::AppState;

pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // The Host header is the client's word: escaped like any other input.
    let url = {
        let info = req.connection_info();
        html_escape(&format!("{}://{}", info.scheme(), info.host()))
    };
    let store_dir = html_escape(state.location.store_dir());
    let priority = state.config.priority;
    let (keys, trusted) = public_keys(&state).await;
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>larder binary cache</title></head>
<body>
<h1>larder binary cache</h1>
<dl>
<dt>Cache URL</dt><dd><code>{url}</code></dd>
<dt>Store dir</dt><dd><code>{store_dir}</code></dd>
<dt>Priority</dt><dd>{priority}</dd>
<dt>Public keys</dt><dd>{keys}</dd>
</dl>
<p>Add to <code>/etc/nix/nix.conf</code>:</p>
<pre>extra-substituters = {url}
{trusted}</pre>
<p>Or try it once: <code>nix copy --from {url} /nix/store/…</code></p>
</body></html>
"#
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page)
}

/// The signer's public keys as HTML, and the nix.conf line that trusts them.
async fn public_keys(state: &AppState) -> (String, String) {
    let Some(signer) = &state.signer_client else {
        return (
            "none: no signer configured, narinfo files carry the store's own signatures".to_owned(),
            "# no signing key configured on this cache".to_owned(),
        );
    };
    match signer.public_keys().await {
        Ok(keys) => {
            let keys = html_escape(&keys.join(" "));
            (
                format!("<code>{keys}</code>"),
                format!("extra-trusted-public-keys = {keys}"),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "landing page: cannot ask the signer for its keys");
            (
                "the signer cannot be reached right now".to_owned(),
                "# the signer cannot be reached right now: reload for its keys".to_owned(),
            )
        }
    }
}
