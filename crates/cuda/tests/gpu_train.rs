//! GPU training against the CPU trainer: one step (`saepipe_sae::Trainer`)
//! over the two backends of the training seam, `CpuTrain` and `GpuTrain`.
//! These need an NVIDIA GPU: without one each test prints SKIPPED (never a
//! silent pass); SAEPIPE_REQUIRE_GPU=1 makes a missing GPU a failure.

use saepipe_core::train::CoderKind;
use saepipe_cuda::GpuTrain;
use saepipe_sae::train::{TrainArch, TrainConfig, Trainer};

mod support;
use support::Rng;

fn train_cfg(d_sae: usize, k: usize) -> TrainConfig {
    TrainConfig {
        arch: TrainArch::TopK { k },
        d_sae,
        lr: 1e-3,
        dead_after_tokens: 128, // latents die quickly, so AuxK is exercised
        aux_k: Some(32),
        lr_warmup_steps: 2,
        max_grad_norm: Some(0.05), // small enough that clipping triggers
        seed: 7,
        ..TrainConfig::default()
    }
}

/// ‖a − b‖ / ‖b − init‖ over a tensor: GPU-vs-CPU difference relative to how far training moved it.
fn rel_to_update(a: &[f32], b: &[f32], init: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    let moved: f64 = b.iter().zip(init).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    diff / moved.max(1e-30)
}

#[test]
fn gpu_training_matches_cpu_trainer() {
    let Some(g) = support::gpu("gpu_training_matches_cpu_trainer") else { return };
    let (n, d, d_sae, k, steps) = (128, 64, 2048, 8, 6);
    let mut r = Rng(61);
    // Activations with a shared direction and a mean offset, like real residuals.
    let dir = r.vec(d, 1.0);
    let batch =
        |r: &mut Rng| -> Vec<f32> { (0..n * d).map(|i| r.next() + 0.3 * dir[i % d] * (1.0 + r.next())).collect() };
    let init = batch(&mut r);
    let mut cpu = Trainer::new(train_cfg(d_sae, k), d, d, &init, None).unwrap();
    let start = cpu.state().unwrap();
    // The same trainer (the same step code) over the GPU backend.
    let mut gpu_t = Trainer::restore(start.clone()).unwrap().move_to(|s, t| GpuTrain::new(g.clone(), s, t)).unwrap();
    assert_eq!(gpu_t.device(), "cuda:0");
    let mut saw_aux = false;
    for s in 0..steps {
        let x = batch(&mut r);
        let a = cpu.step(&x, None, n).unwrap();
        let b = gpu_t.step(&x, None, n).unwrap();
        eprintln!(
            "step {s}: cpu loss {:.6} mse {:.6} auxk {:.6} l0 {:.3} dead {:.3} gn {:.6} | gpu loss {:.6} mse {:.6} auxk {:.6} l0 {:.3} dead {:.3} gn {:.6}",
            a.loss,
            a.mse,
            a.auxk.unwrap(),
            a.l0,
            a.dead_fraction,
            a.grad_norm,
            b.loss,
            b.mse,
            b.auxk.unwrap(),
            b.l0,
            b.dead_fraction,
            b.grad_norm
        );
        let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-12);
        assert_eq!((a.step, a.lr, a.l1, a.l1_coefficient), (b.step, b.lr, b.l1, b.l1_coefficient));
        assert!(rel(b.loss, a.loss) < 1e-3 && rel(b.mse, a.mse) < 1e-3, "step {s} loss");
        assert!(rel(b.auxk.unwrap(), a.auxk.unwrap()) < 1e-2 || a.auxk.unwrap() < 1e-9, "step {s} auxk");
        assert!(rel(b.grad_norm, a.grad_norm) < 1e-2, "step {s} grad norm");
        assert!((b.l0 - a.l0).abs() <= 0.05 && (b.dead_fraction - a.dead_fraction).abs() <= 0.01, "step {s} l0/dead");
        assert!((b.explained_variance - a.explained_variance).abs() < 1e-3, "step {s} explained variance");
        saw_aux |= a.auxk.unwrap() > 0.0;
    }
    assert!(saw_aux, "the test must exercise AuxK");
    let (want, got) = (cpu.state().unwrap(), gpu_t.state().unwrap());
    assert_eq!((got.step, got.tokens_seen), (want.step, want.tokens_seen));
    for (name, a, b, i) in [
        ("enc", &got.params.enc, &want.params.enc, &start.params.enc),
        ("b_enc", &got.params.b_enc, &want.params.b_enc, &start.params.b_enc),
        ("dec", &got.params.dec, &want.params.dec, &start.params.dec),
        ("b_dec", &got.params.b_dec, &want.params.b_dec, &start.params.b_dec),
        ("adam_m.dec", &got.adam_m.dec, &want.adam_m.dec, &start.adam_m.dec),
        ("adam_v.enc", &got.adam_v.enc, &want.adam_v.enc, &start.adam_v.enc),
    ] {
        let e = rel_to_update(a, b, i);
        let max_abs = a.iter().zip(b.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        eprintln!("{name}: |gpu - cpu| / |cpu - start| = {e:.2e}, max abs diff {max_abs:.2e}");
        assert!(e < 1e-2, "{name}: GPU and CPU parameters differ by {e} of the update");
    }
    let fired_diff: usize = got.fire_counts.iter().zip(&want.fire_counts).map(|(a, b)| a.abs_diff(*b) as usize).sum();
    assert!(fired_diff <= (n * k * steps) / 100, "firing counts differ in {fired_diff} entries");
    // The GPU state is a CPU trainer state: it restores, continues and exports.
    let mut resumed = Trainer::restore(got.clone()).unwrap();
    resumed.step(&batch(&mut r), None, n).unwrap();
    assert_eq!(resumed.to_coder().unwrap().d_sae, d_sae);
    let again =
        Trainer::restore(got.clone()).unwrap().move_to(|s, t| GpuTrain::new(g.clone(), s, t)).unwrap().state().unwrap();
    assert_eq!(again, got, "state round trip through the GPU is exact");
}

