//! The checkpoint of a trainer ([`TrainerState`]): in memory and as one
//! safetensors file.

use std::path::Path;

use saepipe_core::train::TrainTensors;

use super::cpu::CpuTrain;
use super::{Params, TrainArch, TrainConfig, TrainOps, Trainer};
use crate::error::{Result, SaeError};
use crate::st::{self, Out, StFile};

/// Everything needed to continue training exactly where it stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerState {
    /// The configuration (after [`Trainer::new`]'s adjustments).
    pub cfg: TrainConfig,
    /// Input width.
    pub d_in: usize,
    /// Output width (= `d_in` for SAEs).
    pub d_out: usize,
    /// Steps taken.
    pub step: u64,
    /// Training rows (tokens) seen.
    pub tokens_seen: u64,
    /// Trainable tensors.
    pub params: Params,
    /// Adam first moments, shaped like `params`.
    pub adam_m: Params,
    /// Adam second moments, shaped like `params`.
    pub adam_v: Params,
    /// Per latent `[d_sae]`: tokens since it last fired (dead-latent test).
    pub tokens_since_fired: Vec<u64>,
    /// Per latent `[d_sae]`: tokens on which it fired, over all training.
    pub fire_counts: Vec<u64>,
    /// BatchTopK's saved threshold (EMA of the smallest kept activation).
    pub batch_threshold: f64,
    /// Input scale of `normalize_activations` (1 without it).
    pub scale_in: f32,
    /// Target scale of `normalize_activations` (1 without it).
    pub scale_out: f32,
}

/// Version of the trainer-state file written by [`TrainerState::save`].
pub const STATE_VERSION: &str = "1";

impl<B: TrainOps> Trainer<B> {
    /// A copy of everything [`Trainer::restore`] needs to continue
    /// bit-identically (on any backend).
    pub fn state(&self) -> Result<TrainerState> {
        let t = self.ops.tensors()?;
        Ok(TrainerState {
            cfg: self.cfg.clone(),
            d_in: self.d_in,
            d_out: self.d_out,
            step: self.step,
            tokens_seen: self.tokens_seen,
            params: t.params,
            adam_m: t.adam_m,
            adam_v: t.adam_v,
            tokens_since_fired: self.tokens_since_fired.clone(),
            fire_counts: self.fire_counts.clone(),
            batch_threshold: self.batch_threshold,
            scale_in: self.scale_in,
            scale_out: self.scale_out,
        })
    }
}

impl Trainer {
    /// A trainer on the CPU from a saved state; fails if the tensor shapes
    /// do not match the state's config and dimensions.
    pub fn restore(s: TrainerState) -> Result<Trainer> {
        let d_sae = s.cfg.d_sae;
        let (d_in, d_out) = (s.d_in, s.d_out);
        let setup = super::cpu::setup(&s.cfg, d_in, d_out);
        if !(s.params.fits(&setup) && s.adam_m.fits(&setup) && s.adam_v.fits(&setup))
            || s.tokens_since_fired.len() != d_sae
            || s.fire_counts.len() != d_sae
        {
            return Err(SaeError::Invalid(format!(
                "trainer state does not match its config (d_in {d_in}, d_sae {d_sae}, d_out {d_out})"
            )));
        }
        let tensors = TrainTensors { params: s.params, adam_m: s.adam_m, adam_v: s.adam_v };
        Ok(Trainer {
            d_in,
            d_out,
            d_sae,
            step: s.step,
            tokens_seen: s.tokens_seen,
            tokens_since_fired: s.tokens_since_fired,
            fire_counts: s.fire_counts,
            batch_threshold: s.batch_threshold,
            scale_in: s.scale_in,
            scale_out: s.scale_out,
            ops: CpuTrain::new(s.cfg.clone(), d_in, d_out, tensors),
            cfg: s.cfg,
        })
    }
}

