//! Transcoder-paper `.pt` files against outputs computed by torch with the
//! paper's forward pass (fixtures from scripts/fixtures/transcoder_pt.py).

use std::path::{Path, PathBuf};

use saepipe_sae::format::load_transcoder_pt;
use saepipe_sae::st::StFile;
use saepipe_sae::{Format, SaeError, detect_format, load_coder};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transcoder_pt").join(name)
}

fn io() -> StFile {
    StFile::open(&fixture("io.safetensors")).unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d <= 1e-5, "{what}[{i}]: {g} vs {w} (|diff| {d})");
        worst = worst.max(d);
    }
    worst
}

#[test]
fn transcoder_matches_torch() {
    let path = fixture("transcoder.pt");
    assert_eq!(detect_format(&path).unwrap(), Format::TranscoderPt);
    let c = load_coder(&path).unwrap();
    assert!(c.transcoder && c.is_transcoder() && !c.apply_b_dec_to_input);
    assert_eq!((c.d_in, c.d_sae, c.d_out), (32, 96, 32));
    assert_eq!(c.architecture_name(), "transcoder");
    assert_eq!(c.metadata.hook_name.as_deref(), Some("blocks.8.ln2.hook_normalized"));
    assert_eq!(c.metadata.hook_name_out.as_deref(), Some("blocks.8.hook_mlp_out"));
    assert_eq!(c.metadata.model_name.as_deref(), Some("gpt2-small"));
    assert_eq!(c.metadata.context_size, Some(128));
    let cfg = &c.metadata.extra["transcoder_pt_cfg"];
    assert_eq!(cfg["__class__"], "sae_training.config.LanguageModelSAERunnerConfig");
    assert_eq!(cfg["dtype"], "torch.float32");
    assert_eq!(cfg["device"], "cuda");
    assert_eq!(cfg["use_ghost_grads"], serde_json::json!([false]));
    assert_eq!(cfg["hook_point_layer"], 8);

    let io = io();
    let x = io.f32("x", Some(&[16, 32])).unwrap();
    let (acts, out) = c.forward(&x, 16).unwrap();
    let e_acts = assert_close(&acts.to_dense(), &io.f32("transcoder_acts", None).unwrap(), "acts");
    let e_out = assert_close(&out, &io.f32("transcoder_out", None).unwrap(), "out");
    let l0 = acts.mean_l0();
    assert!(l0 > 5.0 && l0 < 91.0, "the fixture should exercise the ReLU (L0 {l0})");
    eprintln!("transcoder: max |diff| acts {e_acts:.2e}, out {e_out:.2e}, L0 {l0:.1}");
}

#[test]
fn plain_sae_matches_torch() {
    let c = load_transcoder_pt(&fixture("sae.pt")).unwrap();
    assert!(!c.is_transcoder() && c.apply_b_dec_to_input);
    assert_eq!((c.d_in, c.d_sae, c.d_out), (32, 64, 32));
    assert_eq!(c.architecture_name(), "standard");
    assert_eq!(c.metadata.hook_name.as_deref(), Some("blocks.8.hook_resid_pre"));
    assert_eq!(c.metadata.hook_name_out, None);
    let io = io();
    let x = io.f32("x", Some(&[16, 32])).unwrap();
    let (acts, out) = c.forward(&x, 16).unwrap();
    let e_acts = assert_close(&acts.to_dense(), &io.f32("sae_acts", None).unwrap(), "acts");
    let e_out = assert_close(&out, &io.f32("sae_out", None).unwrap(), "out");
    eprintln!("sae: max |diff| acts {e_acts:.2e}, out {e_out:.2e}");
}

#[test]
fn a_loaded_transcoder_survives_a_saelens_round_trip() {
    let c = load_coder(&fixture("transcoder.pt")).unwrap();
    let t = tempfile::tempdir().unwrap();
    saepipe_sae::write_saelens(&c, t.path()).unwrap();
    let back = load_coder(t.path()).unwrap();
    let x = io().f32("x", None).unwrap();
    assert_eq!(c.forward(&x, 16).unwrap().1, back.forward(&x, 16).unwrap().1);
    assert_eq!(back.metadata.hook_name_out.as_deref(), Some("blocks.8.hook_mlp_out"));
}

#[test]
fn truncated_files_are_named() {
    let t = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("transcoder.pt")).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 30, 10] {
        let p = t.path().join("cut.pt");
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = load_coder(&p).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, SaeError::UnsupportedFormat { .. }), "{msg}");
        assert!(msg.contains("cut.pt") && msg.contains("not a readable torch.save zip archive"), "{msg}");
    }
}

#[test]
fn missing_and_mis_shaped_keys_are_named() {
    let p = fixture("bad_missing_b_dec_out.pt");
    let msg = load_coder(&p).unwrap_err().to_string();
    assert!(msg.contains("bad_missing_b_dec_out.pt") && msg.contains("tensor `b_dec_out` is missing"), "{msg}");

    let msg = load_coder(&fixture("bad_shape.pt")).unwrap_err().to_string();
    assert!(msg.contains("bad_shape.pt") && msg.contains("tensor `W_dec` has shape [5, 4], expected [6, 4]"), "{msg}");

    let msg = load_coder(&fixture("bad_no_cfg.pt")).unwrap_err().to_string();
    assert!(msg.contains("bad_no_cfg.pt") && msg.contains("field `cfg`: missing") && msg.contains("`W_enc`"), "{msg}");
}
