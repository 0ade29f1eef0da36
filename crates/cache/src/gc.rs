//! Garbage collection: keep the artifacts the caller still reaches, remove the
//! rest and whatever crashed or finished writers left behind.

use crate::error::{IoContext, Result};
use crate::files::{remove_tree, tree_size};
use crate::host;
use crate::key::Key;
use crate::lock;
use std::collections::HashSet;
use std::path::Path;

/// What one [`Cache::gc`](crate::Cache::gc) run removed (or would remove) and kept.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// What was (or, in a dry run, would be) removed, with its size in bytes.
    pub removed: Vec<(String, u64)>,
    /// Published artifacts kept (reached, or locked by a live writer).
    pub kept: usize,
    /// Whether this was a dry run (nothing was actually deleted).
    pub dry_run: bool,
}

impl GcReport {
    /// Total bytes removed (or that would be).
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|(_, b)| b).sum()
    }
}

fn entries(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let mut out = Vec::new();
    let listing = match std::fs::read_dir(dir) {
        // A folder that a cache made by an older saepipe does not have yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        other => other.ctx("listing", dir)?,
    };
    for e in listing {
        let e = e.ctx("listing", dir)?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

impl crate::Cache {
    /// Removes (or with `dry_run`, only reports):
    /// - published artifacts not in `keep`, not locked by a live writer and not
    ///   leased by a live reader;
    /// - generations no artifact links to any more, once no reader leases their
    ///   key and they are older than the lock staleness threshold;
    /// - directories in `artifacts/` that are not valid artifacts;
    /// - staging directories in `tmp/` whose writer is gone (a dead pid on this
    ///   host; for other hosts, no live lock on the key and untouched for
    ///   `stale_after`), and leftovers of removals;
    /// - `partial/` progress and `downloads/` from remotes whose key is not in `keep`
    ///   and not locked by a live writer;
    /// - stale lock and lease files and stray temporaries of locks and fingerprint memos.
    pub fn gc(&self, keep: &HashSet<Key>, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport { dry_run, ..Default::default() };
        let timing = self.lock_timing();
        let old = |path: &Path| lock::file_age(path).is_some_and(|a| a > timing.stale_after);
        let remove = |what: String, path: &Path, report: &mut GcReport| -> Result<()> {
            let bytes = tree_size(path);
            if !dry_run {
                remove_tree(path)?;
            }
            report.removed.push((what, bytes));
            Ok(())
        };

        let mut removed_keys = HashSet::new();
        for (name, path) in entries(&self.root().join("artifacts"))? {
            let manifest = match name.parse::<Key>() {
                Ok(k) => self.lookup(&k)?.map(|m| (k, m)),
                Err(_) => None,
            };
            match manifest {
                Some((k, _)) if keep.contains(&k) || self.lock_is_live(&name) || self.live_leases(&k) > 0 => {
                    report.kept += 1
                }
                Some((k, m)) => {
                    let what = format!("artifact {} ({} {})", k.short(), m.op, m.stage);
                    let bytes = self.generation_dir(&k).map(|d| tree_size(&d)).unwrap_or(0);
                    if !dry_run {
                        // Same atomic path as `remove`: readers never see half an artifact.
                        self.remove(&k)?;
                    }
                    removed_keys.insert(k);
                    report.removed.push((what, bytes));
                }
                None => {
                    let what = format!("damaged artifact directory {name} (no valid manifest)");
                    // A damaged entry may be a link: its generation goes with it (below, once unlinked).
                    let key = name.parse::<Key>().ok();
                    // A damaged link's generation goes with it: no lease can hold a generation without a valid manifest.
                    let generation = key.and_then(|k| self.generation_dir(&k)).filter(|d| *d != path);
                    let bytes = generation.as_deref().map(tree_size).unwrap_or(0) + tree_size(&path);
                    removed_keys.extend(key);
                    if !dry_run {
                        remove_tree(&path)?;
                        if let Some(g) = &generation {
                            remove_tree(g)?;
                        }
                    }
                    report.removed.push((what, bytes));
                }
            }
        }

        // Generations no link points at: replaced or removed artifacts whose
        // readers have finished, and publishes that died between the move and the link.
        for (name, path) in entries(&self.root().join("generations"))? {
            let Some(key) = name.split_once('.').and_then(|(k, _)| k.parse::<Key>().ok()) else {
                if old(&path) {
                    remove(format!("stray generation {name}"), &path, &mut report)?;
                }
                continue;
            };
            let current = crate::store::current_generation(self.root(), &key);
            let linked = matches!(&current, Some(crate::store::Generation::Linked(n)) if *n == name);
            // Generations of artifacts removed above were counted with them.
            if linked || removed_keys.contains(&key) {
                continue;
            }
            if self.live_leases(&key) == 0 && !self.lock_is_live(&key.to_string()) && old(&path) {
                remove(format!("retired generation {}", &name[..name.len().min(12)]), &path, &mut report)?;
            }
        }

        for (name, path) in entries(&self.root().join("tmp"))? {
            // Staging dirs are `<key>.<pid>.<host tag>-<nonce>`; removals in flight are `<key>.removing.<nonce>`.
            let parts: Vec<&str> = name.splitn(3, '.').collect();
            let stale = match parts.as_slice() {
                [_, "removing", _] => true,
                [key, pid, nonce] if pid.parse::<u32>().is_ok() => {
                    let local = match nonce.split_once('-') {
                        Some((tag, _)) => tag == host::host_tag(),
                        None => true,
                    };
                    if local { !host::pid_alive(pid.parse().unwrap()) } else { !self.lock_is_live(key) && old(&path) }
                }
                _ => old(&path),
            };
            if stale {
                remove(format!("stale temporary {name}"), &path, &mut report)?;
            }
        }

        for (name, path) in entries(&self.root().join("partial"))? {
            let wanted = name.parse::<Key>().is_ok_and(|k| keep.contains(&k));
            if !wanted && !self.lock_is_live(&name) {
                remove(format!("partial progress {}", name.get(..12).unwrap_or(&name)), &path, &mut report)?;
            }
        }
        // Unfinished downloads from a remote: the same rule as partial progress.
        for (name, path) in entries(&self.root().join("downloads"))? {
            let wanted = name.parse::<Key>().is_ok_and(|k| keep.contains(&k));
            if !wanted && !self.lock_is_live(&name) {
                remove(format!("unfinished download {}", name.get(..12).unwrap_or(&name)), &path, &mut report)?;
            }
        }

        for (name, path) in entries(&self.root().join("locks"))? {
            let stale = lock::holder(&path).is_stale(&path, timing);
            if !stale {
                continue;
            }
            let what = format!("stale lock {name}");
            if name.ends_with(".lock") && !dry_run {
                // Break it the way waiters do, so a lock taken meanwhile survives.
                let bytes = tree_size(&path);
                if lock::break_if_stale(&path, timing)? {
                    report.removed.push((what, bytes));
                }
            } else {
                remove(what, &path, &mut report)?;
            }
        }

        for (name, path) in entries(&self.root().join("leases"))? {
            if lock::holder(&path).is_stale(&path, timing) {
                remove(format!("stale lease {name}"), &path, &mut report)?;
            }
        }

        for (name, path) in entries(&self.root().join("fingerprints"))? {
            if name.contains(".tmp.") && old(&path) {
                remove(format!("stray fingerprint temporary {name}"), &path, &mut report)?;
            }
        }
        Ok(report)
    }
}
