//! What the user sees while training: an `indicatif` bar (loss terms, images/s, ETA) when
//! stdout is a terminal, plain lines at every log step otherwise.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stdout is a terminal, plain lines otherwise.
    #[default]
    Auto,
    Bar,
    /// One line per log step on stdout.
    Plain,
    /// Nothing (tests, library use).
    Off,
}

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
    start_step: u64,
    started: Instant,
}

/// `1.23e-2`-style for small numbers, fixed otherwise.
pub(crate) fn fmt_num(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-2 {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

fn fmt_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode, total: u64, start_step: u64) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stdout().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            // The template is a constant; a bad one would be a programming error, so fall
            // back to the default style rather than fail a run over it.
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta_precise} {msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(start_step);
            bar.reset_eta();
            bar
        });
        Self {
            bar,
            plain: mode == ProgressMode::Plain,
            total,
            start_step,
            started: Instant::now(),
        }
    }

    /// After every step: moves the bar and shows the step's losses.
    pub(crate) fn step(&self, step: u64, message: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(message());
        }
    }

    /// At log steps: a plain line with an ETA from this session's speed.
    pub(crate) fn log(&self, step: u64, epoch: u64, epochs: f64, body: &str) {
        if self.plain {
            let done = step.saturating_sub(self.start_step) as f64;
            let per_step = self.started.elapsed().as_secs_f64() / done.max(1.0);
            let eta = per_step * self.total.saturating_sub(step) as f64;
            println!(
                "step {step}/{} epoch {}/{} {body} eta {}",
                self.total,
                epoch + 1,
                epochs.ceil() as u64,
                fmt_duration(eta)
            );
        }
    }

    /// A message that should stay on screen (evaluation results, checkpoints).
    pub(crate) fn note(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.println(line);
        } else if self.plain {
            println!("{line}");
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(fmt_num(0.5), "0.5000");
        assert_eq!(fmt_num(0.00012), "1.20e-4");
        assert_eq!(fmt_num(0.0), "0.0000");
        assert_eq!(fmt_duration(3725.0), "1:02:05");
        assert_eq!(fmt_duration(f64::NAN), "?");
    }
}
