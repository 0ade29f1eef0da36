//! Hugging Face hub datasets as corpora: `hf-dataset:<org>/<name>[@rev][/split]`
//! names the Parquet files of one split of a dataset repository, read through
//! the local HF cache (`datasets--org--name`, the layout `huggingface_hub`
//! writes, so datasets downloaded by Python are reused), downloaded there from
//! `$HF_ENDPOINT` when missing unless `HF_HUB_OFFLINE` is set.
//!
//! A split's files are found as the `datasets` library finds them: a folder
//! named after the split (`data/train/…`, `default/train/0000.parquet` on the
//! hub's `refs/convert/parquet` branch), or a file name starting with, or
//! containing after a separator, the split's name (`data/train-00000-of-00002.parquet`),
//! or one of the words that library takes for it (`val`, `dev` for validation).
//! A repository whose Parquet files name no split holds one split, `train`.

use anyhow::{Context, Result, anyhow, bail};
use saepipe_model::hub::{HubCache, HubEndpoint, HubRef};
use std::path::{Path, PathBuf};

/// The scheme of a hub-dataset corpus.
pub const SCHEME: &str = crate::engine::HUB_DATASET_SCHEME;

/// The splits the `datasets` library recognises in file and folder names,
/// each with the words that name it (`val.jsonl` is the validation split).
const KNOWN_SPLITS: &[(&str, &[&str])] = &[
    ("train", &["train", "training"]),
    ("validation", &["validation", "valid", "dev", "val"]),
    ("test", &["test", "testing", "eval", "evaluation"]),
];

/// The words that name `split` in file names (itself, for a split of another name).
fn split_words(split: &str) -> Vec<&str> {
    KNOWN_SPLITS.iter().find(|(s, _)| *s == split).map_or_else(|| vec![split], |(_, words)| words.to_vec())
}

/// A parsed `hf-dataset:` reference.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetRef {
    /// The repository and revision (a dataset repository).
    pub hub: HubRef,
    /// The split to read (`train` when the reference names none).
    pub split: String,
    /// Whether the reference named the split.
    pub explicit_split: bool,
}

pub use crate::engine::is_hub_dataset;

impl DatasetRef {
    /// Parses `hf-dataset:org/name`, `…@rev`, `…/split` or `…@rev/split`. A
    /// revision holding `/` (`refs/convert/parquet`) must be followed by the split.
    pub fn parse(spec: &str) -> Result<DatasetRef> {
        let form = "hf-dataset:<org>/<name>[@<revision>][/<split>]";
        let rest = spec.strip_prefix(SCHEME).ok_or_else(|| anyhow!("`{spec}` does not start with `{SCHEME}`"))?;
        let (repo_part, rev_part) = match rest.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (rest, None),
        };
        let parts: Vec<&str> = repo_part.split('/').collect();
        let (org, name, mut split) = match (parts.as_slice(), rev_part) {
            ([org, name], _) => (*org, *name, None),
            ([org, name, split], None) => (*org, *name, Some(split.to_string())),
            _ => bail!("`{spec}` is not a hub dataset reference of the form {form}"),
        };
        let revision = match rev_part {
            Some(rev) => match rev.rsplit_once('/') {
                Some((rev, s)) if split.is_none() => {
                    split = Some(s.to_string());
                    rev.to_string()
                }
                _ => rev.to_string(),
            },
            None => "main".to_string(),
        };
        let hub = HubRef::parse(&format!("{org}/{name}@{revision}"))
            .map_err(|e| anyhow!("`{spec}` is not a hub dataset reference of the form {form}: {e}"))?
            .dataset();
        if let Some(s) = &split
            && (s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            bail!("`{spec}`: `{s}` is not a split name");
        }
        Ok(DatasetRef { hub, explicit_split: split.is_some(), split: split.unwrap_or_else(|| "train".into()) })
    }

    fn label(&self) -> String {
        format!("{SCHEME}{}@{}/{}", self.hub.repo, self.hub.revision, self.split)
    }

    /// The command that puts the split into the local cache.
    fn fetch_hint(&self) -> String {
        format!(
            "huggingface-cli download {} --repo-type dataset --revision {} --include '*.parquet'",
            self.hub.repo, self.hub.revision
        )
    }
}

/// Whether a path component (a folder, or a file name without `.parquet`)
/// names `split`: equal to it, or holding it between separators.
fn names_split(component: &str, split: &str) -> bool {
    let sep = |c: Option<char>| c.is_none_or(|c| "-._ 0123456789".contains(c));
    component.match_indices(split).any(|(i, _)| {
        let before = component[..i].chars().next_back();
        let after = component[i + split.len()..].chars().next();
        (i == 0 || sep(before) && before.is_some()) && sep(after)
    })
}

fn split_of(path: &str, split: &str) -> bool {
    let stem = path.strip_suffix(".parquet").unwrap_or(path);
    split_words(split).iter().any(|w| stem.split('/').any(|c| names_split(c, w)))
}

