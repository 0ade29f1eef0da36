//! Links from a page an op writes to a page of one of its input artifacts, so
//! reports open each other from the cache as plain files.

use crate::engine::StageCtx;
use std::path::Path;

/// The link from a page `depth` folders below this stage's artifact root (0 for
/// `report.html`, 1 for `journey/feature_3.html`) to `rel` in the input artifact
/// `dir`. Relative (`../../artifacts/<key>/…`, which resolves from both
/// `artifacts/<key>/` and `generations/<key>.<n>/`) when the input is in the same
/// cache as this stage's output; else an absolute `file://` URL.
pub fn artifact_link(ctx: &StageCtx, dir: &Path, rel: &str, depth: usize) -> String {
    let key = crate::engine::artifact_key(dir);
    let root_of = |d: &Path| d.parent().and_then(Path::parent).and_then(|r| r.canonicalize().ok());
    let in_cache = dir.parent().and_then(Path::file_name).is_some_and(|n| n == "generations" || n == "artifacts");
    if in_cache && root_of(dir).is_some() && root_of(dir) == root_of(&ctx.out_dir) {
        return format!("{}artifacts/{key}/{rel}", "../".repeat(2 + depth));
    }
    let target =
        if in_cache { dir.parent().unwrap().parent().unwrap().join("artifacts").join(&key) } else { dir.into() };
    format!("file://{}", target.join(rel).display())
}
