//! The main pipeline end to end on the embedded toy LM family, exactly as the
//! README runs it: every stage runs, the science comes out sensible (SAEs
//! reconstruct well, most features are alive, features of later checkpoints
//! match the final checkpoint's reference SAE better than early ones), the report is
//! self-contained, and a rerun is all cache hits. Plus: a training stage killed
//! mid-run resumes from its checkpoint and ends with byte-identical weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn saepipe(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saepipe"));
    c.current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .env("SAEPIPE_MODELS", repo().join("models"));
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "saepipe failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Artifact directories of a stage (instances `stage` and `stage[...]`), keyed by instance.
fn artifacts(cache: &Path, stage: &str) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let dir = e.unwrap().path();
        let Ok(bytes) = std::fs::read(dir.join("_manifest.json")) else { continue };
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let inst = m["stage"].as_str().unwrap_or("").to_string();
        if inst == stage || inst.starts_with(&format!("{stage}[")) {
            v.push((inst, dir));
        }
    }
    v.sort();
    v
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn checkpoint_matching_pipeline_end_to_end() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let pipeline = repo().join("pipelines/checkpoint_matching.yaml");
    let args = ["run", pipeline.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()];
    let started = Instant::now();
    let out = ok(saepipe(t.path()).args(args).output().unwrap());
    eprintln!("first run: {:.1}s", started.elapsed().as_secs_f64());
    let report_line = out
        .lines()
        .find(|l| l.starts_with("report (report): "))
        .unwrap_or_else(|| panic!("no report path printed:\n{out}"));
    let report = PathBuf::from(report_line.rsplit_once(": ").unwrap().1);
    assert!(report.is_file(), "{}", report.display());

    // SAEs reconstruct their checkpoint's activations.
    let trained = artifacts(&cache, "train");
    assert_eq!(trained.len(), 10, "{trained:?}");
    for (inst, dir) in &trained {
        let s = read_json(&dir.join("summary.json"));
        let ev = s["final"]["explained_variance"].as_f64().unwrap();
        assert!(ev >= 0.8, "{inst}: explained variance {ev}");
        assert!(dir.join("sae/cfg.json").is_file() && dir.join("sae/sae_weights.safetensors").is_file());
    }

    // Evaluation on held-out text, each SAE spliced into its own checkpoint.
    let evaluated = artifacts(&cache, "evaluate");
    assert_eq!(evaluated.len(), 10, "{evaluated:?}");
    for (inst, dir) in &evaluated {
        let m = saepipe::ops::table::read_parquet(&dir.join("metrics.parquet")).unwrap();
        assert_eq!(m.strings("coder").unwrap(), vec![inst.replace("evaluate", "train")]);
        let (ev, l0, score) =
            (m.f64("explained_variance").unwrap()[0], m.f64("l0").unwrap()[0], m.f64("ce_loss_score").unwrap()[0]);
        assert!(ev >= 0.8, "{inst}: held-out explained variance {ev}");
        assert!((l0 - 8.0).abs() < 0.01, "{inst}: L0 {l0} of a k = 8 TopK SAE");
        if inst.contains("step2000") {
            assert!(score > 0.9, "{inst}: CE loss score {score}");
        }
    }

    // Matching: most features alive; later checkpoints match the final one better.
    let matched = artifacts(&cache, "match");
    let summary = saepipe::ops::table::read_parquet(&matched[0].1.join("summary.parquet")).unwrap();
    let steps = summary.f64("step").unwrap();
    let (n, dead) = (summary.f64("n_features").unwrap(), summary.f64("dead").unwrap());
    for i in 0..steps.len() {
        assert!(n[i] - dead[i] > 0.5 * n[i], "step {}: {} of {} features dead on the sample", steps[i], dead[i], n[i]);
    }
    let at = |col: &str, step: f64| summary.f64(col).unwrap()[steps.iter().position(|&s| s == step).unwrap()];
    for d in ["0.5", "0.7", "0.9"] {
        let col = format!("fraction_within_{d}");
        assert!(at(&col, 1024.0) > at(&col, 0.0), "{col}: step 1024 {} vs step 0 {}", at(&col, 1024.0), at(&col, 0.0));
        // The final checkpoint's SAE differs from the reference only by its seed.
        assert!(at(&col, 2000.0) > at(&col, 0.0), "{col}: step 2000 {} vs step 0 {}", at(&col, 2000.0), at(&col, 0.0));
    }

    // Feature inspection of the reference: best and worst matched features, with
    // histograms and logit effects.
    let feats = &artifacts(&cache, "features")[0].1;
    let logits = saepipe::ops::table::read_parquet(&feats.join("logits.parquet")).unwrap();
    let hist = saepipe::ops::table::read_parquet(&feats.join("histograms.parquet")).unwrap();
    assert_eq!(logits.rows(), 24 * 2 * 8, "24 features x (positive, negative) x 8 tokens");
    assert_eq!(hist.rows(), 24 * 16);
    let pairs = saepipe::ops::table::read_parquet(&matched[0].1.join("pairs.parquet")).unwrap();
    let shown = logits.f64("feature").unwrap()[0] as i64;
    let (sae, feature, sim) =
        (pairs.strings("coder").unwrap(), pairs.f64("reference_feature").unwrap(), pairs.f64("similarity").unwrap());
    let best = (0..pairs.rows())
        .filter(|&i| sae[i] == "train[step0]" && sim[i].is_finite())
        .max_by(|&a, &b| sim[a].total_cmp(&sim[b]).then(feature[b].total_cmp(&feature[a])))
        .unwrap();
    assert_eq!(shown, feature[best] as i64, "the first feature shown is the best matched at step 0");

    // The report stands alone: inline SVG figures, no external resources.
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.matches("<svg").count() >= 5, "figures missing from the report");
    for needle in ["src=\"http", "href=\"http", "<script src", "@import"] {
        assert!(!html.contains(needle), "report references an external resource ({needle})");
    }
    let figures = report.parent().unwrap().join("figures");
    for name in ["matched_fraction", "matched_similarity_heatmap", "training_curves", "sae_losses_per_checkpoint"] {
        let png = std::fs::read(figures.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png");
    }

    // An immediate rerun does no work.
    let started = Instant::now();
    let out = ok(saepipe(t.path()).args(args).output().unwrap());
    eprintln!("rerun: {:.2}s", started.elapsed().as_secs_f64());
    let rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("stage "))
        .skip(1)
        .take_while(|l| !l.starts_with("finished in"))
        .collect();
    assert!(!rows.is_empty() && rows.iter().all(|l| l.split_whitespace().nth(1) == Some("hit")), "{out}");
}

