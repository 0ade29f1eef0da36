//! Feature dashboards (`inspect_features`) and feature journeys
//! (`feature_journey`) on a small checkpoint-matching run of the embedded toy
//! LM family: the pages exist for every chosen feature, colour each token by
//! the activation the tables hold, sample the activation intervals they claim,
//! follow the match result step by step (linking each feature's dashboard when
//! given the dashboards), and reference nothing outside
//! themselves; in headless Chromium (when present; required under CI=true) the
//! indexes sort and search, every page and the plot report linking them run
//! without console errors or network requests, and screenshots are written to
//! look at; bad inputs fail naming the parameter.

#[path = "support/browser.rs"]
mod browser;

use saepipe::ops::table::{Table, read_parquet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn saepipe(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_saepipe"));
    c.current_dir(dir)
        .env_remove("SAEPIPE_CACHE")
        .env_remove("SAEPIPE_REMOTE")
        .env("SAEPIPE_QUIET", "1")
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

/// The artifact directory of stage instance `stage`.
fn artifact(cache: &Path, stage: &str) -> PathBuf {
    for e in std::fs::read_dir(cache.join("artifacts")).unwrap() {
        let dir = e.unwrap().path();
        let Ok(bytes) = std::fs::read(dir.join("_manifest.json")) else { continue };
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if m["stage"] == stage {
            return dir;
        }
    }
    panic!("no artifact of stage {stage}");
}

const PIPELINE: &str = r#"
version: 1
name: dashboards
vars:
  model: toy/toy-grammar
  checkpoints: [step0, step256, step2000]
  hook: blocks.1.hook_resid_pre
defaults:
  train_sae:
    hook: ${hook}
    architecture: topk
    d_sae: 64
    k: 4
    lr: 0.002
    batch_size: 512
    total_tokens: 65536
  feature_journey:
    matches: match
    reference: reference
    reference_activations: acts[step2000]
    saes: train[*]
    activations: acts[*]
    tokenizer: ${model}@step2000
    n_tokens: 8192
stages:
  tokens:
    op: tokenize
    corpus: CORPUS
    tokenizer: ${model}@step2000
    context_size: 64
    max_tokens: 16384
  acts:
    op: collect_activations
    foreach: ${checkpoints}
    model: ${model}@${item}
    tokens: tokens
    hooks:
      - ${hook}
  train:
    op: train_sae
    foreach: ${checkpoints}
    activations: acts
    seed: 1
  reference:
    op: train_sae
    activations: acts[step2000]
    seed: 2
  match:
    op: match_features
    reference: reference
    reference_activations: acts[step2000]
    saes: train[*]
    activations: acts[*]
    n_tokens: 8192
  features:
    op: inspect_features
    sae: reference
    activations: acts[step2000]
    tokenizer: ${model}@step2000
    model: ${model}@step2000
    matches: match
    n_features: 6
    n_tokens: 8192
EXTRA"#;

const JOURNEY: &str = r#"
  journey:
    op: feature_journey
    n_features: 3
  journey_dash:
    op: feature_journey
    dashboards: features
  report:
    op: plot
    matches: [match]
    training: train[*]
    features: [features, journey]
"#;

fn pipeline(extra: &str) -> String {
    let corpus = repo().join("models/toy-grammar/corpus-eval.jsonl");
    PIPELINE.replace("CORPUS", corpus.to_str().unwrap()).replace("EXTRA", extra)
}

/// `data-act` values of every token span of a page, in order, per context line.
fn page_contexts(html: &str) -> Vec<Vec<f32>> {
    html.split("<div class=\"ctx\">")
        .skip(1)
        .map(|ctx| {
            let line = ctx.split("</div>").next().unwrap();
            line.split("data-act=\"").skip(1).map(|s| s.split('"').next().unwrap().parse::<f32>().unwrap()).collect()
        })
        .collect()
}

/// Every context's activations from contexts.parquet, by example id.
fn table_contexts(contexts: &Table) -> BTreeMap<i64, Vec<f32>> {
    let (ex, act) = (contexts.f64("example").unwrap(), contexts.f64("activation").unwrap());
    let mut out: BTreeMap<i64, Vec<f32>> = BTreeMap::new();
    for i in 0..contexts.rows() {
        out.entry(ex[i] as i64).or_default().push(act[i] as f32);
    }
    out
}

fn assert_self_contained(path: &Path) {
    let html = std::fs::read_to_string(path).unwrap();
    for needle in ["http://", "https://", "src=", "@import", "url("] {
        assert!(!html.contains(needle), "{} references something external ({needle})", path.display());
    }
    for href in html.split("href=\"").skip(1).map(|s| s.split('"').next().unwrap()) {
        assert!(
            !href.contains(':') && !href.starts_with('/') && path.parent().unwrap().join(href).is_file(),
            "{}: link {href} leaves the artifact or points nowhere",
            path.display()
        );
    }
}

#[test]
fn dashboards_and_journeys_on_a_small_checkpoint_match() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("p.yaml"), pipeline(JOURNEY)).unwrap();
    ok(saepipe(t.path()).args(["run", "p.yaml"]).output().unwrap());
    let cache = t.path().join("cache");
    let feats = artifact(&cache, "features");

    // A page per chosen feature, listed in the index with its matched similarity.
    let examples = read_parquet(&feats.join("examples.parquet")).unwrap();
    let contexts = read_parquet(&feats.join("contexts.parquet")).unwrap();
    let histograms = read_parquet(&feats.join("histograms.parquet")).unwrap();
    let chosen: std::collections::BTreeSet<i64> =
        histograms.f64("feature").unwrap().iter().map(|&f| f as i64).collect();
    assert_eq!(chosen.len(), 6, "{chosen:?}");
    let index = std::fs::read_to_string(feats.join("dashboards/index.html")).unwrap();
    assert!(index.contains("similarity") && index.contains("id=\"q\""), "index lacks similarity or search");
    assert_self_contained(&feats.join("dashboards/index.html"));
    for f in &chosen {
        let page = feats.join(format!("dashboards/feature_{f}.html"));
        assert!(page.is_file(), "{}", page.display());
        assert!(index.contains(&format!("href=\"feature_{f}.html\"")), "feature {f} not in the index");
        assert_self_contained(&page);
    }

    // The coloured tokens of a page are the activations of contexts.parquet,
    // in page order (top examples, then intervals from the highest down), and
    // the focus token's activation is the example's.
    let (ex_id, ex_feature, ex_sample, ex_interval, ex_act) = (
        examples.f64("example").unwrap(),
        examples.f64("feature").unwrap(),
        examples.strings("sample").unwrap(),
        examples.f64("interval").unwrap(),
        examples.f64("activation").unwrap(),
    );
    let (lo, hi) = (examples.f64("interval_lo").unwrap(), examples.f64("interval_hi").unwrap());
    let by_example = table_contexts(&contexts);
    let offsets = contexts.f64("offset").unwrap();
    let cx_ex = contexts.f64("example").unwrap();
    let mut interval_samples = 0;
    for f in &chosen {
        let html = std::fs::read_to_string(feats.join(format!("dashboards/feature_{f}.html"))).unwrap();
        let shown = page_contexts(&html);
        let mut rows: Vec<usize> = (0..examples.rows()).filter(|&i| ex_feature[i] as i64 == *f).collect();
        rows.sort_by_key(|&i| (ex_sample[i] != "top", -(ex_interval[i] as i64), ex_id[i] as i64));
        let want: Vec<Vec<f32>> = rows.iter().map(|&i| by_example[&(ex_id[i] as i64)].clone()).collect();
        assert_eq!(shown, want, "feature {f}: page activations differ from contexts.parquet");
        for &i in &rows {
            let focus = (0..contexts.rows()).find(|&j| cx_ex[j] == ex_id[i] && offsets[j] == 0.0).unwrap();
            let a = contexts.f64("activation").unwrap()[focus];
            assert!(
                (a - ex_act[i]).abs() <= 1e-4 * ex_act[i].abs().max(1.0),
                "example {}: {a} vs {}",
                ex_id[i],
                ex_act[i]
            );
            assert!(ex_act[i] > 0.0);
            if ex_sample[i] == "interval" {
                interval_samples += 1;
                assert!(
                    lo[i] <= ex_act[i] && ex_act[i] <= hi[i],
                    "sample {} outside [{}, {}]",
                    ex_act[i],
                    lo[i],
                    hi[i]
                );
            }
        }
    }
    assert!(interval_samples >= 6, "only {interval_samples} interval samples");

    // The journey agrees with the match, step by step.
    let journey = artifact(&cache, "journey");
    let pairs = read_parquet(&artifact(&cache, "match").join("pairs.parquet")).unwrap();
    let j = read_parquet(&journey.join("journey.parquet")).unwrap();
    let (jf, jc, jm, js, jstep) = (
        j.f64("reference_feature").unwrap(),
        j.strings("coder").unwrap(),
        j.f64("matched_feature").unwrap(),
        j.f64("similarity").unwrap(),
        j.f64("step").unwrap(),
    );
    assert_eq!(j.rows(), 3 * 3, "3 followed features x 3 checkpoints");
    let (pc, pf, pm, ps) = (
        pairs.strings("coder").unwrap(),
        pairs.f64("reference_feature").unwrap(),
        pairs.f64("matched_feature").unwrap(),
        pairs.f64("similarity").unwrap(),
    );
    for i in 0..j.rows() {
        let k = (0..pairs.rows()).find(|&k| pc[k] == jc[i] && pf[k] == jf[i]).expect("pair of the journey row");
        assert_eq!(jm[i], pm[k], "row {i}");
        assert!(js[i] == ps[k] || (js[i].is_nan() && ps[k].is_nan()), "row {i}");
        let want_step: f64 = jc[i].trim_start_matches("train[step").trim_end_matches(']').parse().unwrap();
        assert_eq!(jstep[i], want_step);
    }
    let followed: std::collections::BTreeSet<i64> = jf.iter().map(|&f| f as i64).collect();
    assert_self_contained(&journey.join("journey/index.html"));
    for f in &followed {
        let page = journey.join(format!("journey/feature_{f}.html"));
        assert_self_contained(&page);
        let html = std::fs::read_to_string(&page).unwrap();
        // Columns ordered by step, the reference last.
        let pos: Vec<usize> = ["train[step0]", "train[step256]", "train[step2000]", "reference: reference"]
            .iter()
            .map(|h| html.find(&format!("{h}</h3>")).unwrap_or_else(|| panic!("{h} missing from {}", page.display())))
            .collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    }

    // Journeys given the dashboards follow their features and link each one's page.
    let journey_dash = artifact(&cache, "journey_dash");
    let followed_dash: std::collections::BTreeSet<i64> = read_parquet(&journey_dash.join("journey.parquet"))
        .unwrap()
        .f64("reference_feature")
        .unwrap()
        .iter()
        .map(|&f| f as i64)
        .collect();
    assert_eq!(followed_dash, chosen, "the journeys follow the dashboards' features");
    let feats_key = feats.file_name().unwrap().to_str().unwrap();
    for f in &followed_dash {
        let page = journey_dash.join(format!("journey/feature_{f}.html"));
        let html = std::fs::read_to_string(&page).unwrap();
        let href = format!("../../../artifacts/{feats_key}/dashboards/feature_{f}.html");
        assert!(html.contains(&format!("href=\"{href}\"")), "{}: no link to its dashboard", page.display());
        assert!(page.parent().unwrap().join(&href).is_file(), "{href} does not resolve from {}", page.display());
    }

    // The plot report links the dashboards and the journeys, inside the cache.
    let report = artifact(&cache, "report").join("report.html");
    let html = std::fs::read_to_string(&report).unwrap();
    for (dir, rel) in [(&feats, "dashboards/index.html"), (&journey, "journey/index.html")] {
        let key = dir.file_name().unwrap().to_str().unwrap();
        let href = format!("href=\"../../artifacts/{key}/{rel}\"");
        assert!(html.contains(&href), "the report does not link {rel} ({href})");
    }

    // In Chromium: every page's script runs and passes its self-test, logs
    // nothing, and requests nothing outside the file.
    if let Some(bin) = browser::chromium_or_skip("feature_dashboards (browser part)") {
        let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("feature_dashboards");
        let _ = std::fs::remove_dir_all(&scratch);
        let (f0, j0) = (chosen.iter().next().unwrap(), followed.iter().next().unwrap());
        let pages = [
            feats.join("dashboards/index.html"),
            feats.join(format!("dashboards/feature_{f0}.html")),
            journey.join("journey/index.html"),
            journey.join(format!("journey/feature_{j0}.html")),
            report.clone(),
            journey_dash.join(format!("journey/feature_{f0}.html")),
        ];
        for page in &pages {
            let run = browser::load(&bin, &format!("file://{}#selftest", page.display()), &scratch);
            let name = page.display();
            assert!(run.console.is_empty(), "{name} logged to the console:\n{}", run.console.join("\n"));
            assert_eq!(run.requests, Vec::<String>::new(), "{name} made network requests");
            assert!(run.dom.contains("data-interactive=\"ready\""), "{name}: the inline script did not run");
            assert!(run.dom.contains("data-selftest=\"ok\""), "{name}: self-test failed: {:?}", {
                let i = run.dom.find("data-selftest").unwrap_or(0);
                &run.dom[i..(i + 200).min(run.dom.len())]
            });
        }
        let shots =
            [(&pages[1], "dashboard.png", 1800), (&pages[3], "journey.png", 1100), (&pages[4], "report.png", 6000)];
        for (page, shot, h) in shots {
            browser::screenshot(&bin, &format!("file://{}", page.display()), &scratch.join(shot), 1300, h, &scratch);
        }
        eprintln!("screenshots: {}", scratch.display());
    }

    // Bad inputs fail naming the parameter.
    let bad = [
        ("sae: reference", "sae: train[step0]", "parameter `matches`"),
        ("n_features: 6\n", "n_features: 6\n    features: [3, 640]\n", "parameter `features`"),
    ];
    for (from, to, want) in bad {
        let dir = t.path().join(format!("bad{}", want.len() + from.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut yaml = pipeline("").replacen(from, to, 1);
        if to.contains("features:") {
            // An explicit list applies without `matches`.
            yaml = yaml.replace("    matches: match\n", "");
        }
        std::fs::write(dir.join("p.yaml"), yaml).unwrap();
        let out = saepipe(&dir).args(["run", "p.yaml", "--cache-dir", cache.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{want}: {err}");
    }
    let dash_bad = JOURNEY.replace("dashboards: features", "dashboards: match");
    let dir = t.path().join("baddash");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.yaml"), pipeline(&dash_bad)).unwrap();
    let out = saepipe(&dir).args(["run", "p.yaml", "--cache-dir", cache.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("parameter `dashboards`"), "{err}");
    let journey_bad = JOURNEY.replace("n_features: 3", "features: [1000]");
    let dir = t.path().join("badjourney");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p.yaml"), pipeline(&journey_bad)).unwrap();
    let out = saepipe(&dir).args(["run", "p.yaml", "--cache-dir", cache.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("parameter `features`"), "{err}");
}
