//! Hub downloads against a local imitation of the Hugging Face endpoints (the
//! API, `resolve/` with its headers, and a separate LFS storage host that large
//! files redirect to): the HF cache layout, sharded and pickle checkpoints,
//! tokens, offline mode, refusals and interrupted downloads.

#[path = "support/fake_hub.rs"]
mod fake_hub;

use fake_hub::{FakeHub, Fault, Repo, sha256};
use saepipe_model::hub::{HubCache, HubEndpoint, HubRef};
use saepipe_model::{LoadOptions, Model, RunRequest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const REPO: &str = "acme/tiny";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `files` as commit SHA of REPO, reachable as revisions `main` and SHA.
fn start_hub(files: BTreeMap<String, Vec<u8>>, fault: Fault) -> FakeHub {
    FakeHub::start(Repo { repo: REPO, sha: SHA, files, lfs: &[".safetensors", ".bin"], fault })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tl").join(name)
}

fn read_files(dir: &Path, names: &[&str]) -> BTreeMap<String, Vec<u8>> {
    names.iter().map(|n| (n.to_string(), std::fs::read(dir.join(n)).unwrap())).collect()
}

fn tokenizer_files() -> BTreeMap<String, Vec<u8>> {
    [("tokenizer.json", &b"{\"version\":\"1.0\"}"[..]), ("tokenizer_config.json", b"{}"), ("README.md", b"# tiny")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

fn logits(dir: &Path) -> Vec<f32> {
    let model = Model::load(dir, &LoadOptions::default()).unwrap();
    let tokens: Vec<u32> = (0..8).map(|i| (i * 7 % model.cfg.d_vocab) as u32).collect();
    let mut req = RunRequest { want_logits: true, ..Default::default() };
    model.run(&tokens, 2, 4, &mut req).unwrap().logits.unwrap()
}

/// Every file under `dir`, relative, with `.incomplete` leftovers included.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn download(hub: &FakeHub, cache: &Path, spec: &str, token: Option<&str>) -> saepipe_model::Result<PathBuf> {
    let cache = HubCache { root: cache.into(), offline: false };
    cache.resolve_or_download(&HubRef::parse(spec).unwrap(), &hub.endpoint(token), &mut |_| {})
}

#[test]
fn downloads_into_the_hf_cache_layout() {
    let src = fixture("gpt2");
    let mut files = read_files(&src, &["config.json", "model.safetensors"]);
    files.extend(tokenizer_files());
    let hub = start_hub(files.clone(), Fault::None);
    let cache = tempfile::tempdir().unwrap();
    let ep = HubEndpoint::new(&format!("{}/", hub.url), Some("hf_secret".into()));
    let hc = HubCache { root: cache.path().into(), offline: false };
    let mut lines = Vec::new();
    let snap = hc.resolve_or_download(&HubRef::parse(REPO).unwrap(), &ep, &mut |l| lines.push(l.to_string())).unwrap();

    let repo = cache.path().join("models--acme--tiny");
    assert_eq!(snap, repo.join("snapshots").join(SHA));
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), SHA);
    let weights = sha256(&files["model.safetensors"]);
    let link = std::fs::read_link(snap.join("model.safetensors")).unwrap();
    assert_eq!(link, Path::new("../../blobs").join(&weights), "relative symlinks, as huggingface_hub makes them");
    assert_eq!(std::fs::read(repo.join("blobs").join(&weights)).unwrap(), files["model.safetensors"]);
    // Git-stored files are named by their (unquoted, non-weak) ETag.
    let cfg_blob = &sha256(&files["config.json"])[..40];
    assert_eq!(std::fs::read_link(snap.join("config.json")).unwrap(), Path::new("../../blobs").join(cfg_blob));
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(std::fs::read(snap.join(f)).unwrap(), files[f], "{f}");
    }
    assert!(!snap.join("README.md").exists(), "only what a model needs is fetched");
    assert!(
        tree(cache.path()).iter().all(|f| !f.contains("incomplete") && !f.contains(".tmp")),
        "{:?}",
        tree(cache.path())
    );
    assert!(lines.iter().any(|l| l.contains("acme/tiny") && l.contains("model.safetensors")), "{lines:?}");
    assert_eq!(logits(&snap), logits(&src));

    // The token goes to the hub, never to the storage host the hub redirects to.
    let reqs = hub.requests();
    assert!(reqs.iter().filter(|r| r.host == "hub").all(|r| r.auth.as_deref() == Some("Bearer hf_secret")), "{reqs:?}");
    let lfs: Vec<_> = reqs.iter().filter(|r| r.host == "lfs").collect();
    assert_eq!(lfs.len(), 1, "{reqs:?}");
    assert_eq!(lfs[0].auth, None);

    // Cached now: resolved without a request, by branch and by commit, and offline.
    let n = hub.requests().len();
    assert_eq!(download(&hub, cache.path(), REPO, None).unwrap(), snap);
    assert_eq!(download(&hub, cache.path(), &format!("{REPO}@{SHA}"), None).unwrap(), snap);
    assert_eq!(
        HubCache { root: cache.path().into(), offline: true }.resolve(&HubRef::parse(REPO).unwrap()).unwrap(),
        snap
    );
    assert_eq!(hub.requests().len(), n);
}

