//! Socket options set on every accepted connection: no Nagle delay, and the
//! send timeout (TCP, TLS and unix sockets alike).
//!
//! The send timeout is the kernel's `TCP_USER_TIMEOUT`: a connection whose
//! sent bytes stay unacknowledged, or whose peer keeps its receive window
//! at zero (a client that stopped reading), for that long is aborted by the
//! kernel (`ETIMEDOUT`). actix-web's next write then fails and it drops the
//! connection and its body stream. The kernel measures it whether or not
//! the server is polling the body, which no timer inside the body could:
//! a stalled client's body is not polled at all. Checked on Linux 6.x
//! (zero-window probes count since Linux 5.x); larder's test
//! `server_slow_clients` proves it on the machine it runs on.
//!
//! Unix sockets have no such option: a watch per connection does the same
//! there ([`super::unix_stall`]), so a client of a reverse proxy that
//! stops reading cannot hold the server's side of the connection either.

use std::any::Any;
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::rt::net::{TcpStream, UnixStream};

use super::unix_stall;
use crate::framing::Poisoned;

type TlsStream = actix_tls::accept::rustls_0_23::TlsStream<TcpStream>;

/// For `HttpServer::on_connect`: set the options on `conn` when it is a TCP
/// connection (plain or TLS), or start the stall watch of a unix-socket
/// connection (kept in `data`, the connection's extensions, so that it ends
/// with the connection). Every connection also gets its [`Poisoned`] mark
/// (see [`crate::framing`]). `send_timeout`: `None` leaves the kernel's default
/// (retransmissions give up after about 15 minutes; zero-window probing
/// never does) and no watch.
pub fn configure(conn: &dyn Any, data: &mut Extensions, send_timeout: Option<Duration>) {
    data.insert(Poisoned::default());
    if let Some(unix) = conn.downcast_ref::<UnixStream>() {
        if let Some(watch) = send_timeout.and_then(|timeout| unix_stall::watch(unix, timeout)) {
            data.insert(watch);
        }
        return;
    }
    let tcp = match conn.downcast_ref::<TcpStream>() {
        Some(tcp) => tcp,
        None => match conn.downcast_ref::<TlsStream>() {
            Some(tls) => (**tls).get_ref().0,
            None => return,
        },
    };
    // Small responses (narinfo) must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    if let Some(timeout) = send_timeout
        && let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout))
    {
        tracing::warn!(error = %e, "cannot set TCP_USER_TIMEOUT; slow clients are not disconnected");
    }
}
