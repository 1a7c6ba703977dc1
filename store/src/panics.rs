//! What a panic costs: one log line and a count, never a backtrace flood.
//!
//! A panic in larder's code or in a dependency's (actix-http's request
//! decoder unwraps `HeaderName::from_bytes`, which refuses a header name
//! over 64 KiB: `docs/reliability.md`) ends only the task it happened in:
//! tokio catches it, so an actix worker loses the one connection and goes
//! on serving the others. Rust's default hook would still print a
//! multi-line report (with a whole backtrace under `RUST_BACKTRACE=1`)
//! that any client able to trigger the panic could repeat at will. The
//! hook installed here writes one `error` event through `tracing` instead,
//! naming the thread and the source location, with the message cut to
//! [`MESSAGE_LIMIT`] bytes, and counts it for the binaries' metrics
//! (`larder_panics_total`).

use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicU64, Ordering};

/// The longest panic message logged, in bytes; the rest is cut (a message
/// may carry request bytes).
pub const MESSAGE_LIMIT: usize = 200;

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Panics since the process started (what `larder_panics_total` exports).
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// [`count`] as one counter in Prometheus' text exposition format, named
/// `name` (each binary its own: `larder_panics_total` for the server,
/// `larder_signer_panics_total`, …, since the server appends the signer's
/// metrics to its own), to append to a registry's text.
pub fn exposition(name: &str) -> String {
    format!(
        "# HELP {name} Panics caught since the process started (each ended one task or connection)\n\
         # TYPE {name} counter\n{name} {}\n",
        count()
    )
}

/// Replace the default panic hook with [`report`]'s one log line.
/// `binary` names the process in the event (`larder-server`).
pub fn install(binary: &'static str) {
    std::panic::set_hook(Box::new(move |info| report(binary, info)));
}

/// Count one panic and log it as one line.
fn report(binary: &str, info: &PanicHookInfo<'_>) {
    PANICS.fetch_add(1, Ordering::Relaxed);
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let location = info
        .location()
        .map_or_else(|| "unknown".to_owned(), ToString::to_string);
    let thread = std::thread::current();
    tracing::error!(
        binary,
        thread = thread.name().unwrap_or("unnamed"),
        %location,
        message = %cut(message, MESSAGE_LIMIT).escape_debug(),
        "panic: the task or thread it happened in has ended; the process goes on"
    );
}

/// `text` cut to at most `limit` bytes, on a character boundary.
fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("short", 200), "short");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut(&"x".repeat(500), MESSAGE_LIMIT).len(), MESSAGE_LIMIT);
    }

    #[test]
    fn exposition_is_one_counter() {
        let text = exposition("larder_x_panics_total");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1], "# TYPE larder_x_panics_total counter");
        let value = lines[2].strip_prefix("larder_x_panics_total ").unwrap();
        value.parse::<u64>().unwrap();
    }

    #[test]
    fn a_caught_panic_is_counted() {
        install("larder-test");
        let before = count();
        let caught = std::panic::catch_unwind(|| panic!("{}", "y".repeat(1000)));
        assert!(caught.is_err());
        // Other tests of this binary may panic meanwhile: at least ours counted.
        assert!(count() > before);
        let _ = std::panic::take_hook();
    }
}
