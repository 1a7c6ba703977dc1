//! A progress bar on a terminal, nothing otherwise (logs carry the same).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar only when stderr is a terminal.
    pub fn new(target: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} pushed")
            {
                bar.set_style(style);
            }
            bar.set_message(format!("→ {target}"));
            bar
        });
        Progress { bar }
    }

    /// `done` paths handled so far, `pending` still queued.
    pub fn update(&self, done: u64, pending: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(done + pending);
            bar.set_position(done);
        }
    }
}
