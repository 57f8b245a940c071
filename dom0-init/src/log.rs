//! All of init's own output: one line at a time to the console (or, in host mode, to stderr), so that
//! lines from service log pumps running on other threads never interleave mid-line.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

static CONSOLE: Mutex<Option<File>> = Mutex::new(None);
static START: Mutex<Option<Instant>> = Mutex::new(None);
static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `rpixen.trace` on the kernel command line: prefix init's lines with ms since exec.
pub fn enable_trace() {
    TRACE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Sends later output to `console` instead of stderr.
pub fn set_console(console: File) {
    if let Ok(mut c) = CONSOLE.lock() {
        *c = Some(console);
    }
}

/// Remembers when init started, for [`elapsed_ms`].
pub fn set_start(t0: Instant) {
    if let Ok(mut s) = START.lock() {
        *s = Some(t0);
    }
}

/// Milliseconds since init started (its exec).
pub fn elapsed_ms() -> u128 {
    START.lock().ok().and_then(|s| *s).map(|t| t.elapsed().as_millis()).unwrap_or(0)
}

/// Writes one line (a newline is added). Errors are ignored: there is nowhere else to report them.
pub fn line(text: &str) {
    let mut buf = Vec::with_capacity(text.len() + 12);
    if TRACE.load(std::sync::atomic::Ordering::Relaxed) {
        buf.extend_from_slice(format!("+{}ms ", elapsed_ms()).as_bytes());
    }
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
    let Ok(mut c) = CONSOLE.lock() else { return };
    match c.as_mut() {
        Some(f) => {
            let _ = f.write_all(&buf);
        }
        None => {
            let _ = std::io::stderr().write_all(&buf);
        }
    }
}

/// `info!("...")`: a line prefixed with `dom0-init: `.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::line(&format!("dom0-init: {}", format_args!($($t)*))) };
}

/// `trace!("...")`: an `info!` line only with `rpixen.trace` (boot-time profiling).
#[macro_export]
macro_rules! trace {
    ($($t:tt)*) => { if $crate::log::tracing() { $crate::info!($($t)*) } };
}

pub fn tracing() -> bool {
    TRACE.load(std::sync::atomic::Ordering::Relaxed)
}
