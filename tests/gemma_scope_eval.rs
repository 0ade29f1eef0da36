//! The tiny twin of pipelines/gemma_scope_eval.yaml: the pipeline file itself,
//! run with `--set` on a random 4-layer Gemma 2 and Gemma Scope SAEs in the
//! `gemma_2` on-disk layout (`params.npz`) served by a local imitation of the
//! Hugging Face hub, named through a registry as SAELens's names them. Every
//! coder is fetched, evaluated spliced into the model (CE loss score among the
//! metrics), and the report plots L0 against the spliced CE loss.

#[path = "../crates/model/tests/support/fake_hub.rs"]
mod fake_hub;

use fake_hub::{FakeHub, Fault, Repo};
use saepipe::ops::table::read_parquet;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = "google/gemma-scope-2b-pt-res";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Gemma 2 of the fixture SAEs' width (16), with four layers so that the
/// SAEs' layer 3 exists, alternating local and global attention.
fn tiny_gemma2(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["Gemma2ForCausalLM"],
        "attn_logit_softcapping": 50.0,
        "final_logit_softcapping": 30.0,
        "head_dim": 4,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 16,
        "intermediate_size": 32,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        "max_position_embeddings": 64,
        "model_type": "gemma2",
        "num_attention_heads": 4,
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "query_pre_attn_scalar": 4,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "sliding_window": 8,
        "tie_word_embeddings": true,
        "vocab_size": 50
    });
    saepipe_model::synth::write_random_hf_model(dir, &config, 11).unwrap();
}

/// `npz` (an uncompressed NumPy archive of little-endian f32 arrays) with
/// `threshold.npy` multiplied by `scale`.
fn scale_thresholds(npz: &[u8], scale: f32) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(npz)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name == "threshold.npy" {
            // NPY v1: magic (6), version (2), header length (u16 LE), header, data.
            let start = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert!(String::from_utf8_lossy(&bytes[10..start]).contains("'<f4'"));
            for v in bytes[start..].chunks_exact_mut(4) {
                let x = f32::from_le_bytes(v.try_into().unwrap()) * scale;
                v.copy_from_slice(&x.to_le_bytes());
            }
        }
        out.start_file(name, stored).unwrap();
        out.write_all(&bytes).unwrap();
    }
    out.finish().unwrap().into_inner()
}

#[test]
fn gemma_scope_eval_pipeline_runs_on_a_tiny_twin() {
    // Three SAE ids of one layer; the folder the fixture has is served under each.
    let npz = std::fs::read(
        repo_root()
            .join("crates/sae/tests/fixtures/saelens_conversions/repos/fixture/gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_5/params.npz"),
    )
    .unwrap();
    let ids = ["layer_3/width_16k/average_l0_5", "layer_3/width_16k/average_l0_9", "layer_3/width_32k/average_l0_5"];
    // Each a different sparsity (JumpReLU thresholds scaled), so the L0s differ.
    let files: BTreeMap<String, Vec<u8>> = ids
        .iter()
        .zip([1.0, 0.25, 4.0])
        .map(|(id, scale)| (format!("{id}/params.npz"), scale_thresholds(&npz, scale)))
        .collect();
    let hub = FakeHub::start(Repo { repo: REPO, sha: SHA, files, lfs: &[".npz"], fault: Fault::None });

    let t = tempfile::tempdir().unwrap();
    tiny_gemma2(&t.path().join("gemma"));
    let saes: Vec<String> = ids.iter().map(|id| format!("[\"{id}\", null, 5]")).collect();
    let registry = format!(
        r#"{{"format": 1, "sae_lens_version": "test", "fields": ["id", "path", "l0", "neuronpedia", "norm_scaling_factor"], "releases": {{"gemma-scope-2b-pt-res": {{"repo_id": "{REPO}", "model": "gemma-2-2b", "conversion_func": "gemma_2", "config_overrides": {{"d_in": 16, "d_sae": 32}}, "saes": [{}]}}}}}}"#,
        saes.join(", ")
    );
    std::fs::write(t.path().join("registry.json"), registry).unwrap();
    let coders: Vec<String> = ids.iter().map(|id| format!("saelens:gemma-scope-2b-pt-res/{id}")).collect();
    let set_coders = format!("coders=[{}]", coders.join(", "));
    let pipeline = repo_root().join("pipelines/gemma_scope_eval.yaml");
    let model = format!("model={}", t.path().join("gemma").display());
    let corpus = repo_root().join("models/toy-grammar/corpus-eval.jsonl");
    let args = [
        "run",
        pipeline.to_str().unwrap(),
        "--cache-dir",
        "cache",
        "--set",
        &model,
        "--set",
        "tokenizer=toy/toy-grammar@step2000",
        "--set",
        &format!("corpus={}", corpus.display()),
        "--set",
        "layer=3",
        "--set",
        &set_coders,
        "--set",
        "context_size=32",
        "--set",
        "eval_tokens=512",
        "--set",
        "device=cpu",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_saepipe"))
        .args(args)
        .current_dir(t.path())
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", t.path().join("hf"))
        .env("SAEPIPE_SAELENS_REGISTRY", t.path().join("registry.json"))
        .env("SAEPIPE_MODELS", repo_root().join("models"))
        .env("SAEPIPE_QUIET", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");

    let artifact = |stage: &str| -> PathBuf {
        std::fs::read_dir(t.path().join("cache/artifacts"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|d| {
                std::fs::read_to_string(d.join("_manifest.json")).unwrap().contains(&format!("\"stage\": \"{stage}\""))
            })
            .unwrap_or_else(|| panic!("no artifact of {stage}: {text}"))
    };
    let m = read_parquet(&artifact("evaluate").join("metrics.parquet")).unwrap();
    let labels = m.strings("coder").unwrap();
    let want: Vec<String> = ids.iter().map(|id| format!("gemma-scope-2b-pt-res/{id}")).collect();
    assert_eq!(labels, want);
    for (name, v) in [("l0", m.f64("l0").unwrap()), ("ce_loss_score", m.f64("ce_loss_score").unwrap())] {
        assert!(v.iter().all(|x| x.is_finite()), "{name}: {v:?}");
    }
    assert!(m.strings("hook_in").unwrap().iter().all(|h| h == "blocks.3.hook_resid_post"), "the registry's hook");
    let report = std::fs::read_to_string(artifact("report").join("report.html")).unwrap();
    assert!(report.contains("Sparsity–faithfulness frontier") && report.contains("<svg"), "the L0 vs CE loss figure");
    assert!(report.contains("L0 vs. CE loss score"), "the L0 vs CE loss score figure");
    let score = read_parquet(&artifact("report").join("data/ce_loss_score_frontier.parquet")).unwrap();
    assert_eq!(score.f64("ce_loss_score").unwrap(), m.f64("ce_loss_score").unwrap(), "the plotted scores");
    // The report is part of a content-addressed artifact: nothing in it may depend
    // on where it ran (the cache, the pipeline's folder); paths the user gave as
    // parameters (the model's, in the title) are part of the key and may appear.
    for place in [t.path().join("cache"), repo_root().join("pipelines")] {
        let at =
            report.find(place.to_str().unwrap()).map(|i| &report[i.saturating_sub(200)..(i + 200).min(report.len())]);
        assert!(at.is_none(), "the report names the machine path {}: {at:?}", place.display());
    }
}
