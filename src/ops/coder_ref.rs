//! Resolving a sparse-coder reference to a local directory or file.
//!
//! * a path (relative to the pipeline file's directory; `~/` expands): a SAELens
//!   or sparsify directory, or a transcoder-paper `.pt` file;
//! * `hf:<owner>/<repo>[@<revision>][/<path>]`: a coder inside a Hugging Face
//!   model repository, `<path>` being a folder with `cfg.json` +
//!   `sae_weights.safetensors` [+ `sparsity.safetensors`] (the layout of SAELens
//!   releases; sparsify's `sae.safetensors` too) or a `.pt` file; no `<path>`
//!   means the repository root. `<revision>` is a branch, tag or commit without
//!   `/`, or `refs/pr/<n>`; default `main`. Examples:
//!   `hf:jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre`,
//!   `hf:pchlenski/gpt2-transcoders@main/final_sparse_autoencoder_gpt2-small_blocks.8.ln2.hook_normalized_24576.pt`.
//!
//! * `saelens:<release>/<sae_id>`: a pretrained coder named as in SAELens's
//!   registry (`SAE.from_pretrained(release, sae_id)`), e.g.
//!   `saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical`. The
//!   registry (SAELens's `pretrained_saes.yaml`, kept as data in saepipe-sae;
//!   `$SAEPIPE_SAELENS_REGISTRY` names another file in its format) gives the hub
//!   repository, the path in it and the conversion that reads the release's
//!   layout; only that coder's files are fetched, as for `hf:` references.
//!
//! Hub coders live in the local Hugging Face cache (`$HF_HUB_CACHE`,
//! `$HF_HOME/hub`, `~/.cache/huggingface/hub`) in the layout `huggingface_hub`
//! writes, so files fetched by Python tools are reused. Only the coder's own files
//! are downloaded (from `$HF_ENDPOINT`, with `$HF_TOKEN`), and only when the cached
//! snapshot of the revision lacks them; `HF_HUB_OFFLINE` forbids downloading.

use anyhow::{Context, Result, anyhow, bail};
use saepipe_model::hub::{HubCache, HubEndpoint, HubRef, repo_path};
use saepipe_sae::{PretrainedSae, Registry, SparseCoder};
use std::path::{Path, PathBuf};

/// Prefix of hub coder references.
pub const HUB_PREFIX: &str = "hf:";
/// Prefix of references to SAELens's registry of pretrained coders.
pub const REGISTRY_PREFIX: &str = "saelens:";
/// Names a registry file to use instead of the built-in one.
pub const REGISTRY_ENV: &str = "SAEPIPE_SAELENS_REGISTRY";

/// File extensions of single-file coders (transcoder-paper `torch.save` files).
const FILE_CODER_EXTENSIONS: &[&str] = &[".pt", ".pth"];
/// The file whose presence marks a coder folder as complete; fetched last.
const CFG: &str = "cfg.json";
/// Weight files of the folder layouts, any one of which completes a folder.
const WEIGHTS: &[&str] = &["sae_weights.safetensors", "sae.safetensors"];
/// Fetched with the folder when the repository has it.
const OPTIONAL: &[&str] = &["sparsity.safetensors"];

/// A parsed coder reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoderRef {
    /// A local directory or `.pt` file, already resolved against the pipeline's directory.
    Local(PathBuf),
    /// A coder inside a Hugging Face model repository (`hf:...`).
    Hub {
        /// The Hugging Face repository and revision.
        hub: HubRef,
        /// The coder's folder or `.pt` file, `/`-separated inside the
        /// repository; empty for the repository root.
        path: String,
    },
    /// A pretrained coder of SAELens's registry (`saelens:<release>/<sae_id>`).
    Registry {
        /// Release name.
        release: String,
        /// SAE id inside the release (may contain `/`).
        sae_id: String,
    },
}

/// The registry `saelens:` references resolve through: the file
/// `$SAEPIPE_SAELENS_REGISTRY` names, else the one built into saepipe.
pub fn registry() -> Result<std::borrow::Cow<'static, Registry>> {
    match std::env::var_os(REGISTRY_ENV) {
        Some(p) if !p.is_empty() => Ok(std::borrow::Cow::Owned(
            Registry::load(Path::new(&p)).with_context(|| format!("reading the registry that {REGISTRY_ENV} names"))?,
        )),
        _ => Ok(std::borrow::Cow::Borrowed(Registry::builtin())),
    }
}

