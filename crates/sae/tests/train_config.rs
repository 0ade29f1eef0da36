//! Training configuration through the public API: JumpReLU validation and
//! defaults, and the learning-rate schedule.

use saepipe_sae::train::JumpReluSparsityLoss;
use saepipe_sae::{LrDecay, TrainArch, TrainConfig, Trainer};

/// JumpReLU with SAELens's defaults except the given changes.
fn jr(
    l0_coefficient: f32,
    bandwidth: f32,
    mode: JumpReluSparsityLoss,
    pre_act: Option<f32>,
    ste_to_input: bool,
) -> TrainArch {
    let TrainArch::JumpRelu { l0_warmup_steps, initial_threshold, tanh_scale, .. } =
        TrainArch::jumprelu(l0_coefficient)
    else {
        unreachable!()
    };
    TrainArch::JumpRelu {
        l0_coefficient,
        l0_warmup_steps,
        bandwidth,
        initial_threshold,
        sparsity_loss_mode: mode,
        tanh_scale,
        target_l0: (mode == JumpReluSparsityLoss::Quadratic).then_some(2.0),
        pre_act_loss_coefficient: pre_act,
        ste_to_input,
    }
}

#[test]
fn jumprelu_config_is_validated() {
    let base = TrainConfig { d_sae: 8, ..Default::default() };
    let x = vec![0.5f32; 8];
    let err = |arch: TrainArch| {
        Trainer::new(TrainConfig { arch, ..base.clone() }, 4, 4, &x, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    use JumpReluSparsityLoss::*;
    assert!(err(jr(1.0, 0.0, Step, None, false)).contains("bandwidth"));
    assert!(err(jr(-1.0, 0.05, Step, None, false)).contains("l0_coefficient"));
    assert!(err(jr(1.0, 0.05, Step, Some(f32::NAN), false)).contains("pre_act_loss_coefficient"));
    let mut q = jr(1.0, 0.05, Quadratic, None, false);
    if let TrainArch::JumpRelu { target_l0, .. } = &mut q {
        *target_l0 = None;
    }
    assert!(err(q.clone()).contains("needs target_l0"));
    if let TrainArch::JumpRelu { target_l0, .. } = &mut q {
        *target_l0 = Some(9.0);
    }
    assert!(err(q).contains("target_l0 = 9"));
    let mut it = TrainArch::jumprelu(1.0);
    if let TrainArch::JumpRelu { initial_threshold, .. } = &mut it {
        *initial_threshold = -0.1;
    }
    assert!(err(it).contains("initial_threshold"));
    assert_eq!(err(TrainArch::jumprelu(1.0)), "");
}

#[test]
fn jumprelu_config_defaults_deserialise() {
    let a: TrainArch = serde_json::from_str(r#"{"kind": "jump_relu", "l0_coefficient": 1.0}"#).unwrap();
    assert_eq!(a, TrainArch::jumprelu(1.0));
    let back: TrainArch = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back, a);
    // Configs written before JumpReLU existed still read.
    let old: TrainConfig =
        serde_json::from_str(r#"{"arch": {"kind": "standard", "l1_coefficient": 5.0}, "d_sae": 16}"#).unwrap();
    assert!(matches!(old.arch, TrainArch::Standard { .. }));
}

#[test]
fn lr_schedule_warmup_and_decay() {
    let mut x = vec![0.5f32; 8];
    x[0] = 1.0;
    let cfg = TrainConfig {
        arch: TrainArch::TopK { k: 2 },
        d_sae: 4,
        lr: 1.0,
        lr_warmup_steps: 4,
        lr_decay: LrDecay::Linear,
        lr_decay_steps: Some(10),
        total_steps: 20,
        lr_end_factor: 0.1,
        ..Default::default()
    };
    let t = Trainer::new(cfg.clone(), 4, 4, &x, None).unwrap();
    assert_eq!(t.lr_at(0), 0.25);
    assert_eq!(t.lr_at(3), 1.0);
    assert_eq!(t.lr_at(9), 1.0);
    assert!((t.lr_at(15) - 0.55).abs() < 1e-6);
    assert!((t.lr_at(25) - 0.1).abs() < 1e-6);
    let t =
        Trainer::new(TrainConfig { lr_decay: LrDecay::Cosine, lr_decay_steps: None, ..cfg }, 4, 4, &x, None).unwrap();
    // Cosine from the end of warm-up (step 4) to step 20: halfway at 12.
    assert!((t.lr_at(12) - 0.55).abs() < 1e-6);
    assert!(t.lr_at(5) > t.lr_at(12) && t.lr_at(12) > t.lr_at(19));
}
