//! Training behaviour: ground-truth recovery on planted sparse dictionaries,
//! bit-identical resume, errors, and consistency of the saved coder.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use saepipe_sae::{SaeError, TrainArch, TrainConfig, Trainer, TrainerState, load_coder, write_saelens};

struct Planted {
    d: usize,
    features: Vec<f32>,
    n_feat: usize,
    rng: ChaCha8Rng,
}

fn unif(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
}

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = unif(rng).max(1e-7);
    let u2 = unif(rng);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

impl Planted {
    /// `n_feat` random unit-norm features in `d` dimensions.
    fn new(d: usize, n_feat: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut features: Vec<f32> = (0..n_feat * d).map(|_| normal(&mut rng)).collect();
        for r in features.chunks_exact_mut(d) {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter_mut().for_each(|v| *v /= n);
        }
        Planted { d, features, n_feat, rng }
    }
    /// Each row: a non-negative combination of `active` distinct features.
    fn batch(&mut self, n: usize, active: usize) -> Vec<f32> {
        let mut x = vec![0f32; n * self.d];
        for r in x.chunks_exact_mut(self.d) {
            let mut chosen = Vec::with_capacity(active);
            while chosen.len() < active {
                let f = (self.rng.next_u32() as usize) % self.n_feat;
                if !chosen.contains(&f) {
                    chosen.push(f);
                }
            }
            for f in chosen {
                let c = 0.5 + unif(&mut self.rng);
                for (o, w) in r.iter_mut().zip(&self.features[f * self.d..(f + 1) * self.d]) {
                    *o += c * w;
                }
            }
        }
        x
    }
    /// Mean over true features of the best cosine with any decoder row.
    fn mean_max_cos(&self, w_dec: &[f32]) -> f64 {
        let rows: Vec<&[f32]> = w_dec.chunks_exact(self.d).collect();
        let mut total = 0f64;
        for f in self.features.chunks_exact(self.d) {
            let mut best = -1f64;
            for r in &rows {
                let n = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                let c = f.iter().zip(*r).map(|(a, b)| a * b).sum::<f32>() / n;
                best = best.max(c as f64);
            }
            total += best;
        }
        total / self.n_feat as f64
    }
}

fn train_planted(cfg: TrainConfig, steps: usize) -> (f64, f64) {
    let mut data = Planted::new(32, 64, 5);
    let init = data.batch(512, 3);
    let mut t = Trainer::new(cfg, 32, 32, &init, None).unwrap();
    let mut last = None;
    for _ in 0..steps {
        let x = data.batch(256, 3);
        last = Some(t.step(&x, None, 256).unwrap());
    }
    let coder = t.to_coder().unwrap();
    let cos = data.mean_max_cos(&coder.w_dec);
    let s = last.unwrap();
    eprintln!("{:?}: mean max cos {cos:.3}, last step {s:?}", t.config().arch);
    (cos, s.explained_variance)
}

#[test]
fn topk_recovers_planted_features() {
    let cfg = TrainConfig {
        arch: TrainArch::TopK { k: 3 },
        d_sae: 128,
        lr: 3e-3,
        dead_after_tokens: 256 * 20,
        seed: 1,
        ..Default::default()
    };
    let (cos, ev) = train_planted(cfg, 1500);
    assert!(cos >= 0.9, "TopK mean max cosine {cos}");
    assert!(ev > 0.8, "explained variance {ev}");
}

#[test]
fn relu_l1_recovers_planted_features() {
    let cfg = TrainConfig {
        arch: TrainArch::Standard { l1_coefficient: 0.3, l1_warmup_steps: 100 },
        d_sae: 128,
        lr: 3e-3,
        seed: 2,
        ..Default::default()
    };
    let (cos, ev) = train_planted(cfg, 1500);
    assert!(cos >= 0.9, "ReLU+L1 mean max cosine {cos}");
    assert!(ev > 0.7, "explained variance {ev}");
}

/// JumpReLU with SAELens's defaults except the L0 coefficient and warm-up.
fn jumprelu(l0_coefficient: f32, l0_warmup_steps: u64) -> TrainArch {
    let mut a = TrainArch::jumprelu(l0_coefficient);
    if let TrainArch::JumpRelu { l0_warmup_steps: w, .. } = &mut a {
        *w = l0_warmup_steps;
    }
    a
}

