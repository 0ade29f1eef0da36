//! Interop with SAELens and sparsify: fixtures written by
//! `scripts/fixtures/sae_saelens.py` (the reference implementations) are
//! loaded and must match within 1e-5; saepipe-written directories are checked
//! by the same script in the other direction.

use std::path::{Path, PathBuf};

use saepipe_sae::st::{Out, StFile};
use saepipe_sae::{Activation, Normalization, SaeError, SparseCoder, load_coder, write_saelens};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sae_saelens")
}

struct Io {
    x: Vec<f32>,
    acts: Vec<f32>,
    out: Vec<f32>,
    n: usize,
}

fn read_io(dir: &Path, d_in: usize) -> Io {
    let f = StFile::open(&dir.join("io.safetensors")).unwrap();
    let x = f.f32("x", None).unwrap();
    let n = x.len() / d_in;
    Io { acts: f.f32("acts", None).unwrap(), out: f.f32("out", None).unwrap(), x, n }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check_case(case: &str) -> SparseCoder {
    let dir = fixtures().join(case);
    let coder = load_coder(&dir.join("sae")).unwrap_or_else(|e| panic!("{case}: {e}"));
    let io = read_io(&dir, coder.d_in);
    let acts = coder.encode(&io.x, io.n).unwrap();
    let dense = acts.to_dense();
    let da = max_abs_diff(&dense, &io.acts);
    assert!(da < 1e-5, "{case}: activations differ from SAELens by {da}");
    // Same support, not just close values.
    let support_mismatch = dense.iter().zip(&io.acts).filter(|(a, b)| (**a > 0.0) != (**b > 0.0)).count();
    assert_eq!(support_mismatch, 0, "{case}: active sets differ");
    let out = coder.decode(&acts, Some(&io.x)).unwrap();
    let d_out = max_abs_diff(&out, &io.out);
    assert!(d_out < 1e-5, "{case}: outputs differ from SAELens by {d_out}");
    let (_, fwd) = coder.forward(&io.x, io.n).unwrap();
    assert_eq!(fwd, out);
    coder
}

#[test]
fn standard_variants_match_saelens() {
    let c = check_case("standard");
    assert_eq!(c.activation, Activation::Relu);
    assert!(c.apply_b_dec_to_input);
    assert_eq!(c.metadata.hook_name.as_deref(), Some("blocks.3.hook_resid_pre"));
    assert_eq!(c.metadata.model_name.as_deref(), Some("pythia-70m-deduped"));
    assert_eq!(c.metadata.context_size, Some(128));
    assert_eq!(c.metadata.prepend_bos, Some(true));
    assert_eq!(c.metadata.dataset_path.as_deref(), Some("NeelNanda/pile-10k"));
    assert_eq!(c.metadata.model_from_pretrained_kwargs, Some(serde_json::json!({"center_writing_weights": false})));
    assert!(!check_case("standard_no_bdec_in").apply_b_dec_to_input);
    assert_eq!(check_case("standard_cnr").normalize, Normalization::ConstantNormRescale);
    assert_eq!(check_case("standard_ln").normalize, Normalization::LayerNorm);
}

#[test]
fn topk_jumprelu_gated_batchtopk_match_saelens() {
    assert_eq!(check_case("topk").activation, Activation::TopK { k: 8 });
    let r = check_case("topk_rescale");
    // rescale_acts_by_decoder_norm is folded: unit-norm decoder rows.
    assert!(r.decoder_norms().iter().all(|n| (n - 1.0).abs() < 1e-5));
    assert!(matches!(check_case("jumprelu").activation, Activation::JumpRelu { .. }));
    assert!(matches!(check_case("gated").activation, Activation::Gated { .. }));
    let b = check_case("batchtopk");
    match &b.activation {
        Activation::JumpRelu { threshold } => assert!(threshold.windows(2).all(|w| w[0] == w[1])),
        other => panic!("batchtopk should load as jumprelu, got {other:?}"),
    }
}

#[test]
fn transcoders_match_saelens() {
    for case in ["transcoder", "skip_transcoder", "jumprelu_transcoder"] {
        let c = check_case(case);
        assert!(c.is_transcoder());
        assert_eq!((c.d_in, c.d_out), (32, 48));
        assert_eq!(c.metadata.hook_name_out.as_deref(), Some("blocks.3.hook_mlp_out"));
        assert_eq!(c.architecture_name(), case);
    }
    assert!(check_case("skip_transcoder").w_skip.is_some());
}

#[test]
fn pre6_flat_config_matches_saelens() {
    let c = check_case("pre6_standard");
    assert_eq!(c.metadata.hook_name.as_deref(), Some("blocks.8.hook_resid_pre"));
    assert_eq!(c.metadata.model_name.as_deref(), Some("gpt2-small"));
    assert_eq!(c.metadata.extra.get("hook_point_layer"), Some(&serde_json::json!(8)));
    assert_eq!(c.normalize, Normalization::None);
    assert_eq!(c.log_sparsity.as_ref().map(Vec::len), Some(128));
}

#[test]
fn sparsify_layout_matches_reference_forward() {
    let c = check_case("sparsify_topk");
    assert_eq!(c.activation, Activation::TopK { k: 8 });
    assert_eq!(c.metadata.extra.get("sparsify_hookpoint"), Some(&serde_json::json!("sae")));
}

#[test]
fn saelens_round_trip_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["standard_ln", "topk", "gated", "skip_transcoder", "batchtopk", "pre6_standard", "sparsify_topk"] {
        let c = load_coder(&fixtures().join(case).join("sae")).unwrap();
        let d = tmp.path().join(case);
        write_saelens(&c, &d).unwrap();
        let back = load_coder(&d).unwrap();
        assert_eq!(back.w_enc, c.w_enc, "{case}");
        assert_eq!(back.w_dec, c.w_dec, "{case}");
        assert_eq!(back.activation, c.activation, "{case}");
        assert_eq!(back.metadata.hook_name, c.metadata.hook_name, "{case}");
        assert_eq!(back.log_sparsity, c.log_sparsity, "{case}");
        assert_eq!(back.normalize, c.normalize, "{case}");
    }
}

