//! The request-metrics middleware: every request counted by matched route
//! pattern and status, and timed to its response headers (see
//! [`crate::metrics`] for the definitions).

use std::future::Future;
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{HttpMessage, web};

use crate::body::Metered;
use crate::state::AppState;
use crate::view::View;

/// A route's name in the metrics, left in the request's extensions by
/// the endpoints the router does not match (`routes/dynamic.rs`); the
/// others are named by their actix-router pattern.
#[derive(Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// The route a path names among the endpoints the router does not match
/// (`routes/dynamic.rs`), from the app's data: it names the requests that
/// a middleware answers before any endpoint runs (a framing 400, a view's
/// 401 or 404), by the raw path, as actix-router's `match_pattern()`
/// named them when those endpoints were its patterns.
#[derive(Clone, Copy)]
pub struct RouteNamer(pub fn(&str) -> Option<&'static str>);

/// Middleware (`App::wrap_fn`): count each request by matched route and
/// status, and time it to its response headers.
pub fn observe_request<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let start = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.metrics.clone());
    let call = srv.call(req);
    async move {
        let res = call.await?;
        if let Some(metrics) = metrics {
            let labelled = res.request().extensions().get::<RouteLabel>().copied();
            let pattern;
            let route = match labelled {
                Some(RouteLabel(route)) => route,
                None => {
                    let req = res.request();
                    pattern = req.match_pattern();
                    let named = || req.app_data::<RouteNamer>().and_then(|n| (n.0)(req.path()));
                    pattern.as_deref().or_else(named).unwrap_or("unmatched")
                }
            };
            let status = res.status().as_u16().to_string();
            metrics.requests.with_label_values(&[route, &status]).inc();
            if let Some(view) = res.request().extensions().get::<std::sync::Arc<View>>() {
                let labels = [view.name.as_str(), status.as_str()];
                metrics.view_requests.with_label_values(&labels).inc();
            }
            let elapsed = start.elapsed().as_secs_f64();
            metrics
                .duration
                .with_label_values(&[route])
                .observe(elapsed);
            // Streamed bodies count their own bytes as they go; HEAD sends none.
            let streamed = res.response().extensions().get::<Metered>().is_some();
            let head = res.request().method() == actix_web::http::Method::HEAD;
            if let (false, false, BodySize::Sized(n)) =
                (streamed, head, res.response().body().size())
            {
                let bytes = metrics.bytes_sent.with_label_values(&[route, "identity"]);
                bytes.inc_by(n);
            }
        }
        Ok(res)
    }
}
