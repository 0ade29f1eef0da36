//! Progress display: one bar per running stage on a terminal, plain log lines
//! otherwise (CI logs, `--quiet`, output piped to a file).

use crate::engine::ProgressSink;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub enum Reporter {
    Bars(MultiProgress),
    Plain,
    Quiet,
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        if quiet {
            Reporter::Quiet
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Reporter::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)))
        } else {
            Reporter::Plain
        }
    }

    /// A line for the user, drawn above any bars.
    pub fn println(&self, msg: &str) {
        match self {
            Reporter::Bars(m) => {
                let _ = m.println(msg);
            }
            Reporter::Plain => eprintln!("{msg}"),
            Reporter::Quiet => {}
        }
    }

    pub fn stage(&self, id: &str) -> StageProgress {
        let bar = match self {
            Reporter::Bars(m) => {
                let pb = m.add(ProgressBar::new_spinner());
                pb.set_style(spinner_style());
                pb.set_prefix(id.to_string());
                pb.enable_steady_tick(Duration::from_millis(250));
                Some(pb)
            }
            _ => None,
        };
        StageProgress {
            id: id.to_string(),
            bar,
            plain: matches!(self, Reporter::Plain),
            state: Mutex::new(PlainState {
                total: 0,
                unit: String::new(),
                last_print: Instant::now(),
                started: Instant::now(),
            }),
        }
    }
}

fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none()
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed}").unwrap()
}

fn bar_style() -> ProgressStyle {
    let t = if colour() {
        "{prefix:.bold} [{bar:30.cyan/blue}] {human_pos}/{human_len} {msg} {per_sec} ETA {eta}"
    } else {
        "{prefix} [{bar:30}] {human_pos}/{human_len} {msg} {per_sec} ETA {eta}"
    };
    ProgressStyle::with_template(t).unwrap().progress_chars("=> ")
}

struct PlainState {
    total: u64,
    unit: String,
    last_print: Instant,
    started: Instant,
}

pub struct StageProgress {
    id: String,
    bar: Option<ProgressBar>,
    plain: bool,
    state: Mutex<PlainState>,
}

impl StageProgress {
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl ProgressSink for StageProgress {
    fn set_total(&self, total: u64, unit: &str) {
        if let Some(b) = &self.bar {
            b.set_style(bar_style());
            b.set_length(total);
            b.set_message(unit.to_string());
        }
        let mut s = self.state.lock().unwrap();
        s.total = total;
        s.unit = unit.to_string();
        s.started = Instant::now();
    }

    fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
        if self.plain {
            let mut s = self.state.lock().unwrap();
            // At most one line every 10 s per stage, plus the last one.
            if s.last_print.elapsed() >= Duration::from_secs(10) || (s.total > 0 && pos >= s.total) {
                s.last_print = Instant::now();
                let rate = pos as f64 / s.started.elapsed().as_secs_f64().max(1e-9);
                eprintln!("[{}] {pos}/{} {} ({rate:.1} {}/s)", self.id, s.total, s.unit, s.unit);
            }
        }
    }

    fn message(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_string()),
            None if self.plain => eprintln!("[{}] {msg}", self.id),
            None => {}
        }
    }
}

/// A byte count in binary units for people: `512 B`, `1.5 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