#[test]
fn jumprelu_recovers_planted_features() {
    // Three planted features per row; the L0 penalty alone (no k) has to
    // find that sparsity.
    let cfg = TrainConfig { arch: jumprelu(0.03, 100), d_sae: 128, lr: 3e-3, seed: 2, ..Default::default() };
    let (cos, ev) = train_planted(cfg.clone(), 1500);
    assert!(cos >= 0.95, "JumpReLU mean max cosine {cos}");
    assert!(ev > 0.85, "explained variance {ev}");
    // The saved coder keeps about the planted number of latents per row.
    let mut data = Planted::new(32, 64, 5);
    let init = data.batch(512, 3);
    let mut t = Trainer::new(cfg, 32, 32, &init, None).unwrap();
    for _ in 0..1500 {
        t.step(&data.batch(256, 3), None, 256).unwrap();
    }
    let thr = t.threshold().unwrap().to_vec();
    assert!(thr.iter().all(|&v| v >= 0.0));
    assert!(thr.iter().any(|&v| v > 0.05), "thresholds should have grown: {thr:?}");
    let coder = t.to_coder().unwrap();
    assert_eq!(coder.architecture_name(), "jumprelu");
    let acts = coder.encode(&data.batch(512, 3), 512).unwrap();
    assert!((2.0..5.0).contains(&acts.mean_l0()), "inference L0 {}", acts.mean_l0());
}

#[test]
fn batchtopk_keeps_k_per_row_on_average_and_saves_as_jumprelu() {
    let mut data = Planted::new(32, 64, 9);
    let init = data.batch(256, 3);
    let cfg = TrainConfig {
        arch: TrainArch::BatchTopK { k: 4, threshold_lr: 0.05 },
        d_sae: 96,
        lr: 3e-3,
        seed: 3,
        ..Default::default()
    };
    let mut t = Trainer::new(cfg, 32, 32, &init, None).unwrap();
    for _ in 0..300 {
        let x = data.batch(128, 3);
        let s = t.step(&x, None, 128).unwrap();
        assert_eq!(s.l0, 4.0, "BatchTopK keeps exactly k·n activations per batch");
    }
    let coder = t.to_coder().unwrap();
    let thr = match &coder.activation {
        saepipe_sae::Activation::JumpRelu { threshold } => threshold[0],
        other => panic!("expected jumprelu, got {other:?}"),
    };
    assert!(thr > 0.0);
    assert_eq!(coder.architecture_name(), "jumprelu");
    // The global threshold keeps roughly k latents per row at inference.
    let x = data.batch(512, 3);
    let acts = coder.encode(&x, 512).unwrap();
    assert!((acts.mean_l0() - 4.0).abs() < 2.0, "inference L0 {}", acts.mean_l0());
    let cos = data.mean_max_cos(&coder.w_dec);
    assert!(cos > 0.8, "BatchTopK mean max cosine {cos}");
}

#[test]
fn resume_from_checkpoint_is_bit_identical() {
    for arch in [
        TrainArch::TopK { k: 4 },
        TrainArch::Standard { l1_coefficient: 0.2, l1_warmup_steps: 5 },
        TrainArch::BatchTopK { k: 3, threshold_lr: 0.01 },
        jumprelu(0.05, 4),
        {
            // Every JumpReLU option that keeps state or changes the backward.
            let mut a = jumprelu(0.05, 4);
            if let TrainArch::JumpRelu {
                sparsity_loss_mode, pre_act_loss_coefficient, ste_to_input, bandwidth, ..
            } = &mut a
            {
                *sparsity_loss_mode = saepipe_sae::train::JumpReluSparsityLoss::Tanh;
                *pre_act_loss_coefficient = Some(0.01);
                *ste_to_input = true;
                *bandwidth = 0.2;
            }
            a
        },
    ] {
        let mut data = Planted::new(32, 64, 11);
        let batches: Vec<Vec<f32>> = (0..12).map(|_| data.batch(100, 3)).collect();
        let cfg = TrainConfig {
            arch: arch.clone(),
            d_sae: 80,
            lr: 1e-2,
            lr_warmup_steps: 3,
            lr_decay: saepipe_sae::LrDecay::Cosine,
            total_steps: 12,
            dead_after_tokens: 300,
            normalize_activations: true,
            seed: 4,
            ..Default::default()
        };
        let mut a = Trainer::new(cfg.clone(), 32, 32, &batches[0], None).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let ckpt = tmp.path().join("state.safetensors");
        for (i, b) in batches.iter().enumerate() {
            if i == 6 {
                a.state().unwrap().save(&ckpt).unwrap();
            }
            a.step(b, None, 100).unwrap();
        }
        let state = TrainerState::load(&ckpt).unwrap();
        assert_eq!(state.step, 6);
        let mut b = Trainer::restore(state).unwrap();
        let mut last = None;
        for batch in &batches[6..] {
            last = Some(b.step(batch, None, 100).unwrap());
        }
        assert_eq!(a.state().unwrap(), b.state().unwrap(), "{arch:?}: resumed run differs");
        assert_eq!(last.unwrap().step, 11);
        // Same seed, fresh run: identical too.
        let mut c = Trainer::new(cfg, 32, 32, &batches[0], None).unwrap();
        for batch in &batches {
            c.step(batch, None, 100).unwrap();
        }
        assert_eq!(a.state().unwrap(), c.state().unwrap());
    }
}