#[test]
fn input_dimension_mismatch_is_a_clear_error() {
    let c = load_coder(&fixtures().join("topk/sae")).unwrap();
    let err = c.encode(&vec![0.0; 31 * 4], 4).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SaeError::InputShape { .. }));
    assert!(msg.contains("d_in = 32") && msg.contains("124"), "{msg}");
    let acts = c.encode(&vec![0.5; 32 * 2], 2).unwrap();
    let msg = c.decode(&acts, Some(&[0.0; 30])).unwrap_err().to_string();
    assert!(msg.contains("d_in = 32"), "{msg}");
}

#[test]
fn unknown_formats_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("weights.npz"), b"x").unwrap();
    let msg = load_coder(tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("unsupported format") && msg.contains("weights.npz"), "{msg}");
    let pt = tmp.path().join("tc.pt");
    std::fs::write(&pt, b"x").unwrap();
    let msg = load_coder(&pt).unwrap_err().to_string();
    assert!(msg.contains("unsupported format") && msg.contains("torch pickle"), "{msg}");
    // A sparsify multi-hookpoint checkout points at its subdirectories.
    let sub = tmp.path().join("multi/layers.3");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("cfg.json"), "{}").unwrap();
    let msg = load_coder(&tmp.path().join("multi")).unwrap_err().to_string();
    assert!(msg.contains("layers.3"), "{msg}");
    // Unknown SAELens architecture.
    let d = tmp.path().join("mp");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("cfg.json"),
        r#"{"architecture":"matching_pursuit","d_in":4,"d_sae":8,"metadata":{"sae_lens_version":"6.5.0"}}"#,
    )
    .unwrap();
    std::fs::write(d.join("sae_weights.safetensors"), b"").unwrap();
    let msg = load_coder(&d).unwrap_err().to_string();
    assert!(msg.contains("matching_pursuit"), "{msg}");
}

#[test]
fn wrong_tensor_shape_names_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("standard/sae");
    let d = tmp.path().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(src.join("cfg.json"), d.join("cfg.json")).unwrap();
    let f = StFile::open(&src.join("sae_weights.safetensors")).unwrap();
    let mut t = Vec::new();
    for name in f.names() {
        let v = f.f32(&name, None).unwrap();
        let shape = if name == "W_dec" { vec![64, 64] } else { f.shape(&name).unwrap() };
        t.push((name, Out::F32(shape, v)));
    }
    saepipe_sae::st::write(&d.join("sae_weights.safetensors"), t, None).unwrap();
    let msg = load_coder(&d).unwrap_err().to_string();
    assert!(msg.contains("W_dec") && msg.contains("sae_weights.safetensors") && msg.contains("[128, 32]"), "{msg}");
}

