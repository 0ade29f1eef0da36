//! Which key each stage instance of a pipeline had last time, with its recipe, so
//! `plan` can say *why* a stage will rerun (which parameter or input changed).

use super::keys::KeyMaterial;
use super::names::safe_name;
use anyhow::Result;
use saepipe_cache::{Cache, Key};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
pub struct IndexEntry {
    pub key: Key,
    pub material: KeyMaterial,
}

fn path(cache: &Cache, pipeline: &str, instance: &str) -> PathBuf {
    // The hash keeps `a[x/y]` and `a[x_y]` apart after sanitizing.
    let tag = blake3::hash(instance.as_bytes()).to_hex();
    cache.root().join("index").join(safe_name(pipeline)).join(format!("{}-{}.json", safe_name(instance), &tag[..8]))
}

pub fn record(cache: &Cache, pipeline: &str, instance: &str, key: &Key, material: &KeyMaterial) -> Result<()> {
    if cache.read_only() {
        return Ok(()); // only explains reruns; a read-only cache serves hits without it
    }
    let p = path(cache, pipeline, instance);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written via a unique temp name and renamed, so concurrent runs never leave a torn file.
    let tmp = p.with_extension(
        format!("tmp.{}.{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""),
    );
    std::fs::write(&tmp, serde_json::to_vec_pretty(&IndexEntry { key: *key, material: material.clone() })?)?;
    std::fs::rename(&tmp, &p)?;
    Ok(())
}

pub fn previous(cache: &Cache, pipeline: &str, instance: &str) -> Option<IndexEntry> {
    let bytes = std::fs::read(path(cache, pipeline, instance)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