#[test]
fn a_trainer_behind_a_boxed_backend_steps_the_same() {
    // The step is written once over the training seam; moving the tensors
    // behind another backend type mid-run changes nothing.
    let mut data = Planted::new(16, 32, 5);
    let batches: Vec<Vec<f32>> = (0..8).map(|_| data.batch(64, 2)).collect();
    let cfg = TrainConfig {
        arch: TrainArch::TopK { k: 3 },
        d_sae: 40,
        lr: 1e-2,
        dead_after_tokens: 64,
        max_grad_norm: Some(0.1),
        seed: 9,
        ..Default::default()
    };
    let mut plain = Trainer::new(cfg.clone(), 16, 16, &batches[0], None).unwrap();
    let mut moved = Trainer::new(cfg, 16, 16, &batches[0], None).unwrap();
    for b in &batches[..4] {
        plain.step(b, None, 64).unwrap();
        moved.step(b, None, 64).unwrap();
    }
    let mut moved = moved.boxed();
    assert_eq!(moved.device(), "cpu");
    for b in &batches[4..] {
        assert_eq!(plain.step(b, None, 64).unwrap(), moved.step(b, None, 64).unwrap());
    }
    assert_eq!(plain.state().unwrap(), moved.state().unwrap());
    let (a, b) = (plain.to_coder().unwrap(), moved.to_coder().unwrap());
    assert_eq!((a.w_enc, a.w_dec, a.log_sparsity), (b.w_enc, b.w_dec, b.log_sparsity));
}

#[test]
fn different_seeds_give_different_inits() {
    let x = Planted::new(32, 64, 1).batch(64, 3);
    let cfg = TrainConfig { arch: TrainArch::TopK { k: 4 }, d_sae: 64, ..Default::default() };
    let a = Trainer::new(cfg.clone(), 32, 32, &x, None).unwrap();
    let b = Trainer::new(TrainConfig { seed: 1, ..cfg }, 32, 32, &x, None).unwrap();
    assert_ne!(a.params().dec, b.params().dec);
}

