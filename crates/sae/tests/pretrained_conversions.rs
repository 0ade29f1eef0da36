//! Pretrained coders of SAELens's registry, in each conversion's on-disk layout
//! (fixtures by scripts/fixtures/sae_conversions.py, loaded there by SAELens's own
//! `SAE.from_pretrained` path): saepipe resolves each fixture release through the
//! fixture registry, loads the repository files, and encodes/decodes within 1e-5
//! of SAELens, with SAELens's hooks, model, normalisation and Neuronpedia id in
//! the metadata. Also: the built-in registry (SAELens 6.54.12) and its errors.

use saepipe_sae::st::StFile;
use saepipe_sae::{Conversion, Normalization, Registry};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/saelens_conversions")
}

/// Every file under `dir`, `/`-separated relative paths (a repository listing).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f32::max)
}

#[test]
fn every_conversion_matches_saelens() {
    let registry = Registry::load(&fixtures().join("registry.json")).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut cases: Vec<PathBuf> =
        std::fs::read_dir(fixtures().join("cases")).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 14, "{cases:?}");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let exp: Value = serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap()).unwrap();
        let s = |k: &str| exp.get(k).and_then(Value::as_str).map(str::to_string);
        let sae = registry.lookup(&s("release").unwrap(), &s("sae_id").unwrap()).unwrap();
        seen.insert(sae.conversion);
        let repo = fixtures().join("repos").join(&sae.repo_id);

        // The files a download would fetch exist in the repository, and suffice.
        let files = sae.select(&listing(&repo)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!files.is_empty() && files.iter().all(|f| repo.join(f).is_file()), "{name}: {files:?}");
        let t = tempfile::tempdir().unwrap();
        for f in &files {
            let dst = t.path().join(f);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(repo.join(f), dst).unwrap();
        }
        assert!(sae.complete_in(t.path()), "{name}");
        let coder = sae.load(t.path()).unwrap_or_else(|e| panic!("{name}: {e}"));

        // Outputs.
        let io = StFile::open(&case.join("io.safetensors")).unwrap();
        let x = io.f32("x", None).unwrap();
        let n = x.len() / coder.d_in;
        let acts = coder.encode_dense(&x, n).unwrap();
        let (_, out) = coder.forward(&x, n).unwrap();
        let (e_acts, e_out) =
            (max_err(&acts, &io.f32("acts", None).unwrap()), max_err(&out, &io.f32("out", None).unwrap()));
        assert!(e_acts < 1e-5 && e_out < 1e-5, "{name}: acts {e_acts:e}, out {e_out:e}");

        // Shape and semantics as SAELens's cfg says.
        let u = |k: &str| exp.get(k).and_then(Value::as_u64).map(|v| v as usize);
        assert_eq!(Some(coder.d_in), u("d_in"), "{name}");
        assert_eq!(Some(coder.d_sae), u("d_sae"), "{name}");
        assert_eq!(coder.d_out, u("d_out").unwrap_or(coder.d_in), "{name}");
        assert_eq!(coder.apply_b_dec_to_input, exp["apply_b_dec_to_input"].as_bool().unwrap(), "{name}");
        assert_eq!(coder.normalize.as_str(), s("normalize_activations").unwrap(), "{name}");
        let arch = s("architecture").unwrap();
        assert_eq!(coder.architecture_name(), arch, "{name}");
        if let Some(k) = u("k") {
            assert!(matches!(coder.activation, saepipe_sae::Activation::TopK { k: kk } if kk == k), "{name}");
        }

        // Metadata: hooks, model, Neuronpedia id and provenance.
        let m = &coder.metadata;
        assert_eq!(m.hook_name, s("hook_name"), "{name}");
        assert_eq!(m.hook_name_out, s("hook_name_out"), "{name}");
        assert_eq!(m.model_name, s("model_name"), "{name}");
        assert_eq!(m.context_size, exp.get("context_size").and_then(Value::as_u64), "{name}");
        assert_eq!(m.dataset_path, s("dataset_path"), "{name}");
        assert_eq!(m.model_from_pretrained_kwargs, exp.get("model_from_pretrained_kwargs").cloned(), "{name}");
        let extra = |k: &str| m.extra.get(k).and_then(Value::as_str).map(str::to_string);
        assert_eq!(extra("neuronpedia_id"), s("neuronpedia_id"), "{name}");
        assert_eq!(extra("hf_hook_name"), s("hf_hook_name"), "{name}");
        assert_eq!(extra("saelens_release"), s("release"), "{name}");
        assert_eq!(extra("saelens_conversion").as_deref(), Some(sae.conversion.name()), "{name}");
        assert_eq!(extra("hf_repo_id"), Some(sae.repo_id.clone()), "{name}");
        assert_eq!(coder.log_sparsity.is_some(), exp["has_sparsity"].as_bool().unwrap(), "{name}");
        if sae.norm_scaling_factor.is_some() {
            assert_eq!(coder.normalize, Normalization::None);
            assert_eq!(m.extra.get("norm_scaling_factor").and_then(Value::as_f64), sae.norm_scaling_factor);
        }
    }
    let all = [
        Conversion::SaeLens,
        Conversion::Gemma2,
        Conversion::Gemma3,
        Conversion::LlamaScope,
        Conversion::QwenScope,
        Conversion::DictionaryLearning1,
        Conversion::MwhannaTranscoder,
    ];
    assert!(all.iter().all(|c| seen.contains(c)), "untested conversions: {seen:?}");
}

