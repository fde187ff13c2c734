//! Progress bars on stderr for long work (a large backup, the first read of a large transcript),
//! drawn by indicatif, on a terminal only: nothing at all when stderr is not one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How often the bar's position is read.
const INTERVAL: Duration = Duration::from_millis(100);

/// A bar on stderr fed by a helper thread that polls `position` (bytes done); cleared and
/// stopped when dropped.
pub struct Bar {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Bar {
    /// Starts a bar of `total` bytes after `delay` (none for work that ends sooner); `message`
    /// gives its text from the bytes done so far. `None` when stderr is not a terminal.
    pub fn start(
        total: u64,
        delay: Duration,
        message: impl Fn(u64) -> String + Send + 'static,
        position: impl Fn() -> u64 + Send + 'static,
    ) -> Option<Bar> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let make = move || {
            let bar = ProgressBar::with_draw_target(
                (total > 0).then_some(total),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            let style = ProgressStyle::with_template("{msg} {wide_bar} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        };
        // Without a delay the bar is drawn at once, however soon the work ends.
        let shown = delay.is_zero().then(|| {
            let bar = make();
            bar.set_message(message(0));
            bar.tick();
            bar
        });
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("progress".to_owned())
            .spawn(move || {
                let bar = match shown {
                    Some(bar) => bar,
                    // Ends when the bar is dropped (the sender gone) before the delay.
                    None if stopped.recv_timeout(delay) != Err(mpsc::RecvTimeoutError::Timeout) => {
                        return;
                    }
                    None => make(),
                };
                loop {
                    let done = position();
                    // Never full before the work has finished: an estimate can be short.
                    bar.set_position(done.min(total.saturating_sub(1)));
                    bar.set_message(message(done));
                    if stopped.recv_timeout(INTERVAL) != Err(mpsc::RecvTimeoutError::Timeout) {
                        break;
                    }
                }
                bar.finish_and_clear();
            })
            .ok();
        Some(Bar {
            stop: Some(stop),
            thread,
        })
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