fn is_file_coder(path: &str) -> bool {
    FILE_CODER_EXTENSIONS.iter().any(|e| path.ends_with(e))
}

fn expand_home(s: &str) -> PathBuf {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(s),
    }
}

impl CoderRef {
    /// Parses a reference as written in a pipeline (see the module docs); relative
    /// local paths resolve against `base_dir`. Touches neither the disk nor the network.
    ///
    /// Errors: a malformed `hf:` reference, or a hub path with empty, `.` or `..` components.
    pub fn parse(spec: &str, base_dir: &Path) -> Result<CoderRef> {
        if let Some(rest) = spec.strip_prefix(REGISTRY_PREFIX) {
            return match rest.split_once('/') {
                Some((release, sae_id)) if !release.is_empty() && !sae_id.is_empty() => {
                    Ok(CoderRef::Registry { release: release.to_string(), sae_id: sae_id.to_string() })
                }
                _ => bail!(
                    "coder reference `{spec}` is not of the form saelens:<release>/<sae_id> (SAELens's release and SAE id, as SAE.from_pretrained takes them)"
                ),
            };
        }
        let Some(rest) = spec.strip_prefix(HUB_PREFIX) else {
            return Ok(CoderRef::Local(base_dir.join(expand_home(spec))));
        };
        let syntax = || {
            anyhow!(
                "coder reference `{spec}` is not of the form hf:<owner>/<repo>[@<revision>][/<path inside the repo>]"
            )
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 2 {
            return Err(syntax());
        }
        let (repo, mut revision) = match parts[1].split_once('@') {
            Some((name, rev)) => (format!("{}/{name}", parts[0]), rev.to_string()),
            None => (format!("{}/{}", parts[0], parts[1]), "main".to_string()),
        };
        let mut used = 2;
        // `refs/pr/<n>` is the one revision form with slashes that is accepted.
        if revision == "refs" && parts.len() >= 4 && parts[2] == "pr" {
            revision = format!("refs/pr/{}", parts[3]);
            used = 4;
        }
        let hub = HubRef::parse(&format!("{repo}@{revision}")).map_err(|e| syntax().context(e.to_string()))?;
        let path = parts[used..].join("/");
        if !path.is_empty() && !repo_path(&path) {
            bail!(
                "coder reference `{spec}`: `{path}` is not a plain path inside the repository (no empty, `.` or `..` components)"
            );
        }
        Ok(CoderRef::Hub { hub, path })
    }

    /// Where the coder is (or will be, for hub references) on this machine,
    /// given the cache's snapshot directory.
    fn local_in(snapshot: &Path, path: &str) -> PathBuf {
        if path.is_empty() { snapshot.to_path_buf() } else { snapshot.join(path) }
    }
}

/// Whether a cached copy of a hub coder is complete.
fn cached_complete(local: &Path, path: &str) -> bool {
    if is_file_coder(path) {
        local.is_file()
    } else {
        local.join(CFG).is_file() && WEIGHTS.iter().any(|w| local.join(w).is_file())
    }
}

/// The command that fetches the coder with the Python tools.
fn cli_hint(hub: &HubRef, path: &str) -> String {
    let what = if path.is_empty() {
        format!("{CFG} {}", WEIGHTS[0])
    } else if is_file_coder(path) {
        path.to_string()
    } else {
        format!("--include '{path}/*'")
    };
    format!("huggingface-cli download {} {what} --revision {}", hub.repo, hub.revision)
}

/// Picks the files of the coder at `path` from a commit's file list.
fn select_files(files: &[String], path: &str) -> std::result::Result<Vec<String>, String> {
    if is_file_coder(path) {
        if files.iter().any(|f| f == path) {
            return Ok(vec![path.to_string()]);
        }
        let pts: Vec<&str> = files.iter().filter(|f| is_file_coder(f)).map(String::as_str).collect();
        return Err(format!("no file `{path}`{}", listing("; its .pt files", &pts)));
    }
    let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
    let here: Vec<&str> = files.iter().filter_map(|f| f.strip_prefix(&prefix)).filter(|f| !f.contains('/')).collect();
    let has = |n: &str| here.contains(&n);
    let place = if path.is_empty() { "the repository root".to_string() } else { format!("folder `{path}`") };
    if has(CFG) && WEIGHTS.iter().any(|w| has(w)) {
        let mut out: Vec<String> =
            WEIGHTS.iter().chain(OPTIONAL).filter(|n| has(n)).map(|n| format!("{prefix}{n}")).collect();
        out.push(format!("{prefix}{CFG}"));
        return Ok(out);
    }
    // Explain: what is there, and where the coders are.
    // Coders below the folder, else anywhere in the repository.
    let coders_under = |prefix: &str| -> (Vec<&str>, Vec<&str>) {
        let mut dirs: Vec<&str> =
            files.iter().filter_map(|f| f.strip_suffix(&format!("/{CFG}"))).filter(|d| d.starts_with(prefix)).collect();
        dirs.sort();
        let pts = files.iter().filter(|f| f.starts_with(prefix) && is_file_coder(f)).map(String::as_str).collect();
        (dirs, pts)
    };
    let (mut coder_dirs, mut pts) = coders_under(&prefix);
    if coder_dirs.is_empty() && pts.is_empty() {
        (coder_dirs, pts) = coders_under("");
    }
    let found = if here.is_empty() {
        format!("there is no {place}")
    } else {
        format!("{place} holds [{}] but not {CFG} with {}", short(&here).join(", "), WEIGHTS.join(" or "))
    };
    Err(format!("{found}{}{}", listing("; coder folders there", &coder_dirs), listing("; .pt coder files there", &pts)))
}

fn short<'a>(items: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = items.iter().take(12).copied().collect();
    if items.len() > 12 {
        v.push("...");
    }
    v
}

