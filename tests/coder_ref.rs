//! Coder references (`hf:<owner>/<repo>[@<rev>]/<path>` and local paths)
//! against a local imitation of the Hugging Face endpoints (the revision API,
//! `resolve/` with its headers, and a separate LFS storage host that weight
//! files redirect to): only the coder's files are fetched into the HF cache
//! layout, cached coders resolve without the network, offline mode and
//! refusals are explained, and an `evaluate` stage keys hub coders by content.

#[path = "../crates/model/tests/support/fake_hub.rs"]
mod fake_hub;

use fake_hub::{FakeHub, Fault, Repo, sha256};
use saepipe::ops::coder_ref::{label, resolve_with};
use saepipe::ops::table::read_parquet;
use saepipe_model::hub::HubCache;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const REPO: &str = "acme/coders";
const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Serves `files` as commit SHA of REPO (revisions `main` and SHA); weights and `.pt` files via LFS.
fn start_hub(files: BTreeMap<String, Vec<u8>>) -> FakeHub {
    FakeHub::start(Repo { repo: REPO, sha: SHA, files, lfs: &[".safetensors", ".pt"], fault: Fault::None })
}

fn eval_coder(name: &str) -> PathBuf {
    repo_root().join("crates/eval/tests/fixtures/saelens/coders").join(name)
}

fn pt_fixture(name: &str) -> PathBuf {
    repo_root().join("crates/sae/tests/fixtures/transcoder_pt").join(name)
}

/// A repository with SAELens folders (one with sparsity), a `.pt` transcoder and unrelated files.
fn repo_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (folder, src) in [("blocks.1.hook_mlp_out", "topk_mlp1"), ("blocks.1.hook_resid_pre", "jumprelu_resid1")] {
        for f in ["cfg.json", "sae_weights.safetensors"] {
            files.insert(format!("{folder}/{f}"), std::fs::read(eval_coder(src).join(f)).unwrap());
        }
    }
    let sparsity = saepipe_sae::st::Out::F32(vec![128], vec![-2.0; 128]);
    let t = tempfile::tempdir().unwrap();
    saepipe_sae::st::write(&t.path().join("s.safetensors"), vec![("sparsity".into(), sparsity)], None).unwrap();
    files.insert(
        "blocks.1.hook_mlp_out/sparsity.safetensors".into(),
        std::fs::read(t.path().join("s.safetensors")).unwrap(),
    );
    files.insert("transcoders/tc_8.pt".into(), std::fs::read(pt_fixture("transcoder.pt")).unwrap());
    files.insert("README.md".into(), b"# coders".to_vec());
    files.insert("blocks.1.hook_resid_pre/big_checkpoint.safetensors".into(), vec![7u8; 1000]);
    files
}

fn forward(c: &saepipe_sae::SparseCoder) -> Vec<f32> {
    let x: Vec<f32> = (0..4 * c.d_in).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    c.forward(&x, 4).unwrap().1
}

