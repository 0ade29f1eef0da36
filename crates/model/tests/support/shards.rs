//! A fixture's weights as bf16, in two shards with an index (as the hub ships
//! large checkpoints): the same run as the f32 file holding the same
//! bf16-rounded values. Shared by the model crate's golden tests.
#![allow(dead_code)]

use crate::golden::{fixture, rel_err, to_f32, tokens};
use saepipe_model::{LnHook, LoadOptions, Model, Processing, RunRequest};
use safetensors::SafeTensors;
use std::path::Path;

/// Runs `arch`'s fixture from bf16 shards and from f32 with the same values
/// (logits and `hook` must be identical), and checks that the rounding
/// changed the logits (the shards were read as bf16).
pub fn bf16_shards_match_f32(arch: &str, hook: &str) {
    let bytes = std::fs::read(fixture(arch).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let (f32_dir, bf16_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&f32_dir, &bf16_dir] {
        std::fs::copy(fixture(arch).join("config.json"), d.path().join("config.json")).unwrap();
    }
    let mut rounded = Vec::new();
    let mut halves = Vec::new();
    for n in &names {
        let t = st.tensor(n).unwrap();
        let vals = to_f32(t.data());
        let b: Vec<half::bf16> = vals.iter().map(|&x| half::bf16::from_f32(x)).collect();
        rounded.push((n.clone(), t.shape().to_vec(), b.iter().flat_map(|x| x.to_f32().to_le_bytes()).collect()));
        halves.push((n.clone(), t.shape().to_vec(), b.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()));
    }
    let write = |path: &Path, dtype: safetensors::Dtype, ts: &[(String, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = ts
            .iter()
            .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), d).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    };
    write(&f32_dir.path().join("model.safetensors"), safetensors::Dtype::F32, &rounded);
    let half = halves.len() / 2;
    let mut map = serde_json::Map::new();
    for (i, part) in [&halves[..half], &halves[half..]].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        write(&bf16_dir.path().join(&file), safetensors::Dtype::BF16, part);
        for (n, ..) in part {
            map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(bf16_dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();

    let (flat, batch, ctx) = tokens(arch);
    let run = |dir: &Path| {
        let model =
            Model::load(dir, &LoadOptions { processing: Some(Processing::FULL), ln_hook: LnHook::PreAffine }).unwrap();
        let mut req = RunRequest { capture: [hook.to_string()].into(), want_logits: true, ..Default::default() };
        model.run(&flat, batch, ctx, &mut req).unwrap()
    };
    let (a, b) = (run(f32_dir.path()), run(bf16_dir.path()));
    assert_eq!(a.logits, b.logits, "{arch}: bf16 shards differ from f32");
    assert_eq!(a.captured, b.captured);
    // And the rounding did change something (the test reads bf16, not the original file).
    // (The `full` goldens, or those meta.json's `same_as` names for them.)
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(arch).join("meta.json")).unwrap()).unwrap();
    let full = meta["same_as"]["full"].as_str().unwrap_or("full");
    let golden_bytes = std::fs::read(fixture(arch).join(format!("hooks_{full}.safetensors"))).unwrap();
    let golden = SafeTensors::deserialize(&golden_bytes).unwrap();
    let e = rel_err(a.logits.as_ref().unwrap(), &to_f32(golden.tensor("logits").unwrap().data()));
    assert!(e > 0.0 && e < 0.1, "{arch}: bf16 logits {e:e} from the f32 goldens");
}
