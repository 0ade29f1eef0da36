//! What a run will do for every stage instance, and why.

use super::index;
use super::keys::{self, KeyMaterial};
/// Re-exported for the commands that print sizes.
pub use super::progress::human_bytes;
use crate::pipeline::{Pipeline, dag};
use anyhow::{Result, bail};
use saepipe_cache::{Cache, Key, VerifyMode};
use std::collections::BTreeSet;

/// Artifacts up to this size are re-hashed on every use; larger ones are checked
/// by size and file list (`--verify full` re-hashes everything).
pub const FULL_VERIFY_MAX_BYTES: u64 = 64 << 20;

/// What the run will do for one stage instance, decided by [`make_plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take the verified artifact from the cache.
    Hit,
    /// Run the op, which continues from the progress an interrupted run saved.
    Resume,
    /// Run the op: the artifact is not cached (or `--force` asked for a new one).
    Run,
    /// The cached artifact is damaged: it is discarded and recomputed.
    Rebuild,
}

impl Action {
    /// The word `saepipe plan` prints for this action.
    pub fn label(self) -> &'static str {
        match self {
            Action::Hit => "hit",
            Action::Resume => "resume",
            Action::Run => "run",
            Action::Rebuild => "rebuild",
        }
    }
}

/// How thoroughly the plan checks cached artifacts before counting them as hits (`--verify`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerifyPolicy {
    /// Full re-hash for small artifacts, size check for large ones.
    #[default]
    Auto,
    /// Size and file-list check only, whatever the artifact's size.
    Quick,
    /// Re-hash every file of every cached artifact.
    Full,
}

/// Which instances a plan covers and which it recomputes (`saepipe run TARGET... --force NAME...`).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Stage names or instance ids to build (with everything they need); empty = all.
    pub targets: Vec<String>,
    /// Recompute these (and everything downstream of them).
    pub force: Vec<String>,
}

/// One selected stage instance in a [`Plan`]: its cache key and what will be done about it.
pub struct PlanItem {
    /// Index into [`Pipeline::instances`].
    pub idx: usize,
    /// The instance's cache key: the hash of `material`.
    pub key: Key,
    /// Everything the key is a hash of (op, version, parameters, input keys, external files).
    pub material: KeyMaterial,
    /// What the run will do.
    pub action: Action,
    /// Human-readable reasons for `action` (`not run before`, what changed in the recipe, damage found).
    pub why: Vec<String>,
    /// Selected by `--force` (directly or downstream of a forced instance): recomputed even if cached.
    pub forced: bool,
    /// The artifact's generation when planned (what a rebuild or `--force` replaces).
    pub generation: Option<std::path::PathBuf>,
    /// The team cache's copy was found damaged: compute privately, never use it.
    pub skip_team: bool,
}

/// How the plan says a team cache's copy failed verification.
const TEAM_COPY_DAMAGED: &str = "the team cache's copy is damaged";

/// What a run will do: the output of [`make_plan`], the input of
/// [`scheduler::run`](super::scheduler::run), which turns each item into a
/// [`StageJob`](super::stage::StageJob).
pub struct Plan {
    /// Selected instances in dependency order.
    pub items: Vec<PlanItem>,
}

fn resolve_names(p: &Pipeline, names: &[String], what: &str) -> Result<BTreeSet<usize>> {
    let mut out = BTreeSet::new();
    for n in names {
        match p.select(n) {
            Some(v) => out.extend(v),
            None => {
                let mut cands: Vec<&str> = p.stages.iter().map(|s| s.name.as_str()).collect();
                cands.extend(p.instances.iter().map(|i| i.id.as_str()));
                let hint = saepipe_core::suggest::hint(n, cands);
                bail!("{what} `{n}` is not a stage or stage instance of {}{hint}", p.file.display());
            }
        }
    }
    Ok(out)
}

/// `roots` plus everything they depend on.
pub(crate) fn with_ancestors(p: &Pipeline, roots: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut seen = roots.clone();
    let mut stack: Vec<usize> = roots.iter().copied().collect();
    while let Some(i) = stack.pop() {
        for d in p.deps(i) {
            if seen.insert(d) {
                stack.push(d);
            }
        }
    }
    seen
}

