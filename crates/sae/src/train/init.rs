//! Initialisation: seeded random weights, the decoder bias from sample
//! targets, the activation-normalisation constants, and [`Trainer::new`].

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use saepipe_core::train::TrainTensors;

use super::cpu::CpuTrain;
use super::{BDecInit, Params, TrainArch, TrainConfig, Trainer, jumprelu};
use crate::error::{Result, SaeError};

/// Standard normal samples from a seeded ChaCha8 stream.
struct Normal(ChaCha8Rng);

impl Normal {
    fn next(&mut self) -> f32 {
        // Box–Muller on (0, 1] uniforms.
        let u1 = ((self.0.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// `[rows, cols]` of random directions, each row scaled to norm `norm`.
fn random_rows(rng: &mut Normal, rows: usize, cols: usize, norm: f32) -> Vec<f32> {
    let mut w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
    for r in w.chunks_exact_mut(cols) {
        let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v *= norm / n);
    }
    w
}

/// Checks that `data` holds `n` rows of width `d` (`what` names the width).
pub(super) fn check_len(what: &'static str, data: &[f32], n: usize, d: usize) -> Result<()> {
    if data.len() != n * d {
        return Err(SaeError::InputShape { what, expected: d, found: data.len(), n });
    }
    Ok(())
}

/// Mean L2 norm of the rows of `x` (width `d`).
fn mean_norm(x: &[f32], d: usize) -> f64 {
    let rows = x.len() / d;
    if rows == 0 {
        return 0.0;
    }
    x.chunks_exact(d).map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).sum::<f64>() / rows as f64
}

/// Geometric median of the rows of `y` (width `d`).
fn geometric_median(y: &[f32], d: usize) -> Vec<f32> {
    let rows: Vec<&[f32]> = y.chunks_exact(d).collect();
    let mut m: Vec<f64> = vec![0.0; d];
    for r in &rows {
        m.iter_mut().zip(*r).for_each(|(a, b)| *a += *b as f64 / rows.len() as f64);
    }
    // Weiszfeld iterations from the mean.
    for _ in 0..100 {
        let mut num = vec![0f64; d];
        let mut den = 0f64;
        for r in &rows {
            let dist = r.iter().zip(&m).map(|(a, b)| (*a as f64 - b).powi(2)).sum::<f64>().sqrt().max(1e-8);
            den += 1.0 / dist;
            num.iter_mut().zip(*r).for_each(|(a, b)| *a += *b as f64 / dist);
        }
        let next: Vec<f64> = num.iter().map(|v| v / den).collect();
        let shift = next.iter().zip(&m).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
        m = next;
        if shift < 1e-7 {
            break;
        }
    }
    m.into_iter().map(|v| v as f32).collect()
}

impl Trainer {
    /// Creates a trainer. `init_x` (`[m, d_in]`) and, for transcoders,
    /// `init_y` (`[m, d_out]`) are sample activations used to initialise
    /// `b_dec` (mean or geometric median of the targets) and the
    /// normalisation constants.
    pub fn new(cfg: TrainConfig, d_in: usize, d_out: usize, init_x: &[f32], init_y: Option<&[f32]>) -> Result<Trainer> {
        let mut cfg = cfg;
        if d_in != d_out {
            cfg.transcoder = true;
        }
        if cfg.d_sae == 0 || d_in == 0 || d_out == 0 {
            return Err(SaeError::Invalid(format!(
                "train config: d_sae ({}), d_in ({d_in}) and d_out ({d_out}) must be positive",
                cfg.d_sae
            )));
        }
        match cfg.arch {
            TrainArch::TopK { k } | TrainArch::BatchTopK { k, .. } if k == 0 || k > cfg.d_sae => {
                return Err(SaeError::Invalid(format!("train config: k = {k} must be in 1..={}", cfg.d_sae)));
            }
            TrainArch::JumpRelu { .. } => jumprelu::validate(&cfg.arch, cfg.d_sae)?,
            _ => {}
        }
        if cfg.transcoder && cfg.apply_b_dec_to_input {
            // b_dec lives in output space for transcoders.
            cfg.apply_b_dec_to_input = false;
        }
        if init_x.is_empty() || init_x.len() % d_in != 0 {
            return Err(SaeError::InputShape {
                what: "d_in",
                expected: d_in,
                found: init_x.len(),
                n: init_x.len() / d_in,
            });
        }
        let m = init_x.len() / d_in;
        let init_y = match (cfg.transcoder, init_y) {
            (true, Some(y)) => {
                check_len("d_out", y, m, d_out)?;
                y
            }
            (true, None) => {
                return Err(SaeError::Invalid("transcoder training needs init_y samples of the output hook".into()));
            }
            (false, _) => init_x,
        };
        let (scale_in, scale_out) = if cfg.normalize_activations {
            let si = ((d_in as f64).sqrt() / mean_norm(init_x, d_in).max(1e-12)) as f32;
            let so =
                if cfg.transcoder { ((d_out as f64).sqrt() / mean_norm(init_y, d_out).max(1e-12)) as f32 } else { si };
            (si, so)
        } else {
            (1.0, 1.0)
        };
        let d_sae = cfg.d_sae;
        let mut rng = Normal(ChaCha8Rng::seed_from_u64(cfg.seed));
        let dec_norm = cfg.decoder_init_norm.unwrap_or(match cfg.arch {
            TrainArch::Standard { .. } | TrainArch::JumpRelu { .. } => 0.1,
            _ => 1.0,
        });
        let dec = random_rows(&mut rng, d_sae, d_out, dec_norm);
        // Encoder = decoder transpose where the spaces agree.
        let enc = if d_in == d_out { dec.clone() } else { random_rows(&mut rng, d_sae, d_in, dec_norm) };
        let scaled_y: Vec<f32> = init_y.iter().map(|v| v * scale_out).collect();
        let b_dec = match cfg.b_dec_init {
            BDecInit::Zeros => vec![0.0; d_out],
            BDecInit::Mean => {
                let mut s = vec![0f64; d_out];
                for r in scaled_y.chunks_exact(d_out) {
                    s.iter_mut().zip(r).for_each(|(a, b)| *a += *b as f64);
                }
                s.into_iter().map(|v| (v / m as f64) as f32).collect()
            }
            BDecInit::GeometricMedian => geometric_median(&scaled_y, d_out),
        };
        let skip = if cfg.skip_connection { Some(vec![0.0; d_out * d_in]) } else { None };
        let mut b_enc = vec![0.0; d_sae];
        if let TrainArch::JumpRelu { initial_threshold, .. } = cfg.arch {
            // θ follows the bias (see `Params::b_enc`).
            b_enc.resize(2 * d_sae, initial_threshold);
        }
        let params = Params { enc, b_enc, dec, b_dec, skip };
        let tensors = TrainTensors { adam_m: params.zeros_like(), adam_v: params.zeros_like(), params };
        Ok(Trainer {
            d_in,
            d_out,
            d_sae,
            ops: CpuTrain::new(cfg.clone(), d_in, d_out, tensors),
            step: 0,
            tokens_seen: 0,
            tokens_since_fired: vec![0; d_sae],
            fire_counts: vec![0; d_sae],
            batch_threshold: 0.0,
            scale_in,
            scale_out,
            cfg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_median_resists_outliers() {
        // Nine points around (1, 1) and one far outlier.
        let mut y = Vec::new();
        for i in 0..9 {
            y.extend([1.0 + 0.01 * i as f32, 1.0 - 0.01 * i as f32]);
        }
        y.extend([100.0, -100.0]);
        let m = geometric_median(&y, 2);
        assert!((m[0] - 1.04).abs() < 0.1 && (m[1] - 0.96).abs() < 0.1, "{m:?}");
        let cfg = TrainConfig {
            arch: TrainArch::TopK { k: 1 },
            d_sae: 4,
            b_dec_init: BDecInit::GeometricMedian,
            ..Default::default()
        };
        let t = Trainer::new(cfg.clone(), 2, 2, &y, None).unwrap();
        assert_eq!(t.ops.params.b_dec, m);
        let t = Trainer::new(TrainConfig { b_dec_init: BDecInit::Mean, ..cfg }, 2, 2, &y, None).unwrap();
        assert!(t.ops.params.b_dec[0] > 10.0);
    }
}