#[test]
fn downloads_sharded_safetensors_at_a_commit() {
    // Split the NeoX fixture into two shards and an index.
    let src = fixture("neox");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut files = read_files(&src, &["config.json"]);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let shard = format!("model-{:05}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> =
            part.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        files.insert(shard.clone(), safetensors::serialize(views, None).unwrap());
        for n in part {
            weight_map.insert(n.clone(), shard.clone().into());
        }
    }
    files.insert(
        "model.safetensors.index.json".into(),
        serde_json::json!({ "metadata": {}, "weight_map": weight_map }).to_string().into_bytes(),
    );
    let hub = start_hub(files, Fault::None);
    let cache = tempfile::tempdir().unwrap();
    let snap = download(&hub, cache.path(), &format!("{REPO}@{SHA}"), None).unwrap();
    assert!(!cache.path().join("models--acme--tiny/refs").exists(), "a commit needs no ref");
    assert!(snap.join("model-00002-of-00002.safetensors").is_file());
    assert_eq!(logits(&snap), logits(&src));
    assert!(hub.requests().iter().all(|r| r.auth.is_none()), "no token, no Authorization header");
}

#[test]
fn downloads_pytorch_bin_checkpoints() {
    let src = fixture("gpt2_bin");
    let hub = start_hub(read_files(&src, &["config.json", "pytorch_model.bin"]), Fault::None);
    let cache = tempfile::tempdir().unwrap();
    let snap = download(&hub, cache.path(), REPO, None).unwrap();
    assert_eq!(logits(&snap), logits(&src));
}

#[test]
fn offline_never_touches_the_network() {
    let hub = start_hub(read_files(&fixture("gpt2"), &["config.json", "model.safetensors"]), Fault::None);
    let cache = tempfile::tempdir().unwrap();
    let hc = HubCache { root: cache.path().into(), offline: true };
    let e = hc
        .resolve_or_download(&HubRef::parse("acme/tiny@v2").unwrap(), &hub.endpoint(None), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("acme/tiny@v2")
            && e.contains("HF_HUB_OFFLINE")
            && e.contains(&cache.path().join("models--acme--tiny").display().to_string()),
        "{e}"
    );
    assert!(hub.requests().is_empty());
}

#[test]
fn hub_refusals_are_explained() {
    let hub = start_hub(read_files(&fixture("gpt2"), &["config.json", "model.safetensors"]), Fault::None);
    let cache = tempfile::tempdir().unwrap();
    let e = download(&hub, cache.path(), "acme/private", None).unwrap_err().to_string();
    assert!(
        e.starts_with("model acme/private@main:")
            && e.contains("HTTP 401")
            && e.contains("RepoNotFound")
            && e.contains("HF_TOKEN"),
        "{e}"
    );
    let e = download(&hub, cache.path(), "acme/tiny@step9", None).unwrap_err().to_string();
    assert!(e.contains("acme/tiny@step9") && e.contains("HTTP 404") && e.contains("RevisionNotFound"), "{e}");
    let hub = start_hub(read_files(&fixture("gpt2"), &["config.json"]), Fault::None);
    let e = download(&hub, cache.path(), REPO, None).unwrap_err().to_string();
    assert!(e.contains("no model.safetensors or pytorch_model.bin"), "{e}");
}

#[test]
fn interrupted_or_corrupt_downloads_leave_nothing_behind() {
    let files = read_files(&fixture("gpt2"), &["config.json", "model.safetensors"]);
    let cache = tempfile::tempdir().unwrap();
    for (fault, want) in [(Fault::Truncate, "interrupted after"), (Fault::Corrupt, "SHA-256")] {
        let hub = start_hub(files.clone(), fault);
        let e = download(&hub, cache.path(), REPO, None).unwrap_err().to_string();
        assert!(e.contains("model acme/tiny@main") && e.contains(want), "{e}");
        let left = tree(cache.path());
        assert!(left.iter().all(|f| !f.contains("blobs/") && !f.contains("refs/")), "{left:?}");
        assert!(HubCache { root: cache.path().into(), offline: true }.resolve(&HubRef::parse(REPO).unwrap()).is_err());
    }
    let hub = start_hub(files, Fault::None);
    let snap = download(&hub, cache.path(), REPO, None).unwrap();
    assert_eq!(logits(&snap), logits(&fixture("gpt2")));
}
