//! `plan`, `validate`, `dag` and `cache` commands never touch the network: a
//! model that is not in the local Hugging Face cache shows as "to download".

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A hub endpoint on loopback that counts the connections it gets (and answers none).
fn counting_endpoint() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s.read(&mut [0u8; 1024]);
        }
    });
    (url, hits)
}

fn saepipe(dir: &Path, args: &[&str], endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_saepipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", dir.join("hub"))
        .env("SAEPIPE_MODELS", repo().join("models"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn read_only_commands_never_download_a_missing_model() {
    let t = tempfile::tempdir().unwrap();
    let yaml = format!(
        "version: 1\nname: hub\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 64\n    max_tokens: 2048\n  acts:\n    op: collect_activations\n    model: EleutherAI/pythia-70m-deduped@step1000\n    tokens: tokens\n    hooks:\n      - blocks.0.hook_resid_pre\n  sae:\n    op: train_sae\n    activations: acts\n    hook: blocks.0.hook_resid_pre\n    d_sae: 64\n    k: 4\n",
        repo().join("models/toy-grammar/corpus-train.jsonl").display()
    );
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let (endpoint, hits) = counting_endpoint();

    let o = saepipe(t.path(), &["plan", "p.yaml"], &endpoint);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let row = |stage: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(stage))
            .unwrap_or_else(|| panic!("no {stage}: {out}"))
            .to_string()
    };
    assert!(row("tokens").contains(" run ") && !row("tokens").contains("download"), "{out}");
    assert!(row("acts").contains("to download: model `EleutherAI/pythia-70m-deduped@step1000`"), "{out}");
    assert!(row("sae").contains("to download"), "downstream stages say why too: {out}");

    for args in [&["validate", "p.yaml"][..], &["dag", "p.yaml"], &["cache", "ls"], &["cache", "gc", "p.yaml"]] {
        let o = saepipe(t.path(), args, &endpoint);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    // gc cannot know the stage's key without the model: it refuses to delete.
    let o = saepipe(t.path(), &["cache", "gc", "p.yaml", "--yes"], &endpoint);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("acts") && text(&o).contains("not in the local Hugging Face cache"), "{}", text(&o));

    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a read-only command contacted the hub");
    assert!(
        !t.path().join("hub").exists() || std::fs::read_dir(t.path().join("hub")).unwrap().count() == 0,
        "nothing was downloaded"
    );
}