#[test]
fn hub_coders_are_fetched_file_by_file_into_the_hf_cache() {
    let hub = start_hub(repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = HubCache { root: cache_dir.path().into(), offline: false };
    let base = Path::new("/nonexistent");
    let mut lines = Vec::new();

    // A SAELens folder: its three files, cfg.json last, nothing else.
    let spec = "hf:acme/coders/blocks.1.hook_mlp_out";
    let dir = resolve_with(spec, base, &cache, &hub.endpoint(None), &mut |l| lines.push(l.to_string())).unwrap();
    let snap = cache_dir.path().join("models--acme--coders/snapshots").join(SHA);
    assert_eq!(dir, snap.join("blocks.1.hook_mlp_out"));
    assert_eq!(std::fs::read_to_string(cache_dir.path().join("models--acme--coders/refs/main")).unwrap(), SHA);
    let files: Vec<String> = hub
        .requests()
        .iter()
        .filter(|r| r.host == "hub" && r.path.contains("/resolve/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(files, ["sae_weights.safetensors", "sparsity.safetensors", "cfg.json"]);
    let link = std::fs::read_link(dir.join("sae_weights.safetensors")).unwrap();
    let blob = sha256(&std::fs::read(eval_coder("topk_mlp1").join("sae_weights.safetensors")).unwrap());
    assert_eq!(link, Path::new("../../../blobs").join(&blob), "relative symlinks as huggingface_hub makes them");
    assert!(!snap.join("README.md").exists() && !snap.join("blocks.1.hook_resid_pre").exists());
    assert!(lines.iter().any(|l| l.contains(spec)), "{lines:?}");
    let c = saepipe_sae::load_coder(&dir).unwrap();
    assert_eq!(forward(&c), forward(&saepipe_sae::load_coder(&eval_coder("topk_mlp1")).unwrap()));
    assert_eq!(c.log_sparsity.as_deref(), Some(&[-2.0f32; 128][..]));
    assert_eq!(label(spec, &dir), "blocks.1.hook_mlp_out");

    // A .pt file at a pinned commit.
    let spec = format!("hf:acme/coders@{SHA}/transcoders/tc_8.pt");
    let pt = resolve_with(&spec, base, &cache, &hub.endpoint(None), &mut |_| {}).unwrap();
    assert_eq!(pt, snap.join("transcoders/tc_8.pt"));
    let c = saepipe_sae::load_coder(&pt).unwrap();
    assert!(c.is_transcoder());
    assert_eq!(forward(&c), forward(&saepipe_sae::load_coder(&pt_fixture("transcoder.pt")).unwrap()));
    assert_eq!(label(&spec, &pt), "tc_8");

    // Cached now: no request, also offline, by branch and by commit.
    let n = hub.requests().len();
    let offline = HubCache { root: cache_dir.path().into(), offline: true };
    for (c, spec) in [
        (&cache, "hf:acme/coders/blocks.1.hook_mlp_out"),
        (&offline, "hf:acme/coders@main/blocks.1.hook_mlp_out"),
        (&offline, &format!("hf:acme/coders@{SHA}/blocks.1.hook_mlp_out")),
    ] {
        assert_eq!(resolve_with(spec, base, c, &hub.endpoint(None), &mut |_| {}).unwrap(), dir);
    }
    assert_eq!(hub.requests().len(), n);

    // Another folder of the same commit joins the same snapshot.
    let other =
        resolve_with("hf:acme/coders/blocks.1.hook_resid_pre", base, &cache, &hub.endpoint(None), &mut |_| {}).unwrap();
    assert_eq!(other, snap.join("blocks.1.hook_resid_pre"));
    assert!(!other.join("big_checkpoint.safetensors").exists(), "only coder files are fetched");
}

#[test]
fn missing_coders_and_refusals_are_explained() {
    let hub = start_hub(repo_files());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = HubCache { root: cache_dir.path().into(), offline: false };
    let base = Path::new("/nonexistent");
    let err = |spec: &str, cache: &HubCache| {
        format!("{:#}", resolve_with(spec, base, cache, &hub.endpoint(None), &mut |_| {}).unwrap_err())
    };

    let e = err("hf:acme/coders/blocks.2.hook_mlp_out", &cache);
    assert!(
        e.contains("coder `hf:acme/coders/blocks.2.hook_mlp_out`")
            && e.contains("there is no folder `blocks.2.hook_mlp_out`"),
        "{e}"
    );
    assert!(
        e.contains("coder folders there: [blocks.1.hook_mlp_out, blocks.1.hook_resid_pre]")
            && e.contains("transcoders/tc_8.pt"),
        "{e}"
    );
    let e = err("hf:acme/coders/transcoders/tc_9.pt", &cache);
    assert!(e.contains("no file `transcoders/tc_9.pt`; its .pt files: [transcoders/tc_8.pt]"), "{e}");
    let e = err("hf:acme/coders", &cache);
    assert!(e.contains("the repository root holds [README.md] but not cfg.json"), "{e}");
    let e = err("hf:acme/secret/x", &cache);
    assert!(e.contains("HTTP 401") && e.contains("HF_TOKEN"), "{e}");
    let e = err("hf:acme/coders@v9/x", &cache);
    assert!(e.contains("HTTP 404") && e.contains("RevisionNotFound"), "{e}");
    assert!(!cache_dir.path().join("models--acme--coders/refs").exists(), "failed selections write no ref");

    let n = hub.requests().len();
    let offline = HubCache { root: cache_dir.path().into(), offline: true };
    let e = err("hf:acme/coders/blocks.1.hook_mlp_out", &offline);
    assert!(
        e.contains("HF_HUB_OFFLINE is set")
            && e.contains("huggingface-cli download acme/coders --include 'blocks.1.hook_mlp_out/*' --revision main"),
        "{e}"
    );
    let e = err("hf:acme/coders/transcoders/tc_8.pt", &offline);
    assert!(e.contains("huggingface-cli download acme/coders transcoders/tc_8.pt --revision main"), "{e}");
    assert_eq!(hub.requests().len(), n, "offline never touches the network");

    let e = err("hf:acme/coders/../x", &cache);
    assert!(e.contains("not a plain path"), "{e}");
    let e = err("acme/coders/blocks.1.hook_mlp_out", &cache);
    assert!(e.contains("does not exist") && e.contains("hf:<owner>/<repo>"), "{e}");
}

fn saepipe(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_saepipe"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("SAEPIPE_MODELS", repo_root().join("models"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn evaluate_outcome(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    table.lines().find(|l| l.starts_with("evaluate ")).unwrap_or_else(|| panic!("{table}")).to_string()
}

#[test]
fn evaluate_takes_hub_coders_and_keys_them_by_content() {
    let hub = start_hub(repo_files());
    let t = tempfile::tempdir().unwrap();
    let hf_cache = t.path().join("hf");
    let local = t.path().join("local_sae");
    std::fs::create_dir(&local).unwrap();
    for f in ["cfg.json", "sae_weights.safetensors"] {
        std::fs::copy(eval_coder("standard_mlp1").join(f), local.join(f)).unwrap();
    }
    std::fs::write(
        t.path().join("p.yaml"),
        format!(
            "version: 1\nname: hub\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 256\n  evaluate:\n    op: evaluate\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    paths: [hf:acme/coders/blocks.1.hook_mlp_out, local_sae]\n",
            repo_root().join("models/toy-grammar/corpus-eval.jsonl").display()
        ),
    )
    .unwrap();
    let online = [("HF_ENDPOINT", hub.url.as_str()), ("HF_HUB_CACHE", hf_cache.to_str().unwrap())];
    let offline = [online[0], online[1], ("HF_HUB_OFFLINE", "1")];

    let first = evaluate_outcome(&saepipe(t.path(), &["run", "p.yaml"], &online));
    assert!(first.contains("ran"), "{first}");
    let cache = t.path().join("cache/artifacts");
    let dir = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| std::fs::read_to_string(d.join("_manifest.json")).unwrap().contains("\"evaluate\""))
        .unwrap();
    let m = read_parquet(&dir.join("metrics.parquet")).unwrap();
    assert_eq!(m.strings("coder").unwrap(), ["blocks.1.hook_mlp_out", "local_sae"]);
    assert_eq!(m.strings("architecture").unwrap()[0], "topk");

    // Offline rerun: all from the caches, no request.
    let n = hub.requests().len();
    let again = evaluate_outcome(&saepipe(t.path(), &["run", "p.yaml"], &offline));
    assert!(again.contains("hit"), "{again}");
    assert_eq!(hub.requests().len(), n);

    // The cached coder's content changes (k 8 → 4): the key changes.
    let cfg = hf_cache.join("models--acme--coders/snapshots").join(SHA).join("blocks.1.hook_mlp_out/cfg.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"k\": 8", "\"k\": 4");
    std::fs::remove_file(&cfg).unwrap();
    std::fs::write(&cfg, text).unwrap();
    let changed = evaluate_outcome(&saepipe(t.path(), &["run", "p.yaml"], &offline));
    assert!(changed.contains("ran"), "{changed}");
    // So does the local coder's.
    let cfg = local.join("cfg.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"model_name\"", "\"note\": 1, \"model_name\"");
    std::fs::write(&cfg, text).unwrap();
    let changed = evaluate_outcome(&saepipe(t.path(), &["run", "p.yaml"], &offline));
    assert!(changed.contains("ran"), "{changed}");
}

// ---- `saelens:<release>/<sae_id>`: SAELens's registry names through the hub cache ----

fn conversions() -> PathBuf {
    repo_root().join("crates/sae/tests/fixtures/saelens_conversions")
}

const GEMMA_REPO: &str = "fixture/gemma-scope-2b-pt-res";

/// The fixture Gemma Scope repository (params.npz folders) on a fake hub.
fn gemma_hub() -> FakeHub {
    let root = conversions().join("repos").join(GEMMA_REPO);
    let mut files = BTreeMap::new();
    for sub in ["layer_3/width_16k/average_l0_5", "embedding/width_4k/average_l0_6"] {
        files.insert(format!("{sub}/params.npz"), std::fs::read(root.join(sub).join("params.npz")).unwrap());
    }
    files.insert("README.md".into(), b"# gemma scope fixture".to_vec());
    FakeHub::start(Repo { repo: GEMMA_REPO, sha: SHA, files, lfs: &[".npz"], fault: Fault::None })
}

#[test]
fn registry_names_resolve_through_the_hub_cache_and_offline() {
    use saepipe::ops::coder_ref::{load_pretrained_in, resolve_in};
    let registry = saepipe_sae::Registry::load(&conversions().join("registry.json")).unwrap();
    let hub = gemma_hub();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = HubCache { root: cache_dir.path().into(), offline: false };
    let base = Path::new("/nonexistent");
    let spec = "saelens:fixture-gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_5";

    // Only this SAE's params.npz is fetched, into the HF cache layout.
    let mut lines = Vec::new();
    let dir =
        resolve_in(spec, base, &registry, &cache, &hub.endpoint(None), &mut |l| lines.push(l.to_string())).unwrap();
    let snap = cache_dir.path().join("models--fixture--gemma-scope-2b-pt-res/snapshots").join(SHA);
    assert_eq!(dir, snap.join("layer_3/width_16k/average_l0_5"));
    let fetched: Vec<String> = hub
        .requests()
        .iter()
        .filter(|r| r.host == "hub" && r.path.contains("/resolve/"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(fetched[0].ends_with("layer_3/width_16k/average_l0_5/params.npz"), "{fetched:?}");
    assert!(!snap.join("embedding").exists() && !snap.join("README.md").exists());
    assert!(lines.iter().any(|l| l.contains(spec) && l.contains("gemma_2")), "{lines:?}");

    // Loaded with the gemma_2 conversion, equal to loading the repository's files directly.
    let coder = load_pretrained_in(spec, &dir, &registry).unwrap().expect("a registry coder");
    let direct = registry
        .lookup("fixture-gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_5")
        .unwrap()
        .load(&conversions().join("repos").join(GEMMA_REPO))
        .unwrap();
    assert_eq!(forward(&coder), forward(&direct));
    assert_eq!(coder.metadata.hook_name.as_deref(), Some("blocks.3.hook_resid_post"));
    assert_eq!(coder.metadata.extra.get("neuronpedia_id").and_then(|v| v.as_str()), Some("gemma-2-2b/gemma_2"));
    assert_eq!(label(spec, &dir), "fixture-gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_5");
    assert!(load_pretrained_in("hf:acme/coders/x", &dir, &registry).unwrap().is_none());

    // Offline: the cached coder resolves without a request; an uncached one is explained.
    let n = hub.requests().len();
    let offline = HubCache { root: cache_dir.path().into(), offline: true };
    assert_eq!(resolve_in(spec, base, &registry, &offline, &hub.endpoint(None), &mut |_| {}).unwrap(), dir);
    let other = "saelens:fixture-gemma-scope-2b-pt-res/embedding/width_4k/average_l0_6";
    let e =
        format!("{:#}", resolve_in(other, base, &registry, &offline, &hub.endpoint(None), &mut |_| {}).unwrap_err());
    assert!(
        e.contains("HF_HUB_OFFLINE is set")
            && e.contains("huggingface-cli download fixture/gemma-scope-2b-pt-res embedding/width_4k/average_l0_6/params.npz --revision main"),
        "{e}"
    );
    assert_eq!(hub.requests().len(), n, "offline never touches the network");

    // Names the registry does not have: did-you-mean, no request.
    let e = format!(
        "{:#}",
        resolve_in("saelens:fixture-gemma-scope-2b-pt-re/x", base, &registry, &cache, &hub.endpoint(None), &mut |_| {})
            .unwrap_err()
    );
    assert!(e.contains("did you mean `fixture-gemma-scope-2b-pt-res`"), "{e}");
    let e = format!(
        "{:#}",
        resolve_in(
            "saelens:fixture-gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_50",
            base,
            &registry,
            &cache,
            &hub.endpoint(None),
            &mut |_| {}
        )
        .unwrap_err()
    );
    assert!(e.contains("has no SAE") && e.contains("did you mean `layer_3/width_16k/average_l0_5`"), "{e}");
    assert_eq!(hub.requests().len(), n);
}

#[test]
fn evaluate_takes_registry_names() {
    let hub = start_hub(repo_files());
    let t = tempfile::tempdir().unwrap();
    let hf_cache = t.path().join("hf");
    // A registry naming the fake hub's SAELens folder, as SAELens's YAML would.
    let registry = t.path().join("registry.json");
    std::fs::write(
        &registry,
        r#"{"format": 1, "sae_lens_version": "test", "releases": {"acme-mlp": {"repo_id": "acme/coders", "model": "toy", "conversion_func": null, "config_overrides": {"dataset_path": "toy/corpus"}, "saes": [["blocks.1.hook_mlp_out", null, 8, "toy/1-mlp"]]}}}"#,
    )
    .unwrap();
    std::fs::write(
        t.path().join("p.yaml"),
        format!(
            "version: 1\nname: reg\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 256\n  evaluate:\n    op: evaluate\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    paths: [saelens:acme-mlp/blocks.1.hook_mlp_out]\n",
            repo_root().join("models/toy-grammar/corpus-eval.jsonl").display()
        ),
    )
    .unwrap();
    let env = [
        ("HF_ENDPOINT", hub.url.as_str()),
        ("HF_HUB_CACHE", hf_cache.to_str().unwrap()),
        ("SAEPIPE_SAELENS_REGISTRY", registry.to_str().unwrap()),
    ];
    let first = evaluate_outcome(&saepipe(t.path(), &["run", "p.yaml"], &env));
    assert!(first.contains("ran"), "{first}");
    let dir = std::fs::read_dir(t.path().join("cache/artifacts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| std::fs::read_to_string(d.join("_manifest.json")).unwrap().contains("\"evaluate\""))
        .unwrap();
    let m = read_parquet(&dir.join("metrics.parquet")).unwrap();
    assert_eq!(m.strings("coder").unwrap(), ["acme-mlp/blocks.1.hook_mlp_out"]);
    assert_eq!(m.strings("architecture").unwrap(), ["topk"]);

    // Offline rerun from the caches; an unknown name fails with a suggestion.
    let offline = [env[0], env[1], env[2], ("HF_HUB_OFFLINE", "1")];
    let again = evaluate_outcome(&saepipe(t.path(), &["run", "p.yaml"], &offline));
    assert!(again.contains("hit"), "{again}");
    let text = std::fs::read_to_string(t.path().join("p.yaml")).unwrap().replace("acme-mlp/", "acme-mpl/");
    std::fs::write(t.path().join("p.yaml"), text).unwrap();
    let out = saepipe(t.path(), &["run", "p.yaml"], &offline);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("did you mean `acme-mlp`"), "{err}");
}

#[test]
fn match_features_takes_a_published_reference_coder() {
    let hub = start_hub(repo_files());
    let t = tempfile::tempdir().unwrap();
    let hf_cache = t.path().join("hf");
    let registry = t.path().join("registry.json");
    std::fs::write(
        &registry,
        r#"{"format": 1, "sae_lens_version": "test", "releases": {"acme-mlp": {"repo_id": "acme/coders", "model": "toy", "conversion_func": null, "config_overrides": null, "saes": [["blocks.1.hook_mlp_out", null, 8, null]]}}}"#,
    )
    .unwrap();
    let yaml = |reference: &str| {
        format!(
            "version: 1\nname: m\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 8192\n  acts:\n    op: collect_activations\n    model: toy/toy-grammar@step2000\n    tokens: tokens\n    hooks: [blocks.1.hook_mlp_out]\n  train:\n    op: train_sae\n    activations: acts\n    hook: blocks.1.hook_mlp_out\n    architecture: topk\n    d_sae: 128\n    k: 8\n    total_tokens: 8192\n    batch_size: 1024\n  match:\n    op: match_features\n    {reference}\n    saes: [train]\n    reference_activations: acts\n    activations: [acts]\n    n_tokens: 4096\n",
            repo_root().join("models/toy-grammar/corpus-train.jsonl").display()
        )
    };
    let env = [
        ("HF_ENDPOINT", hub.url.as_str()),
        ("HF_HUB_CACHE", hf_cache.to_str().unwrap()),
        ("SAEPIPE_SAELENS_REGISTRY", registry.to_str().unwrap()),
    ];
    let summary_of = |dir: &Path| {
        let o = saepipe(dir, &["path", "p.yaml", "match"], &env);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let art = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(art.join("_manifest.json")).unwrap()).unwrap();
        (read_parquet(&art.join("summary.parquet")).unwrap(), manifest["metrics"]["reference"].clone())
    };
    for (reference, label) in [
        ("reference_coder: saelens:acme-mlp/blocks.1.hook_mlp_out", "acme-mlp/blocks.1.hook_mlp_out"),
        ("reference_coder: hf:acme/coders/blocks.1.hook_mlp_out", "blocks.1.hook_mlp_out"),
    ] {
        std::fs::write(t.path().join("p.yaml"), yaml(reference)).unwrap();
        let out = saepipe(t.path(), &["run", "p.yaml"], &env);
        assert!(out.status.success(), "{reference}: {}", String::from_utf8_lossy(&out.stderr));
        let (summary, reference_label) = summary_of(t.path());
        assert_eq!(reference_label, label);
        assert_eq!(summary.strings("coder").unwrap(), ["train"]);
        let n_matched = summary.f64("n_matched").unwrap()[0];
        assert!(n_matched > 0.0, "the published coder's live features match the trained SAE's: {n_matched}");
    }

    // Both a stage and a published coder, or neither: invalid input, said before anything runs.
    for (reference, said) in
        [("reference: train\n    reference_coder: hf:acme/coders/blocks.1.hook_mlp_out", "not both"), ("", "missing")]
    {
        std::fs::write(t.path().join("p.yaml"), yaml(reference)).unwrap();
        let out = saepipe(t.path(), &["validate", "p.yaml"], &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("p.yaml") && err.contains(said), "{err}");
    }
}
