//! The one-line live display of `orchestrator run` on a terminal: whoever prints anything else
//! to stderr clears it first, so no message runs into it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the live line is on the screen now.
static SHOWN: AtomicBool = AtomicBool::new(false);

/// Replaces the live line with `text`.
pub fn show(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{text}");
    let _ = err.flush();
    SHOWN.store(true, Ordering::Relaxed);
}

/// Erases the live line if it is shown.
pub fn clear() {
    if SHOWN.swap(false, Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

/// Prints one message line on stderr, after clearing the live line.
pub fn say(message: &str) {
    clear();
    eprintln!("orchestrator run: {message}");
}
