//! What a client needs to use a view, shared by the landing page and
//! `/nix.conf`: the view's URL as clients reach it, the public keys of the
//! signer keys it signs with, and for a private view the netrc line
//! (with a placeholder: the server never shows a token).

use actix_web::HttpRequest;

use crate::state::AppState;
use crate::view::View;

/// The view's URL: `public-url` (behind a proxy) or the request's scheme
/// and `Host`, then the view's prefix. The `Host` is the client's word:
/// escape it wherever it is shown.
pub fn cache_url(req: &HttpRequest, state: &AppState, view: &View) -> String {
    let base = match &state.config.public_url {
        Some(url) => url.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    };
    format!("{base}{}", view.base_path())
}

/// The public keys the view's narinfo is signed with: the signer's keys
/// the view names (all when it names none). `Ok(empty)`: no signer.
/// `Err`: the signer cannot be reached now.
pub async fn view_keys(state: &AppState, view: &View) -> Result<Vec<String>, ()> {
    let Some(signer) = &state.signer_client else {
        return Ok(Vec::new());
    };
    match signer.public_keys().await {
        Ok(keys) => Ok(keys
            .into_iter()
            .filter(|k| {
                view.keys.as_ref().is_none_or(|names| {
                    names
                        .iter()
                        .any(|n| k.split_once(':').is_some_and(|(name, _)| name == n))
                })
            })
            .collect()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the signer for its keys");
            Err(())
        }
    }
}

/// The host part of a URL, for a netrc `machine` line.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.starts_with('[') {
        return authority.split(']').next().map_or(authority, |h| &h[1..]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// The nix.conf lines for the view (plain text; comments for what goes
/// elsewhere).
pub fn nix_conf(url: &str, keys: &Result<Vec<String>, ()>, private: bool) -> String {
    let mut text = format!("extra-substituters = {url}\n");
    match keys {
        Ok(keys) if !keys.is_empty() => {
            text.push_str(&format!("extra-trusted-public-keys = {}\n", keys.join(" ")));
        }
        Ok(_) => text.push_str("# no signing key configured on this cache\n"),
        Err(()) => {
            text.push_str("# the signer cannot be reached right now: ask again for its keys\n")
        }
    }
    if private {
        text.push_str(&format!(
            "# This cache needs a token. Nix sends it from its netrc file:\nnetrc-file = /etc/nix/netrc\n# and add this line to /etc/nix/netrc (mode 600), with your token:\n# machine {} login larder password <your token>\n",
            url_host(url)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(url_host("https://cache.example/team"), "cache.example");
        assert_eq!(url_host("http://127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(url_host("http://[::1]:5000/x"), "::1");
    }
}
