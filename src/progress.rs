//! Progress of long commands (sweep, resync, initial load, IDS rebuild) on stderr: a bar with
//! rate and ETA on a terminal (indicatif); plain lines every few seconds when stderr is not a
//! terminal (CI, systemd's journal), so the log shows progress without control characters.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a plain progress line is printed.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// A progress display for `total` units of work.
pub struct Progress {
    inner: Inner,
}

enum Inner {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    label: String,
    unit: &'static str,
    total: u64,
    started: Instant,
    last: Option<Instant>,
    every: Duration,
}

impl Progress {
    /// A bar on a terminal, else plain lines every [`LINE_EVERY`]; `unit` names what is
    /// counted ("days", "patients").
    pub fn new(label: impl Into<String>, unit: &'static str, total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(label, unit, total)
        } else {
            Self::lines(label, unit, total, LINE_EVERY)
        }
    }

    /// An indicatif bar: position, rate and ETA, and a message.
    fn bar(label: impl Into<String>, unit: &'static str, total: u64) -> Self {
        let bar = ProgressBar::new(total);
        let template = format!(
            "{{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit}, {{per_sec}}, ETA {{eta}} {{msg}}"
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("#>."));
        }
        bar.set_prefix(label.into());
        bar.enable_steady_tick(Duration::from_millis(500));
        Self {
            inner: Inner::Bar(bar),
        }
    }

    /// Plain lines at most every `every` (and the last one always).
    pub fn lines(
        label: impl Into<String>,
        unit: &'static str,
        total: u64,
        every: Duration,
    ) -> Self {
        Self {
            inner: Inner::Lines(Mutex::new(Lines {
                label: label.into(),
                unit,
                total,
                started: Instant::now(),
                last: None,
                every,
            })),
        }
    }

    /// `done` units are done; `message` says the rest (counts, never patient data).
    pub fn set(&self, done: u64, message: impl Display) {
        match &self.inner {
            Inner::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(message.to_string());
            }
            Inner::Lines(lines) => {
                let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                let due = l.last.is_none_or(|t| t.elapsed() >= l.every);
                if due || done >= l.total {
                    l.last = Some(Instant::now());
                    let text = line(
                        &l.label,
                        l.unit,
                        done,
                        l.total,
                        l.started.elapsed(),
                        &message,
                    );
                    let _ = writeln!(std::io::stderr(), "{text}");
                }
            }
        }
    }

    /// The work is over (done, or stopped): leaves the bar's last state on screen.
    pub fn finish(&self) {
        if let Inner::Bar(bar) = &self.inner {
            bar.abandon();
        }
    }
}

/// One plain progress line: `label: done/total unit (pct), rate, ETA; message`.
pub fn line(
    label: &str,
    unit: &str,
    done: u64,
    total: u64,
    elapsed: Duration,
    message: &dyn Display,
) -> String {
    let pct = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let eta = if done == 0 || rate == 0.0 {
        "unknown".to_owned()
    } else {
        format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
    };
    let message = message.to_string();
    let tail = if message.is_empty() {
        String::new()
    } else {
        format!("; {message}")
    };
    format!("{label}: {done}/{total} {unit} ({pct:.0}%), {rate:.1} {unit}/s, ETA {eta}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_where_it_stands_and_when_it_ends() {
        let l = line(
            "sweep 2026-01-01..2026-01-31",
            "days",
            10,
            40,
            Duration::from_secs(5),
            &"120 visits checked",
        );
        assert_eq!(
            l,
            "sweep 2026-01-01..2026-01-31: 10/40 days (25%), 2.0 days/s, ETA 15s; 120 visits checked"
        );
        let start = line("rebuild", "patients", 0, 0, Duration::ZERO, &"");
        assert_eq!(
            start,
            "rebuild: 0/0 patients (100%), 0.0 patients/s, ETA unknown"
        );
    }
}