impl TrainerState {
    /// Writes the state as one safetensors file (tensors + config JSON in the
    /// header metadata, with a format version).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut t: Vec<(String, Out)> = Vec::new();
        let (d_in, d_out, d_sae) = (self.d_in, self.d_out, self.cfg.d_sae);
        let jump = matches!(self.cfg.arch, TrainArch::JumpRelu { .. });
        for (prefix, p) in [("param", &self.params), ("adam_m", &self.adam_m), ("adam_v", &self.adam_v)] {
            for (name, v) in p.tensors() {
                if name == "b_enc" && jump {
                    // JumpReLU: bias and threshold as separate tensors.
                    t.push((format!("{prefix}.b_enc"), Out::F32(vec![d_sae], v[..d_sae].to_vec())));
                    t.push((format!("{prefix}.threshold"), Out::F32(vec![d_sae], v[d_sae..].to_vec())));
                    continue;
                }
                let shape = match name {
                    "enc" => vec![d_sae, d_in],
                    "dec" => vec![d_sae, d_out],
                    "skip" => vec![d_out, d_in],
                    _ => vec![v.len()],
                };
                t.push((format!("{prefix}.{name}"), Out::F32(shape, v.clone())));
            }
        }
        t.push(("tokens_since_fired".into(), Out::U64(vec![d_sae], self.tokens_since_fired.clone())));
        t.push(("fire_counts".into(), Out::U64(vec![d_sae], self.fire_counts.clone())));
        t.push(("batch_threshold".into(), Out::F64(vec![1], vec![self.batch_threshold])));
        t.push(("counters".into(), Out::U64(vec![2], vec![self.step, self.tokens_seen])));
        t.push(("scales".into(), Out::F32(vec![2], vec![self.scale_in, self.scale_out])));
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".into(), "saepipe-trainer-state".into());
        meta.insert("version".into(), STATE_VERSION.into());
        meta.insert("config".into(), serde_json::to_string(&self.cfg).expect("config serialises"));
        meta.insert("d_in".into(), d_in.to_string());
        meta.insert("d_out".into(), d_out.to_string());
        st::write(path, t, Some(meta))
    }

    /// Reads a state written by [`TrainerState::save`], checking the format
    /// name, version and tensor shapes.
    pub fn load(path: &Path) -> Result<TrainerState> {
        let f = StFile::open(path)?;
        let meta = f.metadata().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| SaeError::config(path, k, "missing from the safetensors header metadata"))
        };
        if field("format")? != "saepipe-trainer-state" {
            return Err(SaeError::config(path, "format", "not a saepipe trainer state"));
        }
        let v = field("version")?;
        if v != STATE_VERSION {
            return Err(SaeError::config(
                path,
                "version",
                format!("version {v} is not supported (expected {STATE_VERSION})"),
            ));
        }
        let cfg: TrainConfig =
            serde_json::from_str(&field("config")?).map_err(|e| SaeError::Json { path: path.into(), source: e })?;
        let parse =
            |k: &str| -> Result<usize> { field(k)?.parse().map_err(|_| SaeError::config(path, k, "not an integer")) };
        let (d_in, d_out, d_sae) = (parse("d_in")?, parse("d_out")?, cfg.d_sae);
        let jump = matches!(cfg.arch, TrainArch::JumpRelu { .. });
        let params = |prefix: &str| -> Result<Params> {
            let mut b_enc = f.f32(&format!("{prefix}.b_enc"), Some(&[d_sae]))?;
            if jump {
                b_enc.extend(f.f32(&format!("{prefix}.threshold"), Some(&[d_sae]))?);
            }
            Ok(Params {
                enc: f.f32(&format!("{prefix}.enc"), Some(&[d_sae, d_in]))?,
                b_enc,
                dec: f.f32(&format!("{prefix}.dec"), Some(&[d_sae, d_out]))?,
                b_dec: f.f32(&format!("{prefix}.b_dec"), Some(&[d_out]))?,
                skip: if cfg.skip_connection {
                    Some(f.f32(&format!("{prefix}.skip"), Some(&[d_out, d_in]))?)
                } else {
                    None
                },
            })
        };
        let counters = f.u64("counters")?;
        let scales = f.f32("scales", Some(&[2]))?;
        if counters.len() != 2 {
            return Err(SaeError::config(path, "counters", "expected 2 values"));
        }
        Ok(TrainerState {
            d_in,
            d_out,
            step: counters[0],
            tokens_seen: counters[1],
            params: params("param")?,
            adam_m: params("adam_m")?,
            adam_v: params("adam_v")?,
            tokens_since_fired: f.u64("tokens_since_fired")?,
            fire_counts: f.u64("fire_counts")?,
            batch_threshold: f.f64("batch_threshold")?.first().copied().unwrap_or(0.0),
            scale_in: scales[0],
            scale_out: scales[1],
            cfg,
        })
    }
}