#[test]
fn non_finite_loss_names_the_step() {
    let mut data = Planted::new(32, 64, 2);
    let init = data.batch(64, 3);
    let cfg = TrainConfig { arch: TrainArch::TopK { k: 4 }, d_sae: 64, ..Default::default() };
    let mut t = Trainer::new(cfg, 32, 32, &init, None).unwrap();
    t.step(&data.batch(32, 3), None, 32).unwrap();
    t.step(&data.batch(32, 3), None, 32).unwrap();
    let mut bad = data.batch(32, 3);
    bad[5] = f32::NAN;
    let before = t.state().unwrap();
    let err = t.step(&bad, None, 32).unwrap_err();
    assert!(matches!(err, SaeError::NonFinite { step: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("step 2"), "{err}");
    assert_eq!(t.state().unwrap(), before, "a failed step must not change the trainer");
}

#[test]
fn dimension_mismatch_is_a_clear_error() {
    let mut data = Planted::new(32, 64, 2);
    let init = data.batch(64, 3);
    let cfg = TrainConfig { arch: TrainArch::TopK { k: 4 }, d_sae: 64, ..Default::default() };
    let mut t = Trainer::new(cfg.clone(), 32, 32, &init, None).unwrap();
    let err = t.step(&vec![0.1; 31 * 8], None, 8).unwrap_err();
    assert!(err.to_string().contains("d_in = 32") && err.to_string().contains("248"), "{err}");
    let err = Trainer::new(cfg.clone(), 32, 32, &[0.0; 33], None).err().unwrap();
    assert!(err.to_string().contains("d_in = 32"), "{err}");
    // Transcoders need targets of d_out.
    let cfg = TrainConfig { transcoder: true, ..cfg };
    let y = vec![0.0; 64 * 16];
    let mut t = Trainer::new(cfg, 32, 16, &init, Some(&y)).unwrap();
    let err = t.step(&init, None, 64).unwrap_err();
    assert!(err.to_string().contains("needs targets"), "{err}");
    let err = t.step(&init, Some(&y[..64 * 15]), 64).unwrap_err();
    assert!(err.to_string().contains("d_out = 16"), "{err}");
}

#[test]
fn saved_coder_reproduces_training_forward() {
    // With activation scaling on, the folded coder on raw inputs must give
    // the trainer's reconstruction (unscaled).
    let mut data = Planted::new(32, 64, 3);
    let init: Vec<f32> = data.batch(256, 3).iter().map(|v| v * 7.0).collect();
    for arch in
        [TrainArch::TopK { k: 4 }, TrainArch::Standard { l1_coefficient: 0.1, l1_warmup_steps: 0 }, jumprelu(0.02, 10)]
    {
        let cfg = TrainConfig { arch, d_sae: 64, lr: 3e-3, normalize_activations: true, seed: 5, ..Default::default() };
        let mut t = Trainer::new(cfg, 32, 32, &init, None).unwrap();
        for _ in 0..50 {
            let x: Vec<f32> = data.batch(128, 3).iter().map(|v| v * 7.0).collect();
            t.step(&x, None, 128).unwrap();
        }
        let x: Vec<f32> = data.batch(64, 3).iter().map(|v| v * 7.0).collect();
        let (parts, _) = t.loss_and_grads(&x, None, 64).unwrap();
        let coder = t.to_coder().unwrap();
        let (acts, out) = coder.forward(&x, 64).unwrap();
        let mse_raw: f64 = out.iter().zip(&x).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / 64.0;
        let s = (32f64).sqrt() / {
            let rows: Vec<f64> =
                init.chunks(32).map(|r| r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt()).collect();
            rows.iter().sum::<f64>() / rows.len() as f64
        };
        let mse_scaled = mse_raw * s * s;
        assert!((mse_scaled - parts.mse).abs() < 1e-3 * parts.mse.max(1e-3), "{mse_scaled} vs {}", parts.mse);
        assert!((acts.mean_l0() - parts.l0).abs() < 1e-9);
        // And it survives a SAELens-format round trip.
        let tmp = tempfile::tempdir().unwrap();
        write_saelens(&coder, tmp.path()).unwrap();
        let back = load_coder(tmp.path()).unwrap();
        assert_eq!(back.forward(&x, 64).unwrap().1, out);
        assert_eq!(back.log_sparsity.as_ref().map(Vec::len), Some(64));
    }
}

#[test]
fn skip_transcoder_learns_a_linear_map_plus_sparse_part() {
    // y = A x + Σ sparse planted features in output space.
    let mut data = Planted::new(24, 48, 6);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (d_in, d_out) = (24, 20);
    let a: Vec<f32> = (0..d_out * d_in).map(|_| normal(&mut rng) * 0.2).collect();
    let out_feats: Vec<f32> = (0..48 * d_out).map(|_| normal(&mut rng) * 0.3).collect();
    let mut make = |n: usize| {
        let x = data.batch(n, 3);
        let mut y = vec![0f32; n * d_out];
        for r in 0..n {
            let xr = &x[r * d_in..(r + 1) * d_in];
            for o in 0..d_out {
                y[r * d_out + o] = (0..d_in).map(|i| a[o * d_in + i] * xr[i]).sum::<f32>();
            }
            // Sparse part: features whose input direction is most present.
            for f in 0..48 {
                let c: f32 = xr.iter().zip(&data.features[f * d_in..(f + 1) * d_in]).map(|(p, q)| p * q).sum();
                if c > 0.6 {
                    for o in 0..d_out {
                        y[r * d_out + o] += c * out_feats[f * d_out + o];
                    }
                }
            }
        }
        (x, y)
    };
    let (ix, iy) = make(256);
    let cfg = TrainConfig {
        arch: TrainArch::TopK { k: 4 },
        d_sae: 96,
        transcoder: true,
        skip_connection: true,
        lr: 3e-3,
        seed: 7,
        ..Default::default()
    };
    let mut t = Trainer::new(cfg, d_in, d_out, &ix, Some(&iy)).unwrap();
    let mut first = None;
    let mut last = None;
    for _ in 0..400 {
        let (x, y) = make(128);
        let s = t.step(&x, Some(&y), 128).unwrap();
        first.get_or_insert(s.explained_variance);
        last = Some(s.explained_variance);
    }
    let (first, last) = (first.unwrap(), last.unwrap());
    assert!(last > 0.8 && last > first + 0.5, "explained variance {first} -> {last}");
    let coder = t.to_coder().unwrap();
    assert_eq!(coder.architecture_name(), "topk_skip_transcoder");
    let (x, y) = make(64);
    let out = coder.forward(&x, 64).unwrap().1;
    let se: f32 = out.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum();
    let var: f32 = y.iter().map(|v| v * v).sum();
    assert!(se / var < 0.2, "coder relative error {}", se / var);
}
