//! The send timeout for unix-socket connections, which have no
//! `TCP_USER_TIMEOUT`: a watch per connection that disconnects a client
//! whose socket accepted no bytes for `--send-timeout-secs`.
//!
//! A unix stream socket is writable while at most a quarter of its send
//! buffer is unread by the peer, and the kernel wakes its writers each
//! time the peer's reads bring it back there. The watch holds a duplicate
//! of the connection's descriptor in the reactor and counts each such
//! wake-up, and each check that finds the socket writable, as progress. A
//! connection that stays unwritable with no wake-up for the timeout has a
//! peer that stopped reading: the watch shuts the socket down, actix-web's
//! next write fails, and it drops the connection and its body (as it does
//! for a TCP peer the kernel timed out). A client reading slowly still
//! makes progress as long as it drains three quarters of the buffer (about
//! 150 KiB with Linux's defaults) within the timeout.
//!
//! The watch ends when the connection does: [`StallWatch`] sits in the
//! connection's data (`on_connect` extensions), which actix-web drops with
//! the connection; its duplicate descriptor is closed then.

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use actix_web::rt::net::UnixStream;
use rustix::event::{PollFd, PollFlags, Timespec};
use tokio::io::Interest;
use tokio::sync::oneshot;

/// Keeps the watch of one unix-socket connection running; dropping it
/// (with the connection) stops the watch.
pub struct StallWatch {
    _stop: oneshot::Sender<()>,
}

/// Start watching `stream` (on the current worker's runtime). `None` when
/// the descriptor cannot be duplicated or registered: logged, and the
/// connection then has no send timeout.
pub fn watch(stream: &UnixStream, timeout: Duration) -> Option<StallWatch> {
    // The duplicate shares the connection's socket (and its non-blocking
    // mode); registering it apart lets the watch see the socket's wake-ups.
    let watched = stream
        .as_fd()
        .try_clone_to_owned()
        .map(std::os::unix::net::UnixStream::from)
        .and_then(tokio::net::UnixStream::from_std);
    let fd = match watched {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch a unix-socket connection; it has no send timeout");
            return None;
        }
    };
    let (stop, stopped) = oneshot::channel();
    actix_web::rt::spawn(run(fd, timeout, stopped));
    Some(StallWatch { _stop: stop })
}

async fn run(fd: tokio::net::UnixStream, timeout: Duration, mut stopped: oneshot::Receiver<()>) {
    // A quarter of the timeout between checks, so a stall is cut within
    // 1.25× the timeout; never busier than 10 checks a second.
    let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(15));
    let mut progress = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            ready = fd.ready(Interest::WRITABLE) => match ready {
                // The peer is gone: actix sees that itself, and a closed
                // socket stays "ready" for ever (a busy loop if watched).
                Ok(r) if r.is_write_closed() || r.is_error() => return,
                Ok(_) => {
                    // A wake-up: the peer read. Wait for the next one
                    // (a `WouldBlock` from `try_io` clears the readiness).
                    progress = Instant::now();
                    let _ = fd.try_io(Interest::WRITABLE, || Err::<(), _>(ErrorKind::WouldBlock.into()));
                }
                Err(_) => return,
            },
            _ = tokio::time::sleep(tick) => {}
        }
        if writable(&fd) {
            progress = Instant::now();
        } else if progress.elapsed() >= timeout {
            tracing::info!(
                timeout_secs = timeout.as_secs(),
                "disconnecting a unix-socket client that accepted no bytes within the send timeout"
            );
            let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Whether the socket has room to write now (a zero-timeout `poll`).
fn writable(fd: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::OUT)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
        && fds[0].revents().contains(PollFlags::OUT)
}