fn listing(what: &str, items: &[&str]) -> String {
    if items.is_empty() { String::new() } else { format!("{what}: [{}]", short(items).join(", ")) }
}

/// Resolves `spec` with the cache and endpoint from the environment.
pub fn resolve(spec: &str, base_dir: &Path) -> Result<PathBuf> {
    resolve_with(spec, base_dir, &HubCache::from_env(), &HubEndpoint::from_env(), &mut |line| eprintln!("  {line}"))
}

/// Resolves `spec` to a local coder directory or file, downloading a hub
/// coder's files into `cache` from `endpoint` when the cache lacks them.
/// `saelens:` references go through [`registry`].
pub fn resolve_with(
    spec: &str,
    base_dir: &Path,
    cache: &HubCache,
    endpoint: &HubEndpoint,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    if spec.starts_with(REGISTRY_PREFIX) {
        return resolve_in(spec, base_dir, registry()?.as_ref(), cache, endpoint, log);
    }
    resolve_in(spec, base_dir, Registry::builtin(), cache, endpoint, log)
}

/// The registry entry of a `saelens:` reference.
fn lookup(registry: &Registry, spec: &str, release: &str, sae_id: &str) -> Result<PretrainedSae> {
    registry.lookup(release, sae_id).with_context(|| format!("coder `{spec}`"))
}

/// A registry coder's repository and revision.
fn hub_of(spec: &str, sae: &PretrainedSae) -> Result<HubRef> {
    HubRef::parse(&format!("{}@{}", sae.repo_id, sae.revision))
        .with_context(|| format!("coder `{spec}`: the registry's repository `{}`", sae.repo_id))
}

/// Where a resolved registry coder's repository snapshot is: `resolved` minus
/// the coder's path inside the repository.
fn snapshot_of(resolved: &Path, sae: &PretrainedSae) -> PathBuf {
    let depth = sae.files().primary.split('/').count();
    resolved.ancestors().nth(depth).unwrap_or(resolved).to_path_buf()
}

/// Loads the coder of a `saelens:` reference resolved to `resolved` (by
/// [`resolve`]) with its release's conversion; `None` for other references,
/// which load by their files' format.
pub fn load_pretrained(spec: &str, resolved: &Path) -> Result<Option<SparseCoder>> {
    load_pretrained_in(spec, resolved, registry()?.as_ref())
}

/// [`load_pretrained`] with an explicit registry.
pub fn load_pretrained_in(spec: &str, resolved: &Path, registry: &Registry) -> Result<Option<SparseCoder>> {
    let Ok(CoderRef::Registry { release, sae_id }) = CoderRef::parse(spec, Path::new("")) else { return Ok(None) };
    let sae = lookup(registry, spec, &release, &sae_id)?;
    let coder = sae
        .load(&snapshot_of(resolved, &sae))
        .with_context(|| format!("coder `{spec}` ({} layout of {})", sae.conversion.name(), sae.repo_id))?;
    Ok(Some(coder))
}