/// The repository's Parquet files of `split`, in path order (shards are named
/// in order); `explicit` says whether the user named the split.
pub fn select_split(files: &[String], split: &str, explicit: bool) -> std::result::Result<Vec<String>, String> {
    let mut parquet: Vec<String> = files.iter().filter(|f| f.ends_with(".parquet")).cloned().collect();
    parquet.sort();
    if parquet.is_empty() {
        return Err(format!(
            "the repository holds no Parquet files ({} files); for a dataset stored as JSON, CSV or a script, read the Parquet conversion the hub keeps on the `refs/convert/parquet` revision: hf-dataset:<org>/<name>@refs/convert/parquet/{split}",
            files.len()
        ));
    }
    let chosen: Vec<String> = parquet.iter().filter(|f| split_of(f, split)).cloned().collect();
    if !chosen.is_empty() {
        return Ok(chosen);
    }
    let named: Vec<&str> =
        KNOWN_SPLITS.iter().map(|(s, _)| *s).filter(|s| parquet.iter().any(|f| split_of(f, s))).collect();
    if !explicit && split == "train" && named.is_empty() {
        return Ok(parquet);
    }
    let shown: Vec<&str> = parquet.iter().take(8).map(String::as_str).collect();
    Err(format!(
        "no Parquet file of split `{split}`{} (Parquet files: {}{})",
        if named.is_empty() { String::new() } else { format!("; splits found: {}", named.join(", ")) },
        shown.join(", "),
        if parquet.len() > shown.len() { format!(", … {} in all", parquet.len()) } else { String::new() }
    ))
}

/// Every file under `dir`, as `/`-separated paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file()
                && let Ok(rel) = p.strip_prefix(dir)
            {
                out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
            }
        }
    }
    out
}

/// The local Parquet files of the split `spec` names, downloading them into
/// the HF cache first when they are missing, downloads are allowed and
/// `HF_HUB_OFFLINE` is not set. While downloads are forbidden (read-only
/// commands) a missing dataset is a [`NotDownloaded`](super::NotDownloaded).
pub fn resolve(spec: &str) -> Result<Vec<PathBuf>> {
    let d = DatasetRef::parse(spec)?;
    let cache = HubCache::from_env();
    if let Some(snap) = cache.snapshot_dir(&d.hub)?.filter(|s| s.is_dir())
        && let Ok(files) = select_split(&files_under(&snap), &d.split, d.explicit_split)
    {
        return Ok(files.iter().map(|f| snap.join(f)).collect());
    }
    if !super::downloads_allowed() {
        return Err(super::NotDownloaded { what: format!("corpus `{}`", d.label()) }.into());
    }
    if cache.offline {
        bail!(
            "corpus `{}` is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set: fetch it once with `{}` or unset HF_HUB_OFFLINE",
            d.label(),
            cache.repo_dir(&d.hub).display(),
            d.fetch_hint()
        );
    }
    let endpoint = HubEndpoint::from_env();
    eprintln!(
        "corpus `{}` is not in the Hugging Face cache; downloading its Parquet files from {} into {}",
        d.label(),
        endpoint.url,
        cache.root.display()
    );
    let mut chosen = Vec::new();
    let snap = cache
        .download_files(
            &d.hub,
            &endpoint,
            &mut |files| {
                chosen = select_split(files, &d.split, d.explicit_split)?;
                Ok(chosen.clone())
            },
            &mut |line| eprintln!("  {line}"),
        )
        .with_context(|| format!("corpus `{}`: downloading it failed", d.label()))?;
    Ok(chosen.iter().map(|f| snap.join(f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let p = |s: &str| DatasetRef::parse(s).unwrap();
        let d = p("hf-dataset:NeelNanda/pile-10k");
        assert_eq!(
            (d.hub.repo.as_str(), d.hub.revision.as_str(), d.split.as_str()),
            ("NeelNanda/pile-10k", "main", "train")
        );
        assert!(!d.explicit_split);
        let d = p("hf-dataset:NeelNanda/pile-10k/test");
        assert_eq!((d.hub.revision.as_str(), d.split.as_str(), d.explicit_split), ("main", "test", true));
        let d = p("hf-dataset:org/ds@v1.0");
        assert_eq!((d.hub.revision.as_str(), d.split.as_str()), ("v1.0", "train"));
        let d = p("hf-dataset:org/ds@v1.0/validation");
        assert_eq!((d.hub.revision.as_str(), d.split.as_str()), ("v1.0", "validation"));
        let d = p("hf-dataset:monology/pile-uncopyrighted@refs/convert/parquet/train");
        assert_eq!((d.hub.revision.as_str(), d.split.as_str()), ("refs/convert/parquet", "train"));
        assert_eq!(d.hub.kind, saepipe_model::hub::RepoKind::Dataset);
        for bad in
            ["hf-dataset:justname", "hf-dataset:a/b/c/d", "hf-dataset:a/b@", "hf-dataset:../b", "hf-dataset:a/b/"]
        {
            let e = DatasetRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn finds_split_files_as_the_datasets_library_does() {
        let files: Vec<String> = [
            "README.md",
            "data/train-00001-of-00002-b.parquet",
            "data/train-00000-of-00002-a.parquet",
            "data/test-00000-of-00001.parquet",
            "default/validation/0000.parquet",
            "data/constrained-00000.parquet",
            "extra/val.parquet",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            select_split(&files, "train", false).unwrap(),
            ["data/train-00000-of-00002-a.parquet", "data/train-00001-of-00002-b.parquet"]
        );
        assert_eq!(select_split(&files, "test", true).unwrap(), ["data/test-00000-of-00001.parquet"]);
        assert_eq!(
            select_split(&files, "validation", true).unwrap(),
            ["default/validation/0000.parquet", "extra/val.parquet"]
        );
        let e = select_split(&files, "holdout", true).unwrap_err();
        assert!(
            e.contains("no Parquet file of split `holdout`") && e.contains("splits found: train, validation, test"),
            "{e}"
        );
        // No split named anywhere: everything is `train`, but only when the user did not ask for one.
        let plain = ["pile-10k.parquet".to_string(), "more.parquet".to_string()];
        assert_eq!(select_split(&plain, "train", false).unwrap(), ["more.parquet", "pile-10k.parquet"]);
        assert!(select_split(&plain, "train", true).is_err());
        let e = select_split(&["a.jsonl.zst".to_string()], "train", false).unwrap_err();
        assert!(e.contains("refs/convert/parquet"), "{e}");
    }
}
