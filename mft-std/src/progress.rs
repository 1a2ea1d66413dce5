//! Progress of long work: a bar with step, loss, tokens/s, resident memory and ETA on a
//! terminal (indicatif), and a plain line every tenth of the run otherwise (logs, CI).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use crate::train::StepReport;

/// The progress display of a training run.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    quiet: bool,
    /// Steps between plain lines when there is no terminal.
    every: u64,
}

impl Progress {
    /// A display of `total` steps starting after `done`; `quiet` shows nothing.
    pub fn new(total: u64, done: u64, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
                    .expect("the template is valid"),
            );
            bar.set_position(done);
            bar
        });
        Progress { bar, total, quiet, every: (total / 10).max(1) }
    }

    /// Shows step `report`, with the process's peak resident memory `rss_bytes` and `extra`
    /// (the step's energy, when not empty).
    pub fn update(&mut self, report: &StepReport, rss_bytes: u64, extra: &str) {
        let mut message = format!(
            "loss {:.4}  {:.0} tok/s  RSS {:.0} MB",
            report.loss,
            report.tokens as f64 / report.seconds.max(1e-9),
            rss_bytes as f64 / 1e6
        );
        if !extra.is_empty() {
            message.push_str("  ");
            message.push_str(extra);
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(report.step);
                bar.set_message(message);
            }
            None if !self.quiet
                && (report.step.is_multiple_of(self.every) || report.step == self.total) =>
            {
                eprintln!("step {}/{}: {message}", report.step, self.total);
            }
            None => {}
        }
    }

    /// Prints a line above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The process's peak resident set (VmHWM) in bytes; 0 where /proc is not there.
pub fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
