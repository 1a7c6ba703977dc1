//! The server itself: actix-web's workers around the router, on the
//! socket [`crate::listen::socket`] opened.

use std::time::Duration;

use actix_web::dev::{ServerHandle, Service, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::{App, HttpServer, web};

use crate::config::Config;
use crate::framing;
use crate::listen::socket::{self, Listener};
use crate::listen::{connection, systemd, tls};
use crate::placement;
use crate::request_metrics;
use crate::routes;
use crate::startup::{StartupError, app_state};
use crate::state::AppState;

/// Open the store, bind, and serve until SIGINT/SIGTERM, which let running
/// downloads finish within `--shutdown-timeout-secs` (actix's graceful
/// shutdown: listeners close, connections drain) after
/// `--drain-delay-secs` (see [`stop_on_signals`]). SIGHUP is logged
/// and ignored (see [`ignore_hangups`]).
pub async fn run(config: Config) -> Result<(), StartupError> {
    let state = web::Data::new(app_state(&config)?);
    ignore_hangups();
    state.metrics.preset(routes::SERIES);
    let send_timeout =
        (config.send_timeout_secs > 0).then(|| Duration::from_secs(config.send_timeout_secs));
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .wrap_fn(placement::select_view)
            .wrap_fn(framing::refuse_ambiguous)
            .wrap_fn(close_while_draining)
            .wrap_fn(request_metrics::observe_request)
            .wrap_fn(framing::head_without_body)
            .configure(routes::configure)
    })
    .workers(config.workers)
    .max_connections(config.max_connections)
    .keep_alive(Duration::from_secs(config.keep_alive_secs))
    .client_request_timeout(Duration::from_secs(config.request_timeout_secs))
    .shutdown_timeout(config.shutdown_timeout_secs)
    // Stop signals are ours (`stop_on_signals`): draining comes first.
    .disable_signals()
    .on_connect(move |conn, data| connection::configure(conn, data, send_timeout));
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::server_config(cert, key)?),
        None => None,
    };
    let bind_error = |source| StartupError::Bind {
        bind: format!("{:?}", config.bind),
        source,
    };
    let server = match (
        socket::open(&config.bind, &config.socket).map_err(bind_error)?,
        tls,
    ) {
        (Listener::Tcp(l), None) => server.listen(l),
        (Listener::Tcp(l), Some(tls)) => server.listen_rustls_0_23(l, tls),
        (Listener::Unix(l), None) => server.listen_uds(l),
        (Listener::Unix(_), Some(_)) => {
            return Err(bind_error(std::io::Error::other(
                "TLS is for TCP sockets; put a TLS proxy in front of a unix socket",
            )));
        }
    }
    .map_err(bind_error)?;
    tracing::info!(
        bind = ?config.bind,
        store_root = %config.store_root.display(),
        store_dir = %config.store_dir,
        "larder-server listening"
    );
    let running = server.run();
    actix_web::rt::spawn(crate::signing::sign_ahead(state.clone()));
    stop_on_signals(
        state.clone(),
        running.handle(),
        Duration::from_secs(config.drain_delay_secs),
    );
    systemd::notify_ready();
    running.await.map_err(StartupError::Server)
}

/// On SIGTERM or SIGINT: mark the server draining (`/health` answers 503
/// from now on), keep serving for `drain_delay` so load balancers polling
/// `/health` stop sending new requests here, then stop gracefully: the
/// listeners close and running downloads get `--shutdown-timeout-secs`. A
/// second signal during the delay stops at once (gracefully all the same).
fn stop_on_signals(state: web::Data<AppState>, server: ServerHandle, drain_delay: Duration) {
    use std::sync::atomic::Ordering;
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot handle SIGTERM/SIGINT; stop the server with SIGKILL");
        return;
    };
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        state.draining.store(true, Ordering::Relaxed);
        tracing::info!(
            drain_delay_secs = drain_delay.as_secs(),
            "stopping: /health says draining; serving on for the drain delay, then closing"
        );
        tokio::select! {
            _ = tokio::time::sleep(drain_delay) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        server.stop(true).await;
    });
}

/// Middleware (`App::wrap_fn`): while draining, every response closes
/// its connection, so keep-alive connections (a proxy's upstream pool, a
/// balancer's health checks) end with their next request instead of
/// holding the graceful stop until `--keep-alive-secs`.
fn close_while_draining<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
{
    use std::sync::atomic::Ordering;
    let draining = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.draining.load(Ordering::Relaxed));
    let response = srv.call(req);
    async move {
        let mut response = response.await?;
        if draining {
            response
                .response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        Ok(response)
    }
}

/// SIGHUP's default action would kill the server (exit 129, no log line).
/// The configuration is read once at start, so a hangup is logged and
/// ignored: restart to apply new settings. Key rotation needs neither: the
/// server follows the signer's keys by itself (`--signer-key-check-secs`).
fn ignore_hangups() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            actix_web::rt::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::warn!(
                        "SIGHUP ignored: larder-server reads its configuration only at start; restart it to apply changes (signing keys are followed without a restart)"
                    );
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP; it will stop the server"),
    }
}