#[test]
fn gpu_trainer_refuses_what_it_does_not_implement() {
    let Some(g) = support::gpu("gpu_trainer_refuses_what_it_does_not_implement") else { return };
    let mut r = Rng(67);
    let init = r.vec(64 * 32, 1.0);
    for arch in [
        TrainArch::BatchTopK { k: 4, threshold_lr: 0.01 },
        TrainArch::Standard { l1_coefficient: 1.0, l1_warmup_steps: 0 },
    ] {
        let cfg = TrainConfig { arch, d_sae: 128, ..TrainConfig::default() };
        let trainer = Trainer::new(cfg, 32, 32, &init, None).unwrap();
        let why = GpuTrain::supports(&trainer.setup()).expect_err("refused");
        assert!(why.contains("trains on the CPU"), "{why}");
        let err = trainer.move_to(|s, t| GpuTrain::new(g.clone(), s, t)).err().expect("refused").to_string();
        assert!(err.contains("not supported on the CUDA backend"), "{err}");
    }
}

#[test]
fn gpu_backend_says_what_it_trains() {
    // Runs without a GPU: the refusal is decided from the setup alone.
    let init: Vec<f32> = Rng(71).vec(16 * 8, 1.0);
    let setup = |arch: TrainArch, d_out: usize| {
        let y = (d_out != 8).then(|| vec![0.5f32; 16 * d_out]);
        let cfg = TrainConfig { arch, d_sae: 32, ..TrainConfig::default() };
        Trainer::new(cfg, 8, d_out, &init, y.as_deref()).unwrap().setup()
    };
    let topk = setup(TrainArch::TopK { k: 4 }, 8);
    assert_eq!(topk.kind, CoderKind::TopK { k: 4 });
    assert_eq!(GpuTrain::supports(&topk), Ok(4));
    let why = GpuTrain::supports(&setup(TrainArch::TopK { k: 4 }, 6)).unwrap_err();
    assert!(why.contains("transcoders"), "{why}");
    let why = GpuTrain::supports(&setup(TrainArch::BatchTopK { k: 4, threshold_lr: 0.01 }, 8)).unwrap_err();
    assert!(why.contains("BatchTopK") && why.contains("trains on the CPU"), "{why}");
}
