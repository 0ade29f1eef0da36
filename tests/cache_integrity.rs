//! The cache under sharing, through the real binary and real concurrent
//! processes: rebuilds and `--force` never delete what another run reads, a
//! suspended lock holder never publishes over its successor, `cache verify`
//! sees damaged manifests, Ctrl-C stops cleanly, a read-only cache serves hits.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saepipe"));
    c.current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .env("SAEPIPE_MODELS", repo().join("models"));
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin(dir).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn spawn(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Kid {
    let mut c = bin(dir);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    Kid(Some(c.spawn().unwrap()))
}

/// A child killed (and continued, if stopped) when a test fails before waiting for it.
struct Kid(Option<Child>);

impl Kid {
    fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }
    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }
    fn finish(mut self) -> Output {
        let child = self.0.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let pid = child.id() as i32;
        let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
        while !waiter.is_finished() {
            if Instant::now() > deadline {
                // SAFETY: killing our own child that hung.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("saepipe did not finish within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        waiter.join().unwrap()
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            // SAFETY: our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files in every `partial/<key>/` directory matching `shard-*.bin`.
fn partial_shards(cache: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(cache.join("partial")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bin"))
        .count()
}

/// The artifact directory (through its link) of the stage whose plan row names it.
fn artifact(dir: &Path, file: &str, stage: &str) -> PathBuf {
    let out = run(dir, &["plan", file]);
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no stage {stage} in plan:\n{}", text(&out)))
        .to_string();
    let prefix = line.split_whitespace().nth(2).unwrap().to_string();
    let arts = dir.join("cache/artifacts");
    std::fs::read_dir(&arts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
        .unwrap_or_else(|| panic!("artifact {prefix} of {stage} not in the cache"))
}

/// Status column of `stage` in a run's summary table.
fn status(o: &Output, stage: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no row for {stage}:\n{}", text(o)));
    let rest = line[stage.len()..].trim_start();
    // Statuses have at most two words ("hit (waited)"); the time follows.
    rest.split("  ").next().unwrap().trim().to_string()
}

const TWO: &str = "version: 1\nname: two\nvars:\n  delay: 0\nstages:\n  a:\n    op: debug_shards\n    shards: 6\n    shard_bytes: 4096\n    delay_ms: ${delay}\n  b: {op: debug_shards, inputs: [a], shards: 2}\n";

fn setup(yaml: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    t
}

#[test]
fn three_concurrent_runs_rebuild_a_damaged_artifact_once_and_none_fails() {
    let t = setup(TWO);
    let o = run(t.path(), &["run", "p.yaml", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let a = artifact(t.path(), "p.yaml", "a");
    let original = std::fs::read(a.join("data.bin")).unwrap();
    let mut damaged = original.clone();
    damaged[1000] ^= 0x40;
    std::fs::write(a.join("data.bin"), &damaged).unwrap();
    let b = artifact(t.path(), "p.yaml", "b");
    let b_key = b.file_name().unwrap().to_string_lossy().to_string();
    assert!(run(t.path(), &["cache", "rm", &b_key]).status.success());
    let plan = String::from_utf8_lossy(&run(t.path(), &["plan", "p.yaml"]).stdout).to_string();
    assert!(plan.lines().any(|l| l.starts_with("a ") && l.contains("rebuild")), "{plan}");

    let kids: Vec<Kid> = (0..3).map(|_| spawn(t.path(), &["run", "p.yaml", "--set", "delay=150"], &[])).collect();
    let outs: Vec<Output> = kids.into_iter().map(Kid::finish).collect();
    for o in &outs {
        assert!(o.status.success(), "a concurrent run failed:\n{}", text(o));
    }
    let statuses: Vec<String> = outs.iter().map(|o| status(o, "a")).collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "ran" || *s == "resumed").count(),
        1,
        "the rebuild ran once: {statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| *s == "hit (waited)").count(), 2, "{statuses:?}");
    let b_runs = outs.iter().map(|o| status(o, "b")).filter(|s| s == "ran").count();
    assert_eq!(b_runs, 1, "b computed once");
    assert_eq!(
        std::fs::read(artifact(t.path(), "p.yaml", "a").join("data.bin")).unwrap(),
        original,
        "the rebuild is byte-identical"
    );
}

#[test]
fn force_while_another_run_reads_the_artifact_keeps_the_readers_generation() {
    // `b` reads its input two seconds after it starts; meanwhile `--force a` replaces `a`.
    let yaml = "version: 1\nname: reader\nstages:\n  a: {op: debug_shards, shards: 2, shard_bytes: 100000}\n  b:\n    op: command\n    inputs: {a: a}\n    run: 'sleep 2; cat \"$SAEPIPE_INPUT_A/data.bin\" > \"$SAEPIPE_OUT/copy.bin\"'\n";
    let t = setup(yaml);
    let o = run(t.path(), &["run", "p.yaml", "-q", "a"]);
    assert!(o.status.success(), "{}", text(&o));
    let a_bytes = std::fs::read(artifact(t.path(), "p.yaml", "a").join("data.bin")).unwrap();
    let reader = spawn(t.path(), &["run", "p.yaml", "b"], &[]);
    wait_until("the reader to start its command", || {
        std::fs::read_dir(t.path().join("cache/leases")).map(|d| d.count() > 0).unwrap_or(false)
    });
    let forced = run(t.path(), &["run", "p.yaml", "--force", "a", "a"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(status(&forced, "a"), "ran");
    let o = reader.finish();
    assert!(o.status.success(), "the reader lost its input to --force:\n{}", text(&o));
    let copy = std::fs::read(artifact(t.path(), "p.yaml", "b").join("copy.bin")).unwrap();
    assert_eq!(copy, a_bytes);
    // Once the reader is done, nothing of the old generation is left behind by gc.
    std::thread::sleep(Duration::from_millis(600));
    let gc = run_env(t.path(), &["cache", "gc", "p.yaml", "--yes"], &[("SAEPIPE_LOCK_TIMEOUT", "0.5")]);
    assert!(gc.status.success(), "{}", text(&gc));
    assert_eq!(
        std::fs::read_dir(t.path().join("cache/generations")).unwrap().count(),
        2,
        "one generation per artifact"
    );
}

#[test]
fn a_suspended_lock_holder_takes_its_successors_result_instead_of_publishing() {
    let t = setup(TWO);
    let env = [("SAEPIPE_LOCK_TIMEOUT", "1.5")];
    let first = spawn(t.path(), &["run", "p.yaml", "-j", "1", "--set", "delay=300"], &env);
    let cache = t.path().join("cache");
    wait_until("the first shard of a", || partial_shards(&cache) >= 1);
    first.signal(libc::SIGSTOP);
    // The second run breaks the frozen holder's lock after 1.5 s and finishes the stage.
    let second = run_env(t.path(), &["run", "p.yaml", "-j", "1", "--set", "delay=300"], &env);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(status(&second, "a"), "resumed", "the successor resumes the holder's saved shards");
    let published = std::fs::read(artifact(t.path(), "p.yaml", "a").join("data.bin")).unwrap();
    first.signal(libc::SIGCONT);
    let o = first.finish();
    assert!(o.status.success(), "the woken holder failed:\n{}", text(&o));
    assert_eq!(status(&o, "a"), "hit (waited)", "{}", text(&o));
    assert_eq!(
        std::fs::read(artifact(t.path(), "p.yaml", "a").join("data.bin")).unwrap(),
        published,
        "the woken holder published nothing over it"
    );
    let generations = std::fs::read_dir(cache.join("generations")).unwrap().count();
    assert_eq!(generations, 2, "a and b published once each");
    // And the result equals an undisturbed run.
    let fresh = setup(TWO);
    assert!(run(fresh.path(), &["run", "p.yaml", "-q"]).status.success());
    assert_eq!(std::fs::read(artifact(fresh.path(), "p.yaml", "a").join("data.bin")).unwrap(), published);
}

fn run_env(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = bin(dir);
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn cache_verify_reports_damaged_and_missing_manifests() {
    let t = setup(TWO);
    assert!(run(t.path(), &["run", "p.yaml", "-q"]).status.success());
    let (a, b) = (artifact(t.path(), "p.yaml", "a"), artifact(t.path(), "p.yaml", "b"));
    let ok = run(t.path(), &["cache", "verify"]);
    assert!(ok.status.success() && text(&ok).contains("2 verified, 0 corrupt"), "{}", text(&ok));
    std::fs::write(a.join("_manifest.json"), b"garbage").unwrap();
    std::fs::remove_file(b.join("_manifest.json")).unwrap();
    let o = run(t.path(), &["cache", "verify"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("2 verified, 2 corrupt"), "{out}");
    assert!(out.contains("_manifest.json unreadable") && out.contains("_manifest.json is missing"), "{out}");
}

#[test]
fn ctrl_c_saves_progress_releases_everything_and_says_how_to_resume() {
    let t = setup("version: 1\nname: slow\nstages:\n  a: {op: debug_shards, shards: 40, delay_ms: 100}\n");
    let cache = t.path().join("cache");
    let kid = spawn(t.path(), &["run", "p.yaml"], &[]);
    wait_until("two shards", || partial_shards(&cache) >= 2);
    kid.signal(libc::SIGINT);
    let o = kid.finish();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(130), "{out}");
    assert!(out.contains("interrupted") && out.contains("run the same command again to resume"), "{out}");
    assert_eq!(std::fs::read_dir(cache.join("locks")).unwrap().count(), 0, "locks released");
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0, "temporaries removed");
    assert_eq!(std::fs::read_dir(cache.join("leases")).unwrap().count(), 0);
    let record = std::fs::read_dir(cache.join("runs")).unwrap().next().unwrap().unwrap().path().join("run.json");
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(rec["interrupted"], true);
    assert_eq!(rec["stages"][0]["status"], "interrupted");
    let saved = partial_shards(&cache);
    assert!((2..40).contains(&saved), "{saved} shards saved");
    let again = run(t.path(), &["run", "p.yaml"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(status(&again, "a"), "resumed");
}

#[test]
fn a_read_only_cache_serves_hits_and_refuses_work_clearly() {
    let t = setup(TWO);
    assert!(run(t.path(), &["run", "p.yaml", "-q"]).status.success());
    // Another user (nobody) reads the cache: readable, not writable.
    let chmod = Command::new("chmod").args(["-R", "a+rX,go-w"]).arg(t.path()).status().unwrap();
    assert!(chmod.success());
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_saepipe")])
            .args(args)
            .current_dir(t.path())
            .env("NO_COLOR", "1")
            .env_remove("SAEPIPE_CACHE");
        c.output().unwrap()
    };
    let probe = as_nobody(&["--version"]);
    if !probe.status.success() {
        eprintln!("SKIPPED: cannot run saepipe as another user here: {}", text(&probe));
        return;
    }
    let o = as_nobody(&["run", "p.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("read-only"), "the run says where its record went: {}", text(&o));
    assert_eq!(status(&o, "a"), "hit");
    let o = as_nobody(&["run", "p.yaml", "--set", "delay=1", "--force", "b"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("read-only") && text(&o).contains("b"), "{}", text(&o));
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the toy LM's final checkpoint at `dest`, to be altered by a test.
fn copy_toy_model(dest: &Path) -> PathBuf {
    std::fs::create_dir(dest).unwrap();
    for e in std::fs::read_dir(repo().join("models/toy-grammar/step2000")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
    dest.to_path_buf()
}

/// The key of `stage` in `plan`'s output.
fn planned_key(dir: &Path, stage: &str) -> String {
    let out = bin(dir).args(["plan", "p.yaml"]).env("SAEPIPE_MODELS", repo().join("models")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap()
        .to_string();
    line.split_whitespace().nth(2).unwrap().to_string()
}

#[test]
fn cache_keys_see_every_shard_of_a_sharded_checkpoint() {
    // The toy model rewritten as a sharded checkpoint: one shard plus the index
    // (the layout of every large hub model).
    let t = tempfile::tempdir().unwrap();
    let model = copy_toy_model(&t.path().join("m"));
    let shard = model.join("model-00001-of-00001.safetensors");
    std::fs::rename(model.join("model.safetensors"), &shard).unwrap();
    let bytes = std::fs::read(&shard).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let weight_map: serde_json::Map<String, serde_json::Value> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .map(|k| (k.clone(), "model-00001-of-00001.safetensors".into()))
        .collect();
    std::fs::write(
        model.join("model.safetensors.index.json"),
        serde_json::to_vec(&serde_json::json!({ "metadata": {}, "weight_map": weight_map })).unwrap(),
    )
    .unwrap();
    let yaml = format!(
        "version: 1\nname: sharded\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n    max_tokens: 2048\n  acts:\n    op: collect_activations\n    model: ./m\n    tokens: tokens\n    hooks: [blocks.0.hook_resid_post]\n",
        repo().join("models/toy-grammar/corpus-train.jsonl").display()
    );
    std::fs::write(t.path().join("p.yaml"), yaml).unwrap();
    let before = planned_key(t.path(), "acts");
    // Other weights in the same shard (the last byte of the last tensor): a new key.
    let mut changed = bytes.clone();
    let last = changed.len() - 1;
    changed[last] ^= 0x01;
    std::fs::write(&shard, &changed).unwrap();
    let after = planned_key(t.path(), "acts");
    assert_ne!(before, after, "replacing a weight shard must change the key of stages that load the model");
    std::fs::write(&shard, &bytes).unwrap();
    assert_eq!(planned_key(t.path(), "acts"), before, "the same bytes give the same key again");
}

/// Tokens → activations (several shards) → a small TopK SAE on the toy LM.
fn toy_chain(dir: &Path, model: &str, extra_collect: &str) {
    let yaml = format!(
        "version: 1\nname: toy_chain\nstages:\n  tokens:\n    op: tokenize\n    corpus: {}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 64\n    max_tokens: 8192\n  acts:\n    op: collect_activations\n    model: {model}\n    tokens: tokens\n    hooks:\n      - blocks.0.hook_resid_pre\n    shard_tokens: 2048\n{extra_collect}  sae:\n    op: train_sae\n    activations: acts\n    hook: blocks.0.hook_resid_pre\n    architecture: topk\n    d_sae: 64\n    k: 4\n    batch_size: 256\n    total_tokens: 65536\n    checkpoint_every: 2\n    device: cpu\n",
        repo().join("models/toy-grammar/corpus-train.jsonl").display()
    );
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
}

fn run_toy(dir: &Path, args: &[&str]) -> Output {
    bin(dir).args(args).env("SAEPIPE_MODELS", repo().join("models")).output().unwrap()
}

#[test]
fn a_damaged_store_that_planning_does_not_rehash_is_caught_by_its_reader_and_rebuilt() {
    let t = tempfile::tempdir().unwrap();
    toy_chain(t.path(), "toy/toy-grammar@step2000", "");
    let o = run_toy(t.path(), &["run", "p.yaml", "-q", "acts"]);
    assert!(o.status.success(), "{}", text(&o));
    let acts = artifact(t.path(), "p.yaml", "acts");
    let shard = acts.join("shard-00001.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&shard, &bytes).unwrap();
    // `--verify quick` plans the store as a hit without re-hashing it, as `auto`
    // does for stores over 64 MiB: the training stage's reader must catch it.
    let o = run_toy(t.path(), &["run", "p.yaml", "--verify", "quick"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(status(&o, "acts"), "hit");
    assert!(out.contains("shard-00001.parquet") && out.contains("damaged"), "{out}");
    assert!(
        !t.path().join("cache/artifacts").join(acts.file_name().unwrap()).exists(),
        "the damaged store is taken out of the cache"
    );
    let o = run_toy(t.path(), &["run", "p.yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(status(&o, "acts"), "ran", "the store is rebuilt");
    assert_eq!(status(&o, "sae"), "ran");
    let rebuilt = std::fs::read(artifact(t.path(), "p.yaml", "acts").join("shard-00001.parquet")).unwrap();
    bytes[middle] ^= 0x20;
    assert_eq!(rebuilt, bytes, "the rebuilt shard equals the original");
}

#[test]
fn a_damaged_training_checkpoint_is_not_resumed_from() {
    let reference = tempfile::tempdir().unwrap();
    toy_chain(reference.path(), "toy/toy-grammar@step2000", "");
    assert!(run_toy(reference.path(), &["run", "p.yaml", "-q"]).status.success());
    let want = std::fs::read(artifact(reference.path(), "p.yaml", "sae").join("sae/sae_weights.safetensors")).unwrap();

    let t = tempfile::tempdir().unwrap();
    toy_chain(t.path(), "toy/toy-grammar@step2000", "");
    assert!(run_toy(t.path(), &["run", "p.yaml", "-q", "acts"]).status.success());
    let cache = t.path().join("cache");
    let mut kid = {
        let mut c = bin(t.path());
        c.args(["run", "p.yaml", "-q"])
            .env("SAEPIPE_MODELS", repo().join("models"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Kid(Some(c.spawn().unwrap()))
    };
    let pointer = || {
        std::fs::read_dir(cache.join("partial"))
            .ok()
            .and_then(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("checkpoint.json")).find(|p| p.is_file()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let pointer_path = loop {
        if let Some(p) = pointer() {
            break p;
        }
        assert!(
            kid.0.as_mut().unwrap().try_wait().unwrap().is_none(),
            "training finished before a checkpoint was seen"
        );
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(2));
    };
    kid.signal(libc::SIGKILL);
    let _ = kid.finish();
    let partial = pointer_path.parent().unwrap();
    let parts =
        saepipe_cache::checkpoint::load_checkpoint(partial, "checkpoint").unwrap().expect("a complete checkpoint");
    let state = &parts["state"];
    let mut bytes = std::fs::read(state).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x01;
    std::fs::write(state, &bytes).unwrap();
    let o = run_toy(t.path(), &["run", "p.yaml"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("checkpoint is damaged") && out.contains("starts over"), "{out}");
    let got = std::fs::read(artifact(t.path(), "p.yaml", "sae").join("sae/sae_weights.safetensors")).unwrap();
    assert_eq!(got, want, "starting over gives the undisturbed result");
}

#[test]
fn non_finite_activations_fail_collection_naming_the_hook_unless_allowed() {
    // The toy LM with every weight byte set to 0xff: all weights are NaN.
    let t = tempfile::tempdir().unwrap();
    let model = copy_toy_model(&t.path().join("nan"));
    let st = model.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for b in &mut bytes[8 + header_len..] {
        *b = 0xff;
    }
    std::fs::write(&st, &bytes).unwrap();
    toy_chain(t.path(), "./nan", "");
    let o = run_toy(t.path(), &["run", "p.yaml", "acts"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("blocks.0.hook_resid_pre") && out.contains("allow_nonfinite"), "{out}");
    assert!(
        std::fs::read_dir(t.path().join("cache/artifacts")).unwrap().count() == 1,
        "only the tokens were published: {out}"
    );
    toy_chain(t.path(), "./nan", "    allow_nonfinite: true\n");
    let o = run_toy(t.path(), &["run", "p.yaml", "acts"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("non-finite activation values stored"), "{out}");
}