/// [`resolve_with`] with an explicit registry for `saelens:` references.
pub fn resolve_in(
    spec: &str,
    base_dir: &Path,
    registry: &Registry,
    cache: &HubCache,
    endpoint: &HubEndpoint,
    log: &mut dyn FnMut(&str),
) -> Result<PathBuf> {
    match CoderRef::parse(spec, base_dir)? {
        CoderRef::Registry { release, sae_id } => {
            let sae = lookup(registry, spec, &release, &sae_id)?;
            let hub = hub_of(spec, &sae)?;
            let primary = sae.files().primary;
            if let Some(snap) = cache.snapshot_dir(&hub)?.filter(|s| sae.complete_in(s)) {
                return Ok(snap.join(&primary));
            }
            if cache.offline {
                let files: Vec<String> = sae.files().required.iter().map(|alts| alts[0].clone()).collect();
                bail!(
                    "coder `{spec}` ({}/{}) is not in the Hugging Face cache ({}), and HF_HUB_OFFLINE is set: fetch it once with `huggingface-cli download {} {} --revision {}` or unset HF_HUB_OFFLINE",
                    sae.repo_id,
                    primary,
                    cache.repo_dir(&hub).display(),
                    hub.repo,
                    files.join(" "),
                    hub.revision
                );
            }
            if !super::downloads_allowed() {
                return Err(super::NotDownloaded { what: format!("coder `{spec}`") }.into());
            }
            log(&format!(
                "coder `{spec}` ({}/{}, SAELens conversion {}) is not in the Hugging Face cache; downloading it from {} into {}",
                sae.repo_id,
                primary,
                sae.conversion.name(),
                endpoint.url,
                cache.root.display()
            ));
            let snap =
                cache.download_files(&hub, endpoint, &mut |files| sae.select(files), log).with_context(|| {
                    format!("coder `{spec}` is not in the Hugging Face cache, and downloading it failed")
                })?;
            if !sae.complete_in(&snap) {
                bail!("coder `{spec}`: the download finished but {} is incomplete", snap.join(&primary).display());
            }
            Ok(snap.join(primary))
        }
        CoderRef::Local(p) => {
            if !p.exists() {
                let relative = !Path::new(spec).is_absolute() && !spec.starts_with('.') && !spec.starts_with('~');
                let hint = if relative {
                    format!(
                        " (coders on the Hugging Face hub are written {HUB_PREFIX}<owner>/<repo>[@<revision>]/<path>, SAELens's pretrained ones {REGISTRY_PREFIX}<release>/<sae_id>)"
                    )
                } else {
                    String::new()
                };
                bail!("coder `{spec}`: {} does not exist{hint}", p.display());
            }
            Ok(p)
        }
        CoderRef::Hub { hub, path } => {
            if let Some(snap) = cache.snapshot_dir(&hub)? {
                let local = CoderRef::local_in(&snap, &path);
                if cached_complete(&local, &path) {
                    return Ok(local);
                }
            }
            if cache.offline {
                bail!(
                    "coder `{spec}` is not in the Hugging Face cache ({}), and HF_HUB_OFFLINE is set: fetch it once with `{}` or unset HF_HUB_OFFLINE",
                    cache.repo_dir(&hub).display(),
                    cli_hint(&hub, &path)
                );
            }
            if !super::downloads_allowed() {
                return Err(super::NotDownloaded { what: format!("coder `{spec}`") }.into());
            }
            log(&format!(
                "coder `{spec}` is not in the Hugging Face cache; downloading it from {} into {}",
                endpoint.url,
                cache.root.display()
            ));
            let snap =
                cache.download_files(&hub, endpoint, &mut |files| select_files(files, &path), log).with_context(
                    || format!("coder `{spec}` is not in the Hugging Face cache, and downloading it failed"),
                )?;
            let local = CoderRef::local_in(&snap, &path);
            if !cached_complete(&local, &path) {
                bail!("coder `{spec}`: the download finished but {} is incomplete", local.display());
            }
            Ok(local)
        }
    }
}

