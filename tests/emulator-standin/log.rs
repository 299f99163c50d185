//! The emulator's log lines: `LEVEL   | message` on standard output, which
//! the host captures in the phone's log file.

use std::io::Write;

fn line(level: &str, msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{level:<8}| {msg}");
    let _ = out.flush();
}

/// An `INFO` line.
pub(crate) fn info(msg: &str) {
    line("INFO", msg);
}

/// A `WARNING` line.
pub(crate) fn warn(msg: &str) {
    line("WARNING", msg);
}

/// An `ERROR` line.
pub(crate) fn error(msg: &str) {
    line("ERROR", msg);
}

/// A `FATAL` line.
pub(crate) fn fatal(msg: &str) {
    line("FATAL", msg);
}
