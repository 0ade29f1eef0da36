//! Random-weight HF checkpoints of any supported shape, for benchmarks and for
//! other crates' tests that need a real model directory without downloads.

use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::Path;

/// HF tensor names and shapes of a checkpoint with this configuration.
pub fn tensor_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    match cfg.arch {
        Arch::Gpt2 => crate::arch::gpt2::tensor_shapes(cfg),
        Arch::NeoX => crate::arch::neox::tensor_shapes(cfg),
        Arch::Llama => crate::arch::llama::tensor_shapes(cfg),
        Arch::Gemma2 | Arch::Gemma3 => crate::arch::gemma::tensor_shapes(cfg),
    }
}

/// Writes `config` as config.json and a model.safetensors (f32) of normal-ish
/// random weights (std ≈ 0.02·√3, LayerNorm weights ≈ 1) into `dir`.
pub fn write_random_hf_model(dir: &Path, config: &serde_json::Value, seed: u64) -> Result<ModelConfig> {
    let cfg_path = dir.join("config.json");
    let cfg = ModelConfig::from_json(config, &cfg_path)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::write(&cfg_path, serde_json::to_string_pretty(config).expect("JSON value")).map_err(io(&cfg_path))?;
    let mut rng = saepipe_core::rng::SplitMix64::new(seed);
    let shapes = tensor_shapes(&cfg);
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let is_ln_weight = shape.len() == 1 && name.ends_with("weight");
            let mut out = Vec::with_capacity(4 * n);
            for _ in 0..n {
                let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let x = if is_ln_weight { 1.0 + 0.1 * u } else { 0.12 * u };
                out.extend(x.to_le_bytes());
            }
            out
        })
        .collect();
    let views: Vec<(String, TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), d).expect("sizes match")))
        .collect();
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &path)
        .map_err(|e| ModelError::Safetensors { file: path.display().to_string(), message: e.to_string() })?;
    Ok(cfg)
}