#[test]
fn missing_files_are_named() {
    let registry = Registry::load(&fixtures().join("registry.json")).unwrap();
    let sae = registry.lookup("fixture-llama_scope_lxr_8x", "l3r_8x").unwrap();
    let e = sae.select(&["Llama3_1-8B-Base-L3R-8x/hyperparams.json".to_string()]).unwrap_err();
    assert!(e.contains("llama_scope") && e.contains("Llama3_1-8B-Base-L3R-8x/checkpoints/final.safetensors"), "{e}");
    let t = tempfile::tempdir().unwrap();
    assert!(!sae.complete_in(t.path()));
    let e = sae.load(t.path()).unwrap_err().to_string();
    assert!(e.contains("hyperparams.json"), "{e}");

    // A tensor of the wrong shape is named with both shapes.
    let sae = registry.lookup("fixture-qwen3-0.6b-transcoders-lowl0", "layer_7").unwrap();
    let repo = fixtures().join("repos").join(&sae.repo_id);
    for f in ["wandb-config.yaml", "config.yaml"] {
        std::fs::copy(repo.join(f), t.path().join(f)).unwrap();
    }
    let w = |n: usize| saepipe_sae::st::Out::F32(vec![n], vec![0.0; n]);
    saepipe_sae::st::write(
        &t.path().join("layer_7.safetensors"),
        vec![
            ("W_enc".into(), saepipe_sae::st::Out::F32(vec![32, 16], vec![0.0; 512])),
            ("W_dec".into(), saepipe_sae::st::Out::F32(vec![32, 16], vec![0.0; 512])),
            ("b_enc".into(), w(31)),
            ("b_dec".into(), w(16)),
        ],
        None,
    )
    .unwrap();
    let e = sae.load(t.path()).unwrap_err().to_string();
    assert!(e.contains("`b_enc` has shape [31], expected [32]"), "{e}");
}

#[test]
fn builtin_registry_resolves_names_and_explains_mistakes() {
    let r = Registry::builtin();
    assert_eq!(r.sae_lens_version, "6.54.12");
    assert_eq!(r.release_names().count(), 170);

    let g = r.lookup("gemma-scope-2b-pt-res-canonical", "layer_20/width_16k/canonical").unwrap();
    assert_eq!(g.repo_id, "google/gemma-scope-2b-pt-res");
    assert_eq!(g.revision, "main");
    assert_eq!(g.conversion, Conversion::Gemma2);
    assert!(g.path.starts_with("layer_20/width_16k/average_l0_"), "{}", g.path);
    assert_eq!(g.neuronpedia_id.as_deref(), Some("gemma-2-2b/20-gemmascope-res-16k"));
    assert_eq!(g.files().required, vec![vec![format!("{}/params.npz", g.path)]]);

    let j = r.lookup("gpt2-small-res-jb", "blocks.8.hook_resid_pre").unwrap();
    assert_eq!(
        (j.repo_id.as_str(), j.path.as_str()),
        ("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre")
    );
    assert_eq!(j.conversion, Conversion::SaeLens);
    assert_eq!(j.config_overrides["model_from_pretrained_kwargs"]["center_writing_weights"], true);

    let l = r.lookup("llama_scope_lxr_8x", "l0r_8x").unwrap();
    assert_eq!(l.conversion, Conversion::LlamaScope);
    assert!(l.norm_scaling_factor.unwrap() > 1.0);

    let e = r.lookup("gemma-scope-2b-pt-res-canonicl", "x").unwrap_err().to_string();
    assert!(e.contains("not in the registry") && e.contains("did you mean `gemma-scope-2b-pt-res-canonical`"), "{e}");
    let e = r.lookup("gpt2-small-res-jb", "blocks.8.hook_resid_pr").unwrap_err().to_string();
    assert!(
        e.contains("has no SAE `blocks.8.hook_resid_pr`") && e.contains("did you mean `blocks.8.hook_resid_pre`"),
        "{e}"
    );
    let goodfire = r.release_names().find(|n| n.starts_with("goodfire")).unwrap();
    let id = r.release(goodfire).unwrap().sae_ids().next().unwrap().to_string();
    let e = r.lookup(goodfire, &id).unwrap_err().to_string();
    assert!(e.contains("`goodfire`") && e.contains("does not support") && e.contains("gemma_2, gemma_3"), "{e}");
}
