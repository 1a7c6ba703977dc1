//! The circuit breaker in front of larder-signer. A hung signer (SIGSTOP,
//! a stuck disk) would otherwise cost every uncached narinfo the whole
//! `--signer-timeout-ms` before its 503. After one *slow* failure (one that
//! took at least half the timeout: a timeout, in practice) the breaker is
//! *open*: requests fail at once, without touching the socket. Fast failures
//! (connection refused: the signer is not running) cost requests nothing,
//! so they leave it closed, and a restarted signer is used at once. Every
//! [`PROBE_INTERVAL`] one request is let through as a probe (*half-open*);
//! its success closes the breaker, its failure keeps it open. So at most one
//! request at a time waits for a hung signer.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the breaker stays open before it lets one probe through.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The signer as the server last saw it, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerState {
    /// The last request got an answer.
    Up,
    /// The last request timed out, could not connect or got garbage.
    Down,
}

impl SignerState {
    /// `up` or `down`, as `/health` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignerState::Up => "up",
            SignerState::Down => "down",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Requests go through; `up` is false after a fast failure.
    Closed { up: bool },
    /// Failing since the last failure at this instant.
    Open { since: Instant },
    /// One probe is in flight; everyone else is turned away.
    HalfOpen,
}

/// Whether a request may go to the signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (the breaker is closed, or this is the probe).
    Go,
    /// Fail at once: the signer is down and a probe is not due.
    Reject,
}

/// The breaker; see the module documentation.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State::Closed { up: true }),
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a request go to the signer now? A `Go` while the breaker is not
    /// closed makes that request the probe: report its outcome.
    pub fn admit(&self) -> Admission {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Go,
            State::Open { since } if since.elapsed() >= PROBE_INTERVAL => {
                *state = State::HalfOpen;
                Admission::Go
            }
            State::Open { .. } | State::HalfOpen => Admission::Reject,
        }
    }

    /// The signer answered (even with a refusal): close.
    pub fn succeeded(&self) {
        *self.lock() = State::Closed { up: true };
    }

    /// The signer did not answer. A `slow` failure opens the breaker (again)
    /// from now; a fast one only marks the signer down (and ends a probe).
    pub fn failed(&self, slow: bool) {
        *self.lock() = if slow {
            State::Open {
                since: Instant::now(),
            }
        } else {
            State::Closed { up: false }
        };
    }

    /// [`SignerState::Up`] unless the breaker is open or probing.
    pub fn state(&self) -> SignerState {
        match *self.lock() {
            State::Closed { up: true } => SignerState::Up,
            State::Closed { up: false } | State::Open { .. } | State::HalfOpen => SignerState::Down,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_opens_one_probe_closes() {
        let b = Breaker::default();
        assert_eq!(b.admit(), Admission::Go);
        b.failed(false);
        assert_eq!(b.state(), SignerState::Down);
        assert_eq!(b.admit(), Admission::Go, "fast failures cost nothing");
        b.failed(true);
        assert_eq!(b.state(), SignerState::Down);
        assert_eq!(b.admit(), Admission::Reject);
        *b.lock() = State::Open {
            since: Instant::now() - PROBE_INTERVAL,
        };
        assert_eq!(b.admit(), Admission::Go, "the probe");
        assert_eq!(b.admit(), Admission::Reject, "only one probe at a time");
        b.failed(true);
        assert_eq!(b.admit(), Admission::Reject);
        *b.lock() = State::Open {
            since: Instant::now() - PROBE_INTERVAL,
        };
        assert_eq!(b.admit(), Admission::Go);
        b.succeeded();
        assert_eq!(b.state(), SignerState::Up);
        assert_eq!(b.admit(), Admission::Go);
    }
}
