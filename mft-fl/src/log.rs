//! Log lines on stderr: `mft-fl <UTC time> <LEVEL> <text>`, one event per line, so that a
//! rejected message or a reconnect is visible in the logs of a device or of CI.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences [`info`] (warnings and errors still print).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn line(level: &str, text: &str) {
    let time = crate::auth::iso8601_utc(SystemTime::now());
    // Seconds are enough in a log: drop the microseconds and the offset.
    let time = time.get(..19).unwrap_or(&time);
    eprintln!("mft-fl {time}Z {level:5} {text}");
}

/// Progress and events.
pub fn info(text: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        line("INFO", text);
    }
}

/// Something went wrong and was handled (a retry, a rejected message).
pub fn warn(text: &str) {
    line("WARN", text);
}

/// Something failed.
pub fn error(text: &str) {
    line("ERROR", text);
}