fn with_descendants(p: &Pipeline, roots: &BTreeSet<usize>) -> BTreeSet<usize> {
    let mut seen = roots.clone();
    let order = dag::topo_order(p);
    for i in order {
        if p.deps(i).iter().any(|d| seen.contains(d)) {
            seen.insert(i);
        }
    }
    seen
}

/// Plans a run of `p` against `cache`: selects the instances `sel` asks for (with
/// their dependencies), computes every cache key, and decides per instance whether
/// it is a hit, must run, resume or be rebuilt, verifying cached artifacts as
/// `verify` says. Reads the cache but changes nothing.
///
/// Errors: a target or `--force` name that is no stage or instance of `p`, or a
/// cache that cannot be read.
pub fn make_plan(p: &Pipeline, cache: &Cache, sel: &Selection, verify: VerifyPolicy) -> Result<Plan> {
    let selected = if sel.targets.is_empty() {
        (0..p.instances.len()).collect()
    } else {
        with_ancestors(p, &resolve_names(p, &sel.targets, "target")?)
    };
    let forced = with_descendants(p, &resolve_names(p, &sel.force, "--force")?);
    let materials = keys::materials(p, cache)?;
    let team = match &p.team_cache {
        Some(dir) => super::team::open(dir, cache)?,
        None => None,
    };
    let mut items = Vec::new();
    for i in dag::topo_order(p) {
        if !selected.contains(&i) {
            continue;
        }
        let (material, key) = materials[i].clone();
        let inst = &p.instances[i];
        let is_forced = forced.contains(&i);
        let (action, why) = if is_forced {
            (Action::Run, vec!["forced (--force)".to_string()])
        } else {
            decide(p, cache, team.as_ref(), &inst.id, &key, &material, verify)?
        };
        let generation = cache.generation_dir(&key);
        let skip_team = why.iter().any(|w| w.starts_with(TEAM_COPY_DAMAGED));
        items.push(PlanItem { idx: i, key, material, action, why, forced: is_forced, generation, skip_team });
    }
    Ok(Plan { items })
}

#[allow(clippy::too_many_arguments)]
fn decide(
    p: &Pipeline,
    cache: &Cache,
    team: Option<&Cache>,
    id: &str,
    key: &Key,
    material: &KeyMaterial,
    verify: VerifyPolicy,
) -> Result<(Action, Vec<String>)> {
    if let Some(why) = material.pending() {
        return Ok((Action::Run, vec![format!("to download: {why}")]));
    }
    let mode = |bytes: u64| match verify {
        VerifyPolicy::Full => VerifyMode::Full,
        VerifyPolicy::Quick => VerifyMode::Quick,
        VerifyPolicy::Auto if bytes <= FULL_VERIFY_MAX_BYTES => VerifyMode::Full,
        VerifyPolicy::Auto => VerifyMode::Quick,
    };
    if let Some(m) = cache.lookup(key)? {
        let report = cache.verify(key, mode(m.total_bytes))?;
        return Ok(if report.ok {
            (Action::Hit, vec![format!("cached {}", human_bytes(m.total_bytes))])
        } else {
            (Action::Rebuild, report.problems.iter().map(|p| format!("cached artifact damaged: {p}")).collect())
        });
    }
    let mut team_damage = Vec::new();
    if let Some(team) = team
        && let Some(m) = team.lookup(key)?
    {
        let report = team.verify(key, mode(m.total_bytes))?;
        if report.ok {
            let why = format!("in the team cache {} ({})", team.root().display(), human_bytes(m.total_bytes));
            return Ok((Action::Hit, vec![why]));
        }
        // A damaged team copy is left alone (it is not ours) and computed privately.
        team_damage = report.problems.iter().map(|p| format!("{TEAM_COPY_DAMAGED}: {p}")).collect();
    }
    if !team_damage.is_empty() {
        return Ok((Action::Run, team_damage));
    }
    let partial = cache.root().join("partial").join(key.to_string());
    if std::fs::read_dir(&partial).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Ok((Action::Resume, vec!["saved progress from an interrupted run".into()]));
    }
    let why = match index::previous(cache, &p.name, id) {
        None => vec!["not run before".into()],
        Some(prev) if prev.key == *key => {
            vec!["same recipe as last time, but the artifact is no longer in the cache".into()]
        }
        Some(prev) => {
            let d = material.diff(&prev.material);
            if d.is_empty() { vec!["recipe changed".into()] } else { d }
        }
    };
    Ok((Action::Run, why))
}