const TRAIN_ONLY: &str = r#"
version: 1
name: resume
vars:
  delay: 0
stages:
  tokens:
    op: tokenize
    corpus: CORPUS
    tokenizer: toy/toy-grammar@step2000
    context_size: 64
    max_tokens: 16384
  acts:
    op: collect_activations
    model: toy/toy-grammar@step2000
    tokens: tokens
    hooks: [blocks.0.hook_mlp_out]
  train:
    op: train_sae
    activations: acts
    hook: blocks.0.hook_mlp_out
    d_sae: 256
    k: 8
    batch_size: 512
    total_tokens: 262144
    lr: 0.001
    log_every: 1
    checkpoint_every: 40
"#;

fn has_checkpoint(cache: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(cache.join("partial")) else { return false };
    rd.filter_map(|e| e.ok()).any(|e| e.path().join("checkpoint.json").is_file())
}

#[test]
fn killed_training_resumes_from_checkpoint_with_identical_weights() {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    let yaml = TRAIN_ONLY.replace("CORPUS", corpus.to_str().unwrap());
    let reference = tempfile::tempdir().unwrap();
    std::fs::write(reference.path().join("p.yaml"), &yaml).unwrap();
    ok(saepipe(reference.path()).args(["run", "p.yaml", "-q"]).output().unwrap());
    let want =
        std::fs::read(artifacts(&reference.path().join("cache"), "train")[0].1.join("sae/sae_weights.safetensors"))
            .unwrap();
    let want_losses =
        std::fs::read(artifacts(&reference.path().join("cache"), "train")[0].1.join("losses.parquet")).unwrap();

    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), &yaml).unwrap();
    let mut child =
        saepipe(t.path()).args(["run", "p.yaml", "-q"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !has_checkpoint(&t.path().join("cache")) {
        assert!(Instant::now() < deadline, "no checkpoint written");
        assert!(
            child.try_wait().unwrap().is_none(),
            "training finished before a checkpoint was seen; raise total_tokens"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    let out = ok(saepipe(t.path()).args(["run", "p.yaml"]).output().unwrap());
    assert!(out.lines().any(|l| l.starts_with("train ") && l.contains("resumed")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("acts ") && l.contains("hit")), "{out}");
    let dir = &artifacts(&t.path().join("cache"), "train")[0].1;
    assert!(
        std::fs::read(dir.join("sae/sae_weights.safetensors")).unwrap() == want,
        "resumed training ended with different weights"
    );
    assert!(
        std::fs::read(dir.join("losses.parquet")).unwrap() == want_losses,
        "resumed training logged different losses"
    );
}

/// The classic toy flow (pipelines/toy_sae.yaml): an SAE on the toy LM's MLP
/// output reconstructs it, splices in with little CE cost, and both reports
/// (plot and feature inspection) are written.
#[test]
fn toy_sae_pipeline() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let pipeline = repo().join("pipelines/toy_sae.yaml");
    let out = ok(saepipe(t.path())
        .args(["run", pipeline.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()])
        .output()
        .unwrap());
    let reports: Vec<&str> = out.lines().filter(|l| l.starts_with("report (")).collect();
    assert_eq!(reports.len(), 2, "{out}");
    for line in reports {
        assert!(Path::new(line.rsplit_once(": ").unwrap().1).is_file(), "{line}");
    }
    let evaluated = artifacts(&cache, "evaluate");
    let m = saepipe::ops::table::read_parquet(&evaluated[0].1.join("metrics.parquet")).unwrap();
    let (ev, score) = (m.f64("explained_variance").unwrap()[0], m.f64("ce_loss_score").unwrap()[0]);
    assert!(ev >= 0.8, "held-out explained variance {ev}");
    assert!(score > 0.5, "CE loss score {score}");
    let features =
        saepipe::ops::table::read_parquet(&artifacts(&cache, "features")[0].1.join("features.parquet")).unwrap();
    assert_eq!(features.rows(), 512);
    let logits = saepipe::ops::table::read_parquet(&artifacts(&cache, "features")[0].1.join("logits.parquet")).unwrap();
    assert_eq!(logits.rows(), 24 * 2 * 8);
}

/// `device: cuda` trains a TopK SAE on the GPU, ending close to the CPU result
/// (different rounding, same recipe); without a GPU it fails and says why.
#[test]
fn training_on_cuda_runs_on_the_gpu_or_fails_clearly() {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    let yaml =
        TRAIN_ONLY.replace("CORPUS", corpus.to_str().unwrap()).replace("total_tokens: 262144", "total_tokens: 65536");
    let t = tempfile::tempdir().unwrap();
    std::fs::write(
        t.path().join("cpu.yaml"),
        yaml.replace("checkpoint_every: 40", "checkpoint_every: 40\n    device: cpu"),
    )
    .unwrap();
    std::fs::write(
        t.path().join("cuda.yaml"),
        yaml.replace("checkpoint_every: 40", "checkpoint_every: 40\n    device: cuda"),
    )
    .unwrap();
    // Separate caches: `device` is not part of the key, so one cache would reuse the CPU result.
    let run =
        |file: &str| saepipe(t.path()).args(["run", file, "--cache-dir", &format!("cache-{file}")]).output().unwrap();
    let cuda = run("cuda.yaml");
    match saepipe_cuda::gpu_count() {
        Ok(n) if n > 0 => {
            ok(cuda);
            ok(run("cpu.yaml"));
            let ev = |file: &str| {
                let dir = &artifacts(&t.path().join(format!("cache-{file}")), "train")[0].1;
                read_json(&dir.join("summary.json"))["final"]["explained_variance"].as_f64().unwrap()
            };
            let (gpu_ev, cpu_ev) = (ev("cuda.yaml"), ev("cpu.yaml"));
            assert!((gpu_ev - cpu_ev).abs() < 0.02, "GPU training explained variance {gpu_ev} vs CPU {cpu_ev}");
        }
        _ => {
            assert!(
                std::env::var_os("SAEPIPE_REQUIRE_GPU").is_none(),
                "SAEPIPE_REQUIRE_GPU is set but there is no usable GPU"
            );
            eprintln!("SKIPPED the GPU half of training_on_cuda: no CUDA device; checking the error instead");
            assert!(!cuda.status.success(), "device: cuda succeeded on a machine without a GPU");
            let err = String::from_utf8_lossy(&cuda.stderr);
            assert!(err.contains("cuda") && err.contains("driver"), "{err}");
        }
    }
}

/// Two checkpoints that are the same bytes under different names (as some
/// published Pythia step branches are) get a warning when they are matched.
#[test]
fn identical_checkpoints_are_flagged() {
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("step2000-copy");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(repo().join("models/toy-grammar/step2000")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    let yaml = format!(
        r#"
version: 1
name: same_bytes
stages:
  tokens:
    op: tokenize
    corpus: {corpus}
    tokenizer: toy/toy-grammar@step2000
    context_size: 64
    max_tokens: 8192
  acts:
    op: collect_activations
    foreach: [{{key: hub, model: toy/toy-grammar@step2000}}, {{key: copy, model: {copy}}}]
    model: ${{item.model}}
    tokens: tokens
    hooks: [blocks.1.hook_resid_pre]
  train:
    op: train_sae
    foreach: [hub, copy]
    activations: acts
    hook: blocks.1.hook_resid_pre
    d_sae: 64
    k: 4
    batch_size: 512
    total_tokens: 8192
  match:
    op: match_features
    reference: train[hub]
    reference_activations: acts[hub]
    saes: ["train[copy]"]
    activations: ["acts[copy]"]
    n_tokens: 4096
"#,
        corpus = corpus.display(),
        copy = copy.display()
    );
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let out = saepipe(t.path()).args(["run", "p.yaml", "-q"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: match:") && err.contains("byte-identical weights"), "{err}");
}

/// A diverging run stops at the first non-finite loss, says which step, and
/// keeps the last good (finite) checkpoint in the partial area.
#[test]
fn divergence_stops_and_keeps_the_last_good_checkpoint() {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    let yaml = TRAIN_ONLY
        .replace("CORPUS", corpus.to_str().unwrap())
        .replace("lr: 0.001", "lr: 1.0e+30")
        .replace("checkpoint_every: 40", "checkpoint_every: 1\n    device: cpu");
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let out = saepipe(t.path()).args(["run", "p.yaml", "-q"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("training diverged at step 1: loss is NaN")
            && err.contains("the last good checkpoint (step 1) is kept"),
        "{err}"
    );
    let partial = std::fs::read_dir(t.path().join("cache/partial"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("checkpoint.json").is_file())
        .expect("checkpoint kept");
    let parts =
        saepipe_cache::checkpoint::load_checkpoint(&partial, "checkpoint").unwrap().expect("a verified checkpoint");
    let state = saepipe_sae::TrainerState::load(&parts["state"]).unwrap();
    assert_eq!(state.step, 1);
    assert!(
        state.params.enc.iter().chain(&state.params.dec).all(|x| x.is_finite()),
        "the kept checkpoint holds non-finite weights"
    );
    assert!(artifacts(&t.path().join("cache"), "train").is_empty(), "a diverged run published an artifact");
}
