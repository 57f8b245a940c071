//! What users see while a command runs, in one place: status lines and warnings on stderr, progress
//! bars only when stderr is a terminal. stdout is left to the data a verb writes (a disk image, JSON).
//!
//! - [`status`]: one line per stage (`rpixen: pkg kernel: wrote dist/pkg/kernel`); `--quiet` hides it.
//! - [`warn`]: something the output could not keep; shown even with `--quiet`, which only hides chatter.
//! - [`bar`]: a byte-counting bar on a terminal, nothing otherwise (a `docker run` log or a CI log gets
//!   the status lines and no control characters).
//!
//! The state is process-wide because the output is: the command line sets it once with [`init`]; a
//! program embedding the library gets status lines and terminal-only bars by default.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::OnceLock;

/// How chatty the process is; set once by the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Hide status lines and bars; errors and warnings still print.
    pub quiet: bool,
    /// Draw progress bars (the default is: stderr is a terminal).
    pub bars: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { quiet: false, bars: std::io::stderr().is_terminal() }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
/// Bars are drawn through one [`indicatif::MultiProgress`], so parallel downloads stack and status
/// lines printed meanwhile do not tear them.
static BARS: OnceLock<indicatif::MultiProgress> = OnceLock::new();

/// Sets the process's reporting once (the command line's `--quiet`); later calls are ignored.
pub fn init(quiet: bool) {
    let _ = SETTINGS.set(Settings { quiet, ..Settings::default() });
}

fn settings() -> Settings {
    *SETTINGS.get_or_init(Settings::default)
}

fn line(text: String) {
    match BARS.get() {
        Some(bars) => bars.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// A stage started or finished.
pub fn status(message: impl Display) {
    if !settings().quiet {
        line(format!("rpixen: {message}"));
    }
}

/// Something the output could not keep, or a choice made for the user.
pub fn warn(message: impl Display) {
    line(format!("rpixen: warning: {message}"));
}

/// A progress bar counting `total` bytes, labelled `label`; inert unless bars are drawn.
pub fn bar(total: u64, label: impl Into<String>) -> Bar {
    let s = settings();
    if s.quiet || !s.bars {
        return Bar(None);
    }
    let bars = BARS.get_or_init(indicatif::MultiProgress::new);
    let b = bars.add(indicatif::ProgressBar::new(total));
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_message(label.into());
    Bar(Some(b))
}

/// A progress bar, or nothing when bars are not drawn.
#[derive(Debug)]
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub fn set_position(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.set_position(bytes);
        }
    }

    /// Removes the bar; what it counted is reported by a status line, if at all.
    pub fn finish(self) {
        if let Some(b) = self.0 {
            b.finish_and_clear();
        }
    }
}
