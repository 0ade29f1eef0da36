//! The `evaluate` stage end to end: pipelines/sparsity_sweep.yaml on the embedded
//! toy model (trained SAEs and a transcoder plus a coder given by path), its
//! tables, agreement with the library on the same tokens, cache hits on rerun,
//! and a clear error for a coder that does not fit its hook.

use saepipe::ops::table::read_parquet;
use saepipe_data::TokenTableReader;
use saepipe_eval::{EvalOptions, NamedCoder, evaluate};
use saepipe_model::{LoadOptions, Model};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_coder(name: &str) -> PathBuf {
    repo().join("crates/eval/tests/fixtures/saelens/coders").join(name)
}

fn saepipe(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_saepipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env("SAEPIPE_MODELS", repo().join("models"))
        .output()
        .unwrap()
}

fn artifact_of(cache: &Path, stage: &str) -> PathBuf {
    for e in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let dir = e.unwrap().path();
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap();
        if m["stage"] == stage {
            return dir;
        }
    }
    panic!("no artifact for {stage}");
}

/// The sweep pipeline shrunk to the toy model (layer 1, d_sae 64, a few thousand tokens).
fn toy_sweep_args(extra: &Path) -> Vec<String> {
    let models = repo().join("models/toy-grammar");
    [
        "model=toy/toy-grammar@step2000".to_string(),
        format!("corpus={}", models.join("corpus-train.jsonl").display()),
        format!("eval_corpus={}", models.join("corpus-eval.jsonl").display()),
        "layer=1".into(),
        "context_size=32".into(),
        "train_tokens=16384".into(),
        "sae_tokens=16384".into(),
        "d_sae=64".into(),
        "sae_ks=[4,8]".into(),
        "transcoder_ks=[8]".into(),
        "lr=0.001".into(),
        "batch_size=512".into(),
        "eval_batch_size=8".into(),
        "eval_tokens=2048".into(),
        format!("extra_coders=[{}]", extra.display()),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

#[test]
fn the_sweep_pipeline_runs_on_the_toy_model() {
    let t = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("pipelines/sparsity_sweep.yaml"), t.path().join("sweep.yaml")).unwrap();
    let extra = fixture_coder("standard_mlp1");
    let mut args: Vec<String> = vec!["run".into(), "sweep.yaml".into(), "-q".into()];
    args.extend(toy_sweep_args(&extra));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = saepipe(t.path(), &argv);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let cache = t.path().join("cache");
    let dir = artifact_of(&cache, "evaluate");
    let m = read_parquet(&dir.join("metrics.parquet")).unwrap();
    assert_eq!(m.rows(), 4);
    let kinds = m.strings("kind").unwrap();
    assert_eq!(kinds.iter().filter(|k| *k == "transcoder").count(), 1, "{kinds:?}");
    let coders = m.strings("coder").unwrap();
    assert!(coders.contains(&"standard_mlp1".to_string()), "{coders:?}");
    for col in [
        "l0",
        "l0_with_bos",
        "l1",
        "mse",
        "cosine_similarity",
        "l2_ratio",
        "relative_reconstruction_bias",
        "explained_variance",
        "explained_variance_legacy",
        "ce_clean",
        "ce_spliced",
        "ce_zero_ablation",
        "ce_loss_score",
        "kl_spliced",
        "kl_zero_ablation",
        "kl_div_score",
        "dead_features",
        "dense_features",
    ] {
        let v = m.f64(col).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{col}: {v:?}");
    }
    for col in ["architecture", "hook_in", "hook_out", "excluded_tokens"] {
        m.strings(col).unwrap();
    }
    assert!(m.strings("excluded_tokens").unwrap().iter().all(|e| e == "0"));
    let hook_in = m.strings("hook_in").unwrap();
    let tc = kinds.iter().position(|k| k == "transcoder").unwrap();
    assert_eq!(hook_in[tc], "blocks.1.ln2.hook_normalized");
    // Every coder sees the same clean model.
    let clean = m.f64("ce_clean").unwrap();
    assert!(clean.iter().all(|&c| c == clean[0]));

    let f = read_parquet(&dir.join("features.parquet")).unwrap();
    assert_eq!(f.rows(), 3 * 64 + 128);
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["tokens"], 2048);

    // The stage equals the library on the same tokens.
    let tokens_dir = artifact_of(&cache, "eval_tokens");
    let reader = TokenTableReader::open(&tokens_dir.join("tokens.parquet")).unwrap();
    let ctx = reader.meta.context_size;
    let tokens = reader.read_all().unwrap();
    let model = Model::load(&repo().join("models/toy-grammar/step2000"), &LoadOptions::default()).unwrap();
    let coder = NamedCoder::new("standard_mlp1", saepipe_sae::load_coder(&extra).unwrap());
    let opts = EvalOptions { batch_size: 8, exclude_tokens: vec![0], dense_threshold: 0.1 };
    let direct = evaluate(&model, &tokens[..2048], ctx, &[coder], &opts, &mut |_| {}).unwrap();
    let row = coders.iter().position(|c| c == "standard_mlp1").unwrap();
    assert_eq!(m.f64("ce_spliced").unwrap()[row], direct.coders[0].downstream.ce_spliced);
    assert_eq!(m.f64("explained_variance").unwrap()[row], direct.coders[0].recon.explained_variance);
    assert_eq!(m.f64("l0").unwrap()[row], direct.coders[0].recon.l0);

    // A rerun is all hits.
    let argv: Vec<&str> = args.iter().filter(|a| *a != "-q").map(String::as_str).collect();
    let out = saepipe(t.path(), &argv);
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("evaluate ")).collect();
    assert!(!rows.is_empty() && rows.iter().all(|l| l.contains("hit")), "{table}");

    // Recomputing writes the same bytes (timings live in the manifest only).
    let files = ["summary.json", "metrics.parquet", "features.parquet"];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(dir.join(f)).unwrap()).collect();
    let mut forced = argv.clone();
    forced.extend(["--force", "evaluate", "-q"]);
    let out = saepipe(t.path(), &forced);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir_again = artifact_of(&cache, "evaluate");
    assert_eq!(dir_again, dir, "same key, same artifact directory");
    for (f, b) in files.iter().zip(&before) {
        assert!(std::fs::read(dir.join(f)).unwrap() == *b, "{f} differs after a forced rerun");
    }
}