/// A coder's display name from its reference: the last path component (the
/// repository name for a repository root), without a `.pt`/`.pth` extension;
/// `<release>/<sae_id>` for registry references.
pub fn label(spec: &str, resolved: &Path) -> String {
    let name = match CoderRef::parse(spec, Path::new("")) {
        Ok(CoderRef::Registry { release, sae_id }) => return format!("{release}/{sae_id}"),
        Ok(CoderRef::Hub { hub, path }) if path.is_empty() => {
            hub.repo.rsplit('/').next().unwrap_or(&hub.repo).to_string()
        }
        Ok(CoderRef::Hub { path, .. }) => path.rsplit('/').next().unwrap_or(&path).to_string(),
        _ => resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string()),
    };
    FILE_CODER_EXTENSIONS.iter().find_map(|e| name.strip_suffix(e)).map(str::to_string).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let base = Path::new("/p");
        assert_eq!(CoderRef::parse("saes/x", base).unwrap(), CoderRef::Local("/p/saes/x".into()));
        assert_eq!(CoderRef::parse("/abs/x.pt", base).unwrap(), CoderRef::Local("/abs/x.pt".into()));
        let hub = |spec: &str| match CoderRef::parse(spec, base).unwrap() {
            CoderRef::Hub { hub, path } => (hub.repo, hub.revision, path),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            hub("hf:jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre"),
            ("jbloom/GPT2-Small-SAEs-Reformatted".into(), "main".into(), "blocks.8.hook_resid_pre".into())
        );
        assert_eq!(hub("hf:o/r@v1.0/a/b.pt"), ("o/r".into(), "v1.0".into(), "a/b.pt".into()));
        assert_eq!(hub("hf:o/r@refs/pr/3/x"), ("o/r".into(), "refs/pr/3".into(), "x".into()));
        assert_eq!(hub("hf:o/r"), ("o/r".into(), "main".into(), "".into()));
        assert_eq!(
            CoderRef::parse("saelens:gemma-scope-2b-pt-res-canonical/layer_20/width_16k/canonical", base).unwrap(),
            CoderRef::Registry {
                release: "gemma-scope-2b-pt-res-canonical".into(),
                sae_id: "layer_20/width_16k/canonical".into()
            }
        );
        assert_eq!(
            label("saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre", Path::new("/c/x")),
            "gpt2-small-res-jb/blocks.8.hook_resid_pre"
        );
        for bad in ["saelens:", "saelens:r", "saelens:r/", "saelens:/x"] {
            assert!(CoderRef::parse(bad, base).is_err(), "{bad}");
        }
        for bad in ["hf:o", "hf:o/r/../x", "hf:o/r//x", "hf:o/r@", "hf:../r/x", "hf:o/r@a/./b"] {
            assert!(CoderRef::parse(bad, base).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(
            label("hf:o/r@main/blocks.8.hook_resid_pre", Path::new("/c/snap/blocks.8.hook_resid_pre")),
            "blocks.8.hook_resid_pre"
        );
        assert_eq!(label("hf:o/r/tc_8.pt", Path::new("/c/tc_8.pt")), "tc_8");
        assert_eq!(label("hf:o/my-sae@v2", Path::new("/c/snapshots/abc")), "my-sae");
        assert_eq!(label("coders/tc.pt", Path::new("/p/coders/tc.pt")), "tc");
        assert_eq!(label("coders/l8/", Path::new("/p/coders/l8/")), "l8");
        assert_eq!(label("hf:o/r@refs/pr/3", Path::new("/c/snapshots/abc")), "r");
    }

    #[test]
    fn selects_coder_files() {
        let files: Vec<String> = [
            "README.md",
            "l8/cfg.json",
            "l8/sae_weights.safetensors",
            "l8/sparsity.safetensors",
            "l8/extra/cfg.json",
            "l9/cfg.json",
            "l9/sae.safetensors",
            "tc/a.pt",
            "notes/x.txt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            select_files(&files, "l8").unwrap(),
            ["l8/sae_weights.safetensors", "l8/sparsity.safetensors", "l8/cfg.json"]
        );
        assert_eq!(select_files(&files, "l9").unwrap(), ["l9/sae.safetensors", "l9/cfg.json"]);
        assert_eq!(select_files(&files, "tc/a.pt").unwrap(), ["tc/a.pt"]);
        let e = select_files(&files, "l7").unwrap_err();
        assert!(
            e.contains("there is no folder `l7`") && e.contains("[l8, l8/extra, l9]") && e.contains("tc/a.pt"),
            "{e}"
        );
        let e = select_files(&files, "notes").unwrap_err();
        assert!(e.contains("folder `notes` holds [x.txt] but not cfg.json"), "{e}");
        let e = select_files(&files, "tc/b.pt").unwrap_err();
        assert!(e.contains("no file `tc/b.pt`; its .pt files: [tc/a.pt]"), "{e}");
        let e = select_files(&files, "").unwrap_err();
        assert!(e.contains("the repository root holds [README.md]"), "{e}");
    }
}
