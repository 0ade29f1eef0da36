//! One view of Slurm for every stage a driver waits on. A run with hundreds of
//! jobs in flight asks Slurm about all of them in one `squeue` call per poll
//! interval (whichever waiting stage finds the last answer too old asks for
//! everyone), instead of one call per job, so a busy controller sees the same
//! load from a 500-job run as from a one-job run.

use crate::engine::{StageStop, cancel_requested};
use anyhow::Result;
use saepipe_slurm::{JobId, JobInfo, Slurm};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The jobs a driver waits on and what Slurm last said about them.
pub struct JobWatcher {
    client: Arc<Slurm>,
    poll: Duration,
    state: Mutex<Watched>,
    answered: Condvar,
}

#[derive(Default)]
struct Watched {
    /// Jobs with someone waiting, and how many wait on each.
    waiting: HashMap<JobId, usize>,
    /// The last answer for each job.
    last: HashMap<JobId, JobInfo>,
    /// When the last query started; `None` before the first.
    asked: Option<Instant>,
    /// A query is under way (by one of the waiters).
    asking: bool,
    /// Jobs whose last query failed (after the client's retries), and why.
    failed: HashMap<JobId, String>,
}

impl JobWatcher {
    /// A watcher asking `client` at most once every `poll`.
    pub fn new(client: Arc<Slurm>, poll: Duration) -> JobWatcher {
        JobWatcher { client, poll, state: Mutex::new(Watched::default()), answered: Condvar::new() }
    }

    /// Waits until Slurm no longer runs (or will rerun) job `id`, and returns
    /// how it ended. Ctrl-C stops the wait, not the job.
    pub fn wait_until_ended(&self, id: JobId) -> Result<JobInfo> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *st.waiting.entry(id).or_default() += 1;
        // Only answers asked for after we started waiting count.
        st.last.remove(&id);
        st.failed.remove(&id);
        let result = loop {
            if cancel_requested() {
                break Err(anyhow::Error::new(StageStop::Interrupted).context(format!(
                    "stopped waiting for Slurm job {id}; it keeps running and the next run attaches to it"
                )));
            }
            if let Some(info) = st.last.get(&id).filter(|i| !i.state.is_active()) {
                break Ok(info.clone());
            }
            if let Some(why) = st.failed.get(&id) {
                break Err(anyhow::anyhow!("asking Slurm about job {id}: {why}"));
            }
            let due = st.asked.is_none_or(|t| t.elapsed() >= self.poll);
            if due && !st.asking {
                st.asking = true;
                st.asked = Some(Instant::now());
                let ids: Vec<JobId> = st.waiting.keys().copied().collect();
                drop(st);
                let answer = self.client.query(&ids);
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.asking = false;
                match answer {
                    Ok(mut found) => {
                        for id in ids {
                            let info = found.remove(&id).unwrap_or_else(JobInfo::gone);
                            st.last.insert(id, info);
                        }
                    }
                    Err(e) => {
                        for id in ids {
                            st.failed.insert(id, e.to_string());
                        }
                    }
                }
                self.answered.notify_all();
                continue;
            }
            let left = st.asked.map_or(self.poll, |t| self.poll.saturating_sub(t.elapsed()));
            // Wake at the next poll (or on an answer, or soon for Ctrl-C).
            let nap = left.clamp(Duration::from_millis(10), Duration::from_millis(500));
            st = self.answered.wait_timeout(st, nap).unwrap_or_else(|e| e.into_inner()).0;
        };
        let n = st.waiting.get_mut(&id).map(|n| {
            *n -= 1;
            *n
        });
        if n == Some(0) {
            st.waiting.remove(&id);
            st.last.remove(&id);
            st.failed.remove(&id);
        }
        result
    }
}
