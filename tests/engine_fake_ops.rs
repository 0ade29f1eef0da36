//! The engine on its own: loading, planning, cache keys, scheduling, the
//! per-key lock, failure handling and resume, driven through the library API
//! with a fake stage kind instead of saepipe's ops (no model, no data).
//!
//! The fake op writes given bytes (followed by its inputs' bytes), and on
//! request sleeps, fails, fails once leaving saved progress, or meets other
//! stages through marker files: that is how a test shows that two stages ran
//! at the same time without measuring time.

use anyhow::{Result, bail};
use saepipe::engine::{NoProgress, Op, OpRegistry, ParamSpec, ParamType, Params, ProgressSink, Resource, StageCtx};
use saepipe::exec::keys::materials;
use saepipe::exec::plan::{Action, Plan, Selection, VerifyPolicy, make_plan};
use saepipe::exec::scheduler::{RunOptions, RunReport, job_for, run};
use saepipe::exec::stage::{Outcome, execute};
use saepipe::pipeline::Pipeline;
use saepipe::pipeline::spec::{LoadOptions, load_str};
use saepipe_cache::{Cache, Key};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A stage kind for engine tests. Parameters:
/// - `bytes`: written to `data.bin`, followed by each input's `data.bin` (in the key);
/// - `fail`: fail instead of publishing (in the key);
/// - `fail_once`: fail the first time, leaving saved progress; succeed when resumed (in the key);
/// - `sleep_ms`, `trace`, `touch`, `wait_for`, `gpu`: how and when it runs, not what it
///   produces (not in the key). `trace` gets `start ID` / `end ID` lines; `touch` is
///   created when the stage starts; `wait_for` is waited for after that; `gpu` makes
///   the stage hold GPU 0.
struct FakeOp;

static FAKE: FakeOp = FakeOp;

fn fake_ops() -> OpRegistry {
    OpRegistry::new([&FAKE as &dyn Op])
}

/// Longest a stage waits for a marker file: a guard against hanging, not a measurement.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

fn wait_for_file(path: &Path) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > WAIT_LIMIT {
            bail!("gave up waiting for {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn append_line(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    // One write per line: with O_APPEND it lands whole even when two stages
    // trace at once (`writeln!` may split it into two writes).
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

impl Op for FakeOp {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "writes given bytes; may sleep or fail (engine tests)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::optional("bytes", ParamType::Str, json!(""), "written to data.bin"),
            ParamSpec::maybe("inputs", ParamType::Artifacts, "artifacts whose data.bin is appended"),
            ParamSpec::optional("fail", ParamType::Bool, json!(false), "fail instead of publishing"),
            ParamSpec::optional("fail_once", ParamType::Bool, json!(false), "fail unless resuming"),
            ParamSpec::optional("sleep_ms", ParamType::Int, json!(0), "sleep before writing").min(0).not_in_key(),
            ParamSpec::maybe("trace", ParamType::Str, "file that gets start/end lines").not_in_key(),
            ParamSpec::maybe("touch", ParamType::Str, "file created at the start").not_in_key(),
            ParamSpec::maybe("wait_for", ParamType::Str, "file to wait for after starting").not_in_key(),
            ParamSpec::optional("gpu", ParamType::Bool, json!(false), "hold GPU 0 while running").not_in_key(),
        ]
    }
    fn resource(&self, params: &Params) -> Resource {
        if params.bool("gpu").unwrap_or(false) { Resource::Gpu(0) } else { Resource::Cpu }
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = ctx.params.clone();
        let file = |name: &str| -> Option<PathBuf> { p.opt_str(name).map(|f| ctx.base_dir.join(f)) };
        let trace = file("trace");
        if let Some(t) = &trace {
            append_line(t, &format!("start {}", ctx.instance));
        }
        if let Some(t) = file("touch") {
            std::fs::write(t, b"")?;
        }
        if let Some(w) = file("wait_for") {
            wait_for_file(&w)?;
        }
        std::thread::sleep(Duration::from_millis(p.u64_or("sleep_ms", 0)?));
        let result = (|| -> Result<Value> {
            if p.bool("fail")? {
                bail!("fake failure in {}", ctx.instance);
            }
            let progress = ctx.partial_dir.join("progress");
            if p.bool("fail_once")? && !progress.exists() {
                std::fs::write(&progress, b"half done")?;
                bail!("fake failure after saving progress in {}", ctx.instance);
            }
            let mut data = p.str("bytes")?.as_bytes().to_vec();
            for input in ctx.input_list("inputs") {
                data.extend(std::fs::read(input.join("data.bin"))?);
            }
            ctx.write_output("data.bin", &data)?;
            Ok(json!({ "bytes": data.len() }))
        })();
        if let Some(t) = &trace {
            append_line(t, &format!("end {}", ctx.instance));
        }
        result
    }
}