#[test]
fn a_coder_that_does_not_fit_its_hook_fails_naming_both() {
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("wide_sae");
    std::fs::create_dir(&bad).unwrap();
    let src = fixture_coder("topk_mlp1");
    std::fs::copy(src.join("sae_weights.safetensors"), bad.join("sae_weights.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(src.join("cfg.json"))
        .unwrap()
        .replace("blocks.1.hook_mlp_out", "blocks.1.mlp.hook_post");
    std::fs::write(bad.join("cfg.json"), cfg).unwrap();
    std::fs::write(
        t.path().join("p.yaml"),
        format!(
            "version: 1\nname: bad\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 256\n  evaluate:\n    op: evaluate\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    paths: [wide_sae]\n",
            repo().join("models/toy-grammar/corpus-eval.jsonl").display()
        ),
    )
    .unwrap();
    let out = saepipe(t.path(), &["run", "p.yaml", "-q"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("coder `wide_sae`: d_in 64 does not match the width 256 of hook `blocks.1.mlp.hook_post`"),
        "{err}"
    );
}

/// `device: cuda` runs collection and evaluation on the GPU forward; on a
/// machine with a GPU the store and the metrics equal the CPU run's (within
/// float tolerance), elsewhere the stages fail saying CUDA is missing.
#[test]
fn collection_and_evaluation_on_cuda_match_the_cpu_or_fail_clearly() {
    let t = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1\nname: device\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 1024\n  acts:\n    op: collect_activations\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    hooks: [blocks.0.hook_resid_post, blocks.1.hook_mlp_out]\n    batch_size: 8\n    device: DEV\n  evaluate:\n    op: evaluate\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    paths: [{}, {}]\n    batch_size: 8\n    device: DEV\n",
        repo().join("models/toy-grammar/corpus-eval.jsonl").display(),
        fixture_coder("standard_mlp1").display(),
        fixture_coder("topk_mlp1").display()
    );
    for dev in ["cpu", "cuda"] {
        std::fs::write(t.path().join(format!("{dev}.yaml")), yaml.replace("DEV", dev)).unwrap();
    }
    // Separate caches: `device` is not part of the key.
    let run =
        |dev: &str| saepipe(t.path(), &["run", &format!("{dev}.yaml"), "-q", "--cache-dir", &format!("cache-{dev}")]);
    let cuda = run("cuda");
    if !matches!(saepipe_cuda::gpu_count(), Ok(n) if n > 0) {
        assert!(
            std::env::var_os("SAEPIPE_REQUIRE_GPU").is_none(),
            "SAEPIPE_REQUIRE_GPU is set but there is no usable GPU"
        );
        eprintln!(
            "SKIPPED the GPU half of collection_and_evaluation_on_cuda: no CUDA device; checking the error instead"
        );
        assert!(!cuda.status.success(), "device: cuda succeeded on a machine without a GPU");
        let err = String::from_utf8_lossy(&cuda.stderr);
        assert!(err.contains("cuda") && err.contains("driver"), "{err}");
        return;
    }
    assert!(cuda.status.success(), "{}", String::from_utf8_lossy(&cuda.stderr));
    let cpu = run("cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    let hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"];
    let stored = |dev: &str| -> Vec<Vec<f32>> {
        let reader =
            saepipe_data::ActivationReader::open(&artifact_of(&t.path().join(format!("cache-{dev}")), "acts"), &hooks)
                .unwrap()
                .sequential();
        let mut out = vec![Vec::new(); hooks.len()];
        for b in reader.batches(256) {
            for (i, h) in b.unwrap().hooks.into_iter().enumerate() {
                out[i].extend(h);
            }
        }
        out
    };
    for (i, (g, c)) in stored("cuda").iter().zip(stored("cpu")).enumerate() {
        assert_eq!(g.len(), c.len());
        let scale = c.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = g.iter().zip(&c).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-4, "{}: GPU store differs from the CPU store by {err} (relative)", hooks[i]);
    }
    let metrics = |dev: &str| {
        read_parquet(&artifact_of(&t.path().join(format!("cache-{dev}")), "evaluate").join("metrics.parquet")).unwrap()
    };
    let (g, c) = (metrics("cuda"), metrics("cpu"));
    // The standard SAE encodes on the CPU, the TopK SAE on the GPU.
    assert_eq!(g.strings("coder").unwrap(), c.strings("coder").unwrap());
    assert_eq!(g.rows(), 2);
    for col in ["ce_clean", "ce_spliced", "ce_zero_ablation", "explained_variance", "l0", "l1", "mse", "kl_spliced"] {
        for row in 0..2 {
            let (a, b) = (g.f64(col).unwrap()[row], c.f64(col).unwrap()[row]);
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1e-3), "{col} row {row}: GPU {a} vs CPU {b}");
        }
    }
}
