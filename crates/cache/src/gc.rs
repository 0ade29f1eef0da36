//! Garbage collection: keep what the given keys reach, remove everything else.

use crate::error::{IoContext, Result};
use crate::key::Key;
use crate::lock;
use crate::store::dir_size;
use std::collections::HashSet;

#[derive(Clone, Debug, Default)]
pub struct GcReport {
    /// What was (or, in a dry run, would be) removed, with its size in bytes.
    pub removed: Vec<(String, u64)>,
    pub kept: usize,
    pub dry_run: bool,
}

impl crate::Cache {
    pub fn gc(&self, keep: &HashSet<Key>, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport { dry_run, ..Default::default() };
        let remove = |what: String, path: &std::path::Path, report: &mut GcReport| -> Result<()> {
            let bytes = if path.is_dir() { dir_size(path) } else { std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) };
            if !dry_run {
                let r = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
                match r {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).ctx("removing", path),
                }
            }
            report.removed.push((what, bytes));
            Ok(())
        };
        let held = |key: &str| {
            lock::read_info(&self.root().join("locks").join(format!("{key}.lock"))).is_some_and(|i| !i.is_stale())
        };

        let artifacts = self.root().join("artifacts");
        for e in std::fs::read_dir(&artifacts).ctx("listing", &artifacts)? {
            let e = e.ctx("listing", &artifacts)?;
            let name = e.file_name().to_string_lossy().into_owned();
            match name.parse::<Key>() {
                Ok(k) if keep.contains(&k) && self.lookup(&k)?.is_some() => report.kept += 1,
                Ok(k) if self.lookup(&k)?.is_some() => {
                    let stage = self.lookup(&k)?.map(|m| m.stage).unwrap_or_default();
                    if !held(&name) {
                        remove(format!("artifact {} ({stage})", k.short()), &e.path(), &mut report)?;
                    }
                }
                _ => remove(format!("incomplete artifact directory {name}"), &e.path(), &mut report)?,
            }
        }
        let tmp = self.root().join("tmp");
        for e in std::fs::read_dir(&tmp).ctx("listing", &tmp)? {
            let e = e.ctx("listing", &tmp)?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Staging dirs are `<key>.<pid>.<nonce>`: stale once their writer is gone.
            let owner_alive = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok()).is_some_and(lock::pid_alive);
            if !owner_alive {
                remove(format!("stale temporary {name}"), &e.path(), &mut report)?;
            }
        }
        let partial = self.root().join("partial");
        for e in std::fs::read_dir(&partial).ctx("listing", &partial)? {
            let e = e.ctx("listing", &partial)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let wanted = name.parse::<Key>().is_ok_and(|k| keep.contains(&k));
            if !wanted && !held(&name) {
                remove(format!("partial work {}", name.get(..12).unwrap_or(&name)), &e.path(), &mut report)?;
            }
        }
        let locks = self.root().join("locks");
        for e in std::fs::read_dir(&locks).ctx("listing", &locks)? {
            let e = e.ctx("listing", &locks)?;
            let stale = match lock::read_info(&e.path()) {
                Some(i) => i.is_stale(),
                None => std::fs::metadata(e.path()).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > lock::STALE_AFTER),
            };
            if stale {
                remove(format!("stale lock {}", e.file_name().to_string_lossy()), &e.path(), &mut report)?;
            }
        }
        Ok(report)
    }
}
