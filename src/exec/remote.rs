//! A stage's traffic with the run's remote cache: on a local miss, pull the
//! artifact instead of computing it; after computing one, push it. Both happen
//! under the key's lock, so concurrent runs on one cache transfer each artifact
//! once. A remote that fails never fails the stage: a failed pull means the
//! stage is computed, a failed push is reported and retried by the next run or
//! `saepipe cache push`.

use crate::engine::{ProgressSink, RemoteSettings};
use saepipe_cache::{Cache, Key};
use saepipe_remote::{Remote, RemoteError};

/// What pulling a key gave.
pub enum Pulled {
    /// Downloaded, verified and published locally; its size in bytes.
    Yes(u64),
    /// The remote does not have it.
    Absent,
    /// The remote could not be used; the message says why.
    Failed(String),
}

/// Opens the remote named by `settings`.
pub fn open(settings: &RemoteSettings) -> Result<Remote, RemoteError> {
    Remote::open(&settings.url)
}

fn bytes_progress<'a>(progress: &'a dyn ProgressSink, verb: &'static str) -> impl Fn(u64, u64) + Sync + 'a {
    let last = std::sync::Mutex::new(std::time::Instant::now());
    move |done, total| {
        let mut last = last.lock().unwrap();
        // A message per second at most: progress lines are for people.
        if last.elapsed().as_secs_f64() >= 1.0 || done == total {
            *last = std::time::Instant::now();
            progress.message(&format!(
                "{verb} {} of {}",
                super::progress::human_bytes(done),
                super::progress::human_bytes(total)
            ));
        }
    }
}

/// Tries to pull `key` into `cache`.
pub fn pull(
    settings: &RemoteSettings,
    cache: &Cache,
    key: &Key,
    progress: &dyn ProgressSink,
    log: &mut dyn std::io::Write,
) -> Pulled {
    let remote = match open(settings) {
        Ok(r) => r,
        Err(e) => return Pulled::Failed(e.to_string()),
    };
    // One request decides: a missing manifest is "absent", not a failure.
    match remote.pull(cache, key, &bytes_progress(progress, "pulling")) {
        Ok(o) => {
            let _ = writeln!(
                log,
                "pulled {key} from {}: {} ({} downloaded, {} kept from an earlier attempt), verified",
                remote.display(),
                super::progress::human_bytes(o.manifest.total_bytes),
                super::progress::human_bytes(o.downloaded_bytes),
                super::progress::human_bytes(o.resumed_bytes)
            );
            Pulled::Yes(o.manifest.total_bytes)
        }
        Err(RemoteError::Missing { .. }) => Pulled::Absent,
        Err(e) => Pulled::Failed(e.to_string()),
    }
}

/// Pushes `key` from `cache`; `Err` holds a message for the run's report.
pub fn push(
    settings: &RemoteSettings,
    cache: &Cache,
    key: &Key,
    progress: &dyn ProgressSink,
    log: &mut dyn std::io::Write,
) -> Result<(), String> {
    let remote = open(settings).map_err(|e| e.to_string())?;
    match remote.push(cache, key, &bytes_progress(progress, "pushing")) {
        Ok(o) => {
            let _ = writeln!(
                log,
                "pushed to {}: {} file(s), {} uploaded{}",
                remote.display(),
                o.uploaded_files,
                super::progress::human_bytes(o.uploaded_bytes),
                if o.already_on_remote { " (the remote already had the artifact)" } else { "" }
            );
            Ok(())
        }
        Err(e) => {
            let _ = writeln!(log, "push failed: {e}");
            Err(e.to_string())
        }
    }
}
