//! How far a run has come: a progress bar (count, time, ETA) on a terminal, a plain line a
//! second otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The progress of one run towards `total`.
pub enum Progress {
    /// On a terminal.
    Bar(ProgressBar),
    /// Elsewhere (CI, a pipe): what, the total, and when the last line was printed.
    Lines(&'static str, u64, Instant),
}

impl Progress {
    /// Starts showing the progress of `what` (e.g. "persisted") towards `total`.
    pub fn new(what: &'static str, total: u64) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines(what, total, Instant::now());
        }
        let bar = ProgressBar::new(total);
        let style =
            ProgressStyle::with_template("  {msg} [{bar:40}] {pos}/{len}  {elapsed} eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what);
        Progress::Bar(bar)
    }

    /// Shows that `done` are done.
    pub fn set(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Lines(what, total, last) => {
                if last.elapsed() >= Duration::from_secs(1) {
                    println!("  {what} {done}/{total}");
                    *last = Instant::now();
                }
            }
        }
    }

    /// Ends the bar.
    pub fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