/// A pipeline file in a fresh directory, with its own cache.
struct Fixture {
    dir: tempfile::TempDir,
    cache: Cache,
    ops: OpRegistry,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        Fixture { dir, cache, ops: fake_ops() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn load(&self, yaml: &str) -> Pipeline {
        load_str(&self.ops, &self.path("p.yaml"), yaml, &LoadOptions::default(), None).unwrap_or_else(|e| panic!("{e}"))
    }
    fn plan(&self, p: &Pipeline) -> Plan {
        make_plan(p, &self.cache, &Selection::default(), VerifyPolicy::Auto).unwrap()
    }
    fn run(&self, p: &Pipeline, jobs: usize, keep_going: bool) -> RunReport {
        let plan = self.plan(p);
        run(p, &self.cache, &plan, &RunOptions { jobs, keep_going, quiet: true, isolate: false, slurm: None }).unwrap()
    }
    fn trace(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("trace.txt")).unwrap_or_default().lines().map(str::to_string).collect()
    }
    fn data(&self, key: &Key) -> Vec<u8> {
        std::fs::read(self.cache.artifact_dir(key).join("data.bin")).unwrap()
    }
}

fn key_of(p: &Pipeline, plan: &Plan, id: &str) -> Key {
    plan.items.iter().find(|i| p.instances[i.idx].id == id).unwrap_or_else(|| panic!("{id} is not planned")).key
}

/// (instance, action, reasons) per planned instance, in plan order.
fn actions(p: &Pipeline, plan: &Plan) -> Vec<(String, Action, String)> {
    plan.items.iter().map(|i| (p.instances[i.idx].id.clone(), i.action, i.why.join("; "))).collect()
}

fn action_of(p: &Pipeline, plan: &Plan, id: &str) -> (Action, String) {
    let (_, a, why) = actions(p, plan).into_iter().find(|(i, ..)| i == id).unwrap();
    (a, why)
}

fn status(report: &RunReport, id: &str) -> String {
    report.stages.iter().find(|s| s.instance == id).unwrap_or_else(|| panic!("{id} not in the report")).status.clone()
}

/// Position of a trace line; panics if missing.
fn at(trace: &[String], line: &str) -> usize {
    trace.iter().position(|l| l == line).unwrap_or_else(|| panic!("`{line}` missing from trace {trace:?}"))
}

const CHAIN: &str = "version: 1
defaults:
  trace: trace.txt
stages:
  a:
    op: fake
    bytes: A
  b:
    op: fake
    bytes: B
    inputs: [a]
  c:
    op: fake
    bytes: C
    inputs: [b]
";

#[test]
fn unknown_stage_kinds_are_rejected_with_a_suggestion() {
    let f = Fixture::new();
    let yaml = "version: 1\nstages:\n  a:\n    op: fkae\n";
    let err = load_str(&f.ops, &f.path("p.yaml"), yaml, &LoadOptions::default(), None).err().unwrap().to_string();
    assert!(err.contains("p.yaml:4:9: error: stage `a`: unknown op `fkae`"), "{err}");
    assert!(err.contains("did you mean `fake`?"), "{err}");
    assert_eq!(f.ops.get("fkae").err().unwrap().to_string(), "unknown op `fkae` (did you mean `fake`?)");
    // The fake op's schema is checked like any op's.
    let yaml = "version: 1\nstages:\n  a:\n    op: fake\n    sleep_ms: -1\n    byts: x\n";
    let err = load_str(&f.ops, &f.path("p.yaml"), yaml, &LoadOptions::default(), None).err().unwrap().to_string();
    assert!(err.contains("parameter `sleep_ms`: -1 is out of range (expected at least 0)"), "{err}");
    assert!(err.contains("unknown parameter of op `fake` `byts`") && err.contains("did you mean `bytes`?"), "{err}");
}