/// saepipe-written SAELens directories, checked by
/// `scripts/fixtures/sae_saelens.py --check` with SAELens itself.
/// `SAEPIPE_WRITE_FIXTURES=1` rewrites them; otherwise the committed ones must
/// still be what this code writes and computes.
#[test]
fn saepipe_written_fixtures_are_current() {
    let base = fixtures().join("from_saepipe");
    let mut coders: Vec<(&str, SparseCoder)> = Vec::new();
    for case in ["standard_ln", "topk_rescale", "gated", "skip_transcoder", "jumprelu_transcoder"] {
        coders.push((case, load_coder(&fixtures().join(case).join("sae")).unwrap()));
    }
    let n_loaded = coders.len();
    coders.extend(common::trained_coders());
    let write = std::env::var("SAEPIPE_WRITE_FIXTURES").is_ok_and(|v| v == "1");
    for (ci, (case, coder)) in coders.into_iter().enumerate() {
        let dir = base.join(case);
        let x: Vec<f32> = (0..16 * coder.d_in).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 1.5).collect();
        let (acts, out) = coder.forward(&x, 16).unwrap();
        if write {
            write_saelens(&coder, &dir.join("sae")).unwrap();
            saepipe_sae::st::write(
                &dir.join("io.safetensors"),
                vec![
                    ("x".into(), Out::F32(vec![16, coder.d_in], x.clone())),
                    ("acts".into(), Out::F32(vec![16, coder.d_sae], acts.to_dense())),
                    ("out".into(), Out::F32(vec![16, coder.d_out], out.clone())),
                ],
                None,
            )
            .unwrap();
        }
        let back = load_coder(&dir.join("sae"))
            .unwrap_or_else(|e| panic!("{case}: {e} (run with SAEPIPE_WRITE_FIXTURES=1 to create)"));
        let io = read_io(&dir, coder.d_in);
        assert_eq!(io.x, x, "{case}");
        let (acts2, out2) = back.forward(&x, 16).unwrap();
        assert_eq!(acts2.to_dense(), io.acts, "{case}");
        assert_eq!(out2, io.out, "{case}");
        if ci < n_loaded {
            assert_eq!(out2, out, "{case}");
        } else {
            // Freshly trained on this machine: SIMD kernels may round differently.
            let d = max_abs_diff(&out2, &out);
            assert!(d < 1e-3, "{case}: retrained coder differs from the committed one by {d}");
        }
    }
}

mod common {
    use saepipe_sae::SparseCoder;

    use saepipe_sae::{TrainArch, TrainConfig, Trainer};

    /// Coders produced by the saepipe trainer (added to the interop set):
    /// a few steps on deterministic pseudo-random activations.
    pub fn trained_coders() -> Vec<(&'static str, SparseCoder)> {
        let (d_in, n) = (32usize, 128usize);
        let data = |step: usize, d: usize| -> Vec<f32> {
            (0..n * d)
                .map(|i| {
                    let h = (i as u64 + 7919 * step as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 40;
                    (h as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
                })
                .collect()
        };
        let mut out = Vec::new();
        let cases: Vec<(&'static str, TrainConfig, usize)> = vec![
            (
                "trained_topk",
                TrainConfig { arch: TrainArch::TopK { k: 6 }, d_sae: 64, lr: 1e-2, ..Default::default() },
                d_in,
            ),
            (
                "trained_standard",
                TrainConfig {
                    arch: TrainArch::Standard { l1_coefficient: 0.05, l1_warmup_steps: 5 },
                    d_sae: 64,
                    lr: 1e-2,
                    normalize_activations: true,
                    ..Default::default()
                },
                d_in,
            ),
            (
                "trained_batchtopk",
                TrainConfig {
                    arch: TrainArch::BatchTopK { k: 6, threshold_lr: 0.1 },
                    d_sae: 64,
                    lr: 1e-2,
                    ..Default::default()
                },
                d_in,
            ),
            (
                "trained_transcoder",
                TrainConfig {
                    arch: TrainArch::Standard { l1_coefficient: 0.05, l1_warmup_steps: 0 },
                    d_sae: 64,
                    lr: 1e-2,
                    transcoder: true,
                    ..Default::default()
                },
                24,
            ),
        ];
        for (name, cfg, d_out) in cases {
            let transcoder = cfg.transcoder;
            let y0 = data(1000, d_out);
            let mut t = Trainer::new(cfg, d_in, d_out, &data(0, d_in), transcoder.then_some(&y0[..])).unwrap();
            for step in 1..20 {
                let x = data(step, d_in);
                let y = data(step + 500, d_out);
                t.step(&x, transcoder.then_some(&y[..]), n).unwrap();
            }
            let mut c = t.to_coder().unwrap();
            c.metadata.model_name = Some("toy".into());
            c.metadata.hook_name = Some("blocks.0.hook_resid_pre".into());
            if transcoder {
                c.metadata.hook_name = Some("blocks.0.ln2.hook_normalized".into());
                c.metadata.hook_name_out = Some("blocks.0.hook_mlp_out".into());
            }
            out.push((name, c));
        }
        out
    }
}
