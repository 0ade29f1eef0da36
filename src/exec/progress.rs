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
                status: String::new(),
                last_print: Instant::now(),
                started: Instant::now(),
            }),
        }
    }

    /// The whole run's progress over the `to_run` stages that do work (hits
    /// take no time and are not counted): a bar above the stages' bars on a
    /// terminal, a `[done/total, ETA]` tag on the plain `done` lines.
    pub fn overall(&self, to_run: usize) -> Overall {
        let bar = match self {
            Reporter::Bars(m) if to_run > 0 => {
                let pb = m.insert(0, ProgressBar::new(to_run as u64));
                let t = if colour() {
                    "{prefix:.bold} [{bar:30.green/blue}] {pos}/{len} stages to run, {elapsed} so far, ETA {eta}"
                } else {
                    "{prefix} [{bar:30}] {pos}/{len} stages to run, {elapsed} so far, ETA {eta}"
                };
                pb.set_style(ProgressStyle::with_template(t).unwrap().progress_chars("=> "));
                pb.set_prefix("run");
                pb.enable_steady_tick(Duration::from_millis(500));
                Some(pb)
            }
            _ => None,
        };
        Overall { bar, to_run, done: std::sync::atomic::AtomicUsize::new(0), started: Instant::now() }
    }
}

/// Progress of the whole run; see [`Reporter::overall`].
pub struct Overall {
    bar: Option<ProgressBar>,
    to_run: usize,
    done: std::sync::atomic::AtomicUsize,
    started: Instant,
}

impl Overall {
    /// Counts one finished stage that did work; returns the tag for its line:
    /// `[3/12, ETA 4m10s]` (the ETA from the average time per stage so far).
    pub fn finished_one(&self) -> String {
        let done = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
        let left = self.to_run.saturating_sub(done);
        if left == 0 {
            return format!("[{done}/{}]", self.to_run.max(done));
        }
        let eta = self.started.elapsed().as_secs_f64() / done as f64 * left as f64;
        format!("[{done}/{}, ETA {}]", self.to_run, human_duration(eta))
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A duration for people: `4.2s`, `3m12s`, `1h04m`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h{:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
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
    /// See [`ProgressSink::set_status`].
    status: String,
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
                let eta = match s.total.checked_sub(pos) {
                    Some(left) if left > 0 && rate > 0.0 => format!(", ETA {}", human_duration(left as f64 / rate)),
                    _ => String::new(),
                };
                let status = if s.status.is_empty() { String::new() } else { format!(" {}", s.status) };
                eprintln!("[{}] {pos}/{} {} ({rate:.1} {}/s{eta}){status}", self.id, s.total, s.unit, s.unit);
            }
        }
    }

    fn set_status(&self, status: &str) {
        let mut s = self.state.lock().unwrap();
        s.status = status.to_string();
        if let Some(b) = &self.bar {
            b.set_message(format!("{} {status}", s.unit));
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