#[test]
fn planning_says_hit_or_miss_and_why() {
    let f = Fixture::new();
    let p = f.load(CHAIN);
    let plan = f.plan(&p);
    assert_eq!(actions(&p, &plan), ["a", "b", "c"].map(|s| (s.to_string(), Action::Run, "not run before".to_string())));
    f.run(&p, 2, false);
    let plan = f.plan(&p);
    for (id, action, why) in actions(&p, &plan) {
        assert_eq!(action, Action::Hit, "{id}");
        assert!(why.starts_with("cached ") && why.ends_with(" B"), "{id}: {why}");
    }

    // A changed parameter: that stage reruns, and so does what reads it (its input key changed).
    let p2 = f.load(&CHAIN.replace("bytes: B", "bytes: BB"));
    let plan = f.plan(&p2);
    assert_eq!(action_of(&p2, &plan, "a").0, Action::Hit);
    assert_eq!(action_of(&p2, &plan, "b"), (Action::Run, "parameter `bytes` changed: \"B\" -> \"BB\"".to_string()));
    let (action, why) = action_of(&p2, &plan, "c");
    assert_eq!(action, Action::Run);
    assert!(why.starts_with("input `inputs` changed: "), "{why}");

    // Targets select a stage and what it needs; --force reruns a stage and what depends on it.
    let sel = Selection { targets: vec!["b".into()], force: vec![] };
    let plan = make_plan(&p, &f.cache, &sel, VerifyPolicy::Auto).unwrap();
    assert_eq!(actions(&p, &plan).iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let sel = Selection { targets: vec![], force: vec!["b".into()] };
    let plan = make_plan(&p, &f.cache, &sel, VerifyPolicy::Auto).unwrap();
    assert_eq!(action_of(&p, &plan, "a").0, Action::Hit);
    assert_eq!(action_of(&p, &plan, "b"), (Action::Run, "forced (--force)".to_string()));
    assert_eq!(action_of(&p, &plan, "c"), (Action::Run, "forced (--force)".to_string()));
    let sel = Selection { targets: vec!["bb".into()], force: vec![] };
    let err = make_plan(&p, &f.cache, &sel, VerifyPolicy::Auto).err().unwrap().to_string();
    assert!(
        err.contains("target `bb` is not a stage or stage instance") && err.contains("(did you mean `b`?)"),
        "{err}"
    );

    // A damaged artifact is rebuilt, then a hit again.
    let key_a = key_of(&p, &plan, "a");
    std::fs::write(f.cache.artifact_dir(&key_a).join("data.bin"), b"X").unwrap();
    let plan = f.plan(&p);
    let (action, why) = action_of(&p, &plan, "a");
    assert_eq!(action, Action::Rebuild);
    assert!(why.starts_with("cached artifact damaged"), "{why}");
    assert_eq!(action_of(&p, &plan, "b").0, Action::Hit);
    let report = f.run(&p, 2, false);
    assert_eq!(status(&report, "a"), "ran");
    assert_eq!(f.data(&key_a), b"A");
    assert!(actions(&p, &f.plan(&p)).iter().all(|(_, a, _)| *a == Action::Hit));
}

#[test]
fn cache_keys_follow_the_recipe() {
    let f = Fixture::new();
    let keys =
        |yaml: &str| -> Vec<Key> { materials(&f.load(yaml), &f.cache).unwrap().into_iter().map(|(_, k)| k).collect() };
    let base = keys(CHAIN);
    assert_eq!(base, keys(CHAIN), "keys are deterministic");
    assert_eq!(base.iter().collect::<std::collections::HashSet<_>>().len(), 3, "distinct recipes, distinct keys");

    // A parameter in the key changes the key, and the keys downstream of it.
    let changed = keys(&CHAIN.replace("bytes: B", "bytes: BB"));
    assert_eq!(changed[0], base[0]);
    assert_ne!(changed[1], base[1]);
    assert_ne!(changed[2], base[2]);

    // Parameters outside the key (how long it takes, where it traces) change nothing.
    let slow = CHAIN.replace("bytes: B\n", "bytes: B\n    sleep_ms: 5\n").replace("trace.txt", "other.txt");
    assert_eq!(keys(&slow), base);
    // Nor does writing a default out explicitly.
    assert_eq!(keys(&CHAIN.replace("bytes: C\n", "bytes: C\n    fail: false\n")), base);

    // Which parameters entered the key, and the input by key.
    let p = f.load(CHAIN);
    let m = materials(&p, &f.cache).unwrap();
    let (mb, _) = &m[p.instances.iter().position(|i| i.id == "b").unwrap()];
    assert_eq!(mb.op, "fake");
    assert_eq!(mb.params.keys().map(String::as_str).collect::<Vec<_>>(), ["bytes", "fail", "fail_once"]);
    assert_eq!(mb.inputs["inputs"], [base[0].to_string()]);
}

#[test]
fn stages_run_after_their_inputs_and_independent_ones_together() {
    let f = Fixture::new();
    // A diamond: d reads b and c, which both read a.
    let p = f.load(
        "version: 1
defaults:
  trace: trace.txt
stages:
  a: {op: fake, bytes: a}
  b: {op: fake, bytes: b, inputs: [a]}
  c: {op: fake, bytes: c, inputs: [a]}
  d: {op: fake, bytes: d, inputs: [b, c]}
",
    );
    let report = f.run(&p, 4, false);
    assert!(report.stages.iter().all(|s| s.status == "ran"), "{}", report.table());
    let t = f.trace();
    assert!(at(&t, "end a") < at(&t, "start b") && at(&t, "end a") < at(&t, "start c"), "{t:?}");
    assert!(at(&t, "end b") < at(&t, "start d") && at(&t, "end c") < at(&t, "start d"), "{t:?}");
    let plan = f.plan(&p);
    assert_eq!(f.data(&key_of(&p, &plan, "d")), b"dbaca");

    // x and y each wait until the other has started: they finish only if they run at once.
    let f = Fixture::new();
    let p = f.load(
        "version: 1
stages:
  x: {op: fake, bytes: x, touch: x.started, wait_for: y.started}
  y: {op: fake, bytes: y, touch: y.started, wait_for: x.started}
",
    );
    let report = f.run(&p, 2, false);
    assert!(report.stages.iter().all(|s| s.status == "ran"), "{}", report.table());
}

#[test]
fn one_gpu_stage_at_a_time_per_device() {
    let f = Fixture::new();
    let p = f.load(
        "version: 1
defaults:
  trace: trace.txt
  gpu: true
  sleep_ms: 20
stages:
  g:
    op: fake
    foreach: [1, 2, 3]
    bytes: ${item}
",
    );
    let report = f.run(&p, 4, false);
    assert!(report.stages.iter().all(|s| s.status == "ran"), "{}", report.table());
    // Every start is followed by its own end before the next start.
    let t = f.trace();
    assert_eq!(t.len(), 6, "{t:?}");
    for pair in t.chunks(2) {
        let id = pair[0].strip_prefix("start ").unwrap();
        assert_eq!(pair[1], format!("end {id}"), "{t:?}");
    }
}

/// Records what the engine tells a stage's progress display.
#[derive(Default)]
struct Messages(Mutex<Vec<String>>);

impl ProgressSink for Messages {
    fn set_total(&self, _total: u64, _unit: &str) {}
    fn set_position(&self, _pos: u64) {}
    fn message(&self, msg: &str) {
        self.0.lock().unwrap().push(msg.to_string());
    }
}

#[test]
fn two_runs_of_one_key_compute_it_once() {
    let f = Fixture::new();
    let p =
        f.load("version: 1\nstages:\n  s:\n    op: fake\n    bytes: S\n    touch: started\n    wait_for: release\n");
    let plan = f.plan(&p);
    let job = job_for(&p, &plan, 0);
    // A second handle on the same directory, as a second process would open it.
    let other = Cache::open(f.cache.root()).unwrap();
    let waiting = Messages::default();
    let (first, second) = std::thread::scope(|s| {
        let first = s.spawn(|| execute(&f.ops, &f.cache, &job, &NoProgress, &mut std::io::sink()).map(|r| r.outcome));
        wait_for_file(&f.path("started")).unwrap();
        let second = s.spawn(|| execute(&f.ops, &other, &job, &waiting, &mut std::io::sink()).map(|r| r.outcome));
        // The second run is waiting on the lock the first one holds, and then the first is let go.
        let start = Instant::now();
        while !waiting.0.lock().unwrap().iter().any(|m| m.starts_with("waiting for pid")) {
            assert!(start.elapsed() < WAIT_LIMIT, "the second run never waited for the lock");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::fs::write(f.path("release"), b"").unwrap();
        (first.join().unwrap().unwrap(), second.join().unwrap().unwrap())
    });
    assert_eq!((first, second), (Outcome::Ran, Outcome::WaitedHit));
    assert_eq!(f.data(&job.key), b"S");
    // Once published, the key is a plain hit.
    let again = execute(&f.ops, &other, &job, &NoProgress, &mut std::io::sink()).unwrap();
    assert_eq!(again.outcome, Outcome::Hit);
}

#[test]
fn a_failure_skips_its_dependents_and_running_stages_finish() {
    // bad and slow start together; bad fails while slow is still running.
    let f = Fixture::new();
    let p = f.load(
        "version: 1
stages:
  bad: {op: fake, fail: true, touch: bad.started}
  child: {op: fake, bytes: c, inputs: [bad]}
  grandchild: {op: fake, bytes: g, inputs: [child]}
  slow: {op: fake, bytes: s, wait_for: bad.started}
",
    );
    let report = f.run(&p, 2, false);
    assert_eq!(report.failed, 1, "{}", report.table());
    let bad = report.stages.iter().find(|s| s.instance == "bad").unwrap();
    assert_eq!(bad.status, "failed");
    assert!(bad.error.as_deref().unwrap().contains("fake failure in bad"), "{:?}", bad.error);
    for (id, needs) in [("child", "bad"), ("grandchild", "bad")] {
        let s = report.stages.iter().find(|s| s.instance == id).unwrap();
        assert_eq!((s.status.as_str(), s.error.clone()), ("skipped", Some(format!("needs {needs} which failed"))));
    }
    // What was running when the failure came finishes and is cached.
    assert_eq!(status(&report, "slow"), "ran");
    let plan = f.plan(&p);
    assert!(f.cache.lookup(&key_of(&p, &plan, "bad")).unwrap().is_none(), "a failed stage publishes nothing");
    assert_eq!(action_of(&p, &plan, "slow").0, Action::Hit);
    // The run record on disk says the same.
    let record: Value = serde_json::from_slice(&std::fs::read(report.record_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["failed"], 1);
}

/// Independent stages around a failing one, run one at a time (in plan order).
const FAILING: &str = "version: 1
stages:
  one: {op: fake, bytes: '1'}
  bad: {op: fake, fail: true}
  child: {op: fake, bytes: c, inputs: [bad]}
  two: {op: fake, bytes: '2'}
  three: {op: fake, bytes: '3'}
";

#[test]
fn a_failure_stops_new_work_unless_keep_going() {
    let f = Fixture::new();
    let p = f.load(FAILING);
    let order: Vec<String> = f.plan(&p).items.iter().map(|i| p.instances[i.idx].id.clone()).collect();
    let bad_at = order.iter().position(|id| id == "bad").unwrap();
    let report = f.run(&p, 1, false);
    let mut not_run = 0;
    for (pos, id) in order.iter().enumerate() {
        let want = match id.as_str() {
            "bad" => "failed",
            "child" => "skipped",
            _ if pos < bad_at => "ran",
            _ => "not run",
        };
        not_run += usize::from(want == "not run");
        assert_eq!(status(&report, id), want, "{id} in plan order {order:?}");
    }
    assert!(not_run > 0, "the fixture must plan an independent stage after `bad`: {order:?}");
    assert_eq!(report.failed, 1);

    // --keep-going: independent work continues; what needs the failure is still skipped.
    let f = Fixture::new();
    let p = f.load(FAILING);
    let report = f.run(&p, 1, true);
    assert_eq!(report.failed, 1);
    for (id, want) in [("one", "ran"), ("bad", "failed"), ("child", "skipped"), ("two", "ran"), ("three", "ran")] {
        assert_eq!(status(&report, id), want, "{id}");
    }
}

#[test]
fn a_rerun_resumes_from_the_cache() {
    let f = Fixture::new();
    let p = f.load(CHAIN);
    let first = f.run(&p, 2, false);
    assert!(first.stages.iter().all(|s| s.status == "ran"));
    assert_eq!(f.trace().len(), 6);

    // A second run is all hits and runs nothing.
    let second = f.run(&p, 2, false);
    assert!(second.stages.iter().all(|s| s.status == "hit"), "{}", second.table());
    assert_eq!(f.trace().len(), 6);

    // With b's artifact deleted, only b is recomputed. c stays a hit: keys come from
    // recipes, not output bytes, so c's key (and artifact) is still valid.
    let plan = f.plan(&p);
    let key_b = key_of(&p, &plan, "b");
    f.cache.remove(&key_b).unwrap();
    let plan = f.plan(&p);
    assert_eq!(
        action_of(&p, &plan, "b"),
        (Action::Run, "same recipe as last time, but the artifact is no longer in the cache".to_string())
    );
    assert_eq!(action_of(&p, &plan, "a").0, Action::Hit);
    assert_eq!(action_of(&p, &plan, "c").0, Action::Hit);
    let third = f.run(&p, 2, false);
    assert_eq!(
        third.stages.iter().map(|s| (s.instance.as_str(), s.status.as_str())).collect::<Vec<_>>(),
        [("a", "hit"), ("b", "ran"), ("c", "hit")]
    );
    assert_eq!(f.trace()[6..], ["start b", "end b"]);
    assert_eq!(f.data(&key_b), b"BA");

    // Deleting the root as well: every stage downstream of a recomputed one stays a hit too.
    let key_a = key_of(&p, &plan, "a");
    f.cache.remove(&key_a).unwrap();
    let fourth = f.run(&p, 2, false);
    assert_eq!(fourth.stages.iter().map(|s| s.status.as_str()).collect::<Vec<_>>(), ["ran", "hit", "hit"]);
}

#[test]
fn saved_progress_is_resumed() {
    let f = Fixture::new();
    let p = f.load("version: 1\nstages:\n  a:\n    op: fake\n    bytes: A\n  r:\n    op: fake\n    bytes: R\n    fail_once: true\n    inputs: [a]\n");
    let report = f.run(&p, 1, false);
    assert_eq!(status(&report, "r"), "failed");
    let plan = f.plan(&p);
    assert_eq!(action_of(&p, &plan, "a").0, Action::Hit);
    assert_eq!(action_of(&p, &plan, "r"), (Action::Resume, "saved progress from an interrupted run".to_string()));
    let report = f.run(&p, 1, false);
    assert_eq!(status(&report, "r"), "resumed");
    assert_eq!(f.data(&key_of(&p, &plan, "r")), b"RA");
    // The saved progress is gone once the artifact is published.
    assert_eq!(action_of(&p, &f.plan(&p), "r").0, Action::Hit);
}

/// The layering these tests rely on: the engine's modules never name the stage
/// kinds, and each layer uses only the layers below it (engine <- pipeline <- exec).
#[test]
fn the_engine_does_not_depend_on_the_stage_kinds() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers: [(&str, &[&str]); 3] = [
        ("engine", &["crate::ops", "crate::pipeline", "crate::exec", "crate::cli"]),
        ("pipeline", &["crate::ops", "crate::exec", "crate::cli"]),
        ("exec", &["crate::ops", "crate::cli"]),
    ];
    for (dir, forbidden) in layers {
        for entry in std::fs::read_dir(src.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for f in forbidden {
                assert!(!text.contains(f), "{} uses {f}", path.display());
            }
        }
    }
}
