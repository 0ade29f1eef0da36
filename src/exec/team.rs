//! The team cache: a read-only layer under the private cache. A key missing
//! from the private cache but published in the team cache (a directory the
//! team shares) is used in place: planned as a hit, handed to consumers from
//! the team's directory, never copied. New artifacts go to the private cache;
//! `saepipe cache promote` publishes them in the team cache when asked.
//! Readers take leases in the team cache where they may write there, so the
//! team's `cache gc` keeps what they read.

use anyhow::{Result, bail};
use saepipe_cache::{CACHE_MARKER_FILE, Cache};
use std::path::Path;

/// Opens the team cache at `dir` for reading; `None` when it is the private
/// cache itself.
pub fn open(dir: &Path, private: &Cache) -> Result<Option<Cache>> {
    if !dir.join(CACHE_MARKER_FILE).is_file() {
        bail!("the team cache {} is not a saepipe cache (no {CACHE_MARKER_FILE} in it)", dir.display());
    }
    let team = Cache::open(dir).map_err(|e| anyhow::anyhow!("cannot open the team cache {}: {e}", dir.display()))?;
    if team.root() == private.root() {
        return Ok(None);
    }
    Ok(Some(team))
}
