//! Table-driven validation tests: each malformed pipeline must produce the listed
//! messages (with file:line:column, stage and parameter), and all errors of a
//! file are reported together.

use saepipe::ops::registry;
use saepipe::pipeline::spec::{LoadError, LoadOptions, load_str};
use std::path::Path;

struct Case {
    name: &'static str,
    yaml: &'static str,
    sets: &'static [&'static str],
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "yaml syntax",
        yaml: "version: 1\nstages: [a, b\n",
        sets: &[],
        expect: &["p.yaml:3:1: error: invalid YAML"],
    },
    Case {
        name: "reference in a flow list",
        yaml: "version: 1\nstages:\n  a:\n    op: command\n    run: x\n  b:\n    op: plot\n    training: [a[0]]\n",
        sets: &[],
        expect: &["p.yaml:8:", "quote the item"],
    },
    Case {
        name: "not a mapping",
        yaml: "- a\n- b\n",
        sets: &[],
        expect: &["p.yaml:1:1: error: a pipeline file must be a mapping"],
    },
    Case {
        name: "missing version",
        yaml: "stages:\n  a: {op: command, run: 'true'}\n",
        sets: &[],
        expect: &["p.yaml:1:1: error: missing `version`"],
    },
    Case {
        name: "bad version",
        yaml: "version: 2\nstages:\n  a: {op: command, run: 'true'}\n",
        sets: &[],
        expect: &["p.yaml:1:10: error: `version`: unsupported pipeline version 2"],
    },
    Case {
        name: "unknown top-level key",
        yaml: "version: 1\nstagse:\n  a: {op: command, run: 'true'}\n",
        sets: &[],
        expect: &["p.yaml:2:1: error: unknown top-level key `stagse`", "did you mean `stages`?", "missing `stages`"],
    },
    Case {
        name: "empty stages",
        yaml: "version: 1\nstages: {}\n",
        sets: &[],
        expect: &["p.yaml:2:9: error: `stages`: the pipeline has no stages"],
    },
    Case {
        name: "stage not a mapping",
        yaml: "version: 1\nstages:\n  a: command\n",
        sets: &[],
        expect: &["p.yaml:3:6: error: stage `a`: a stage must be a mapping with an `op`, found a string"],
    },
    Case {
        name: "missing op",
        yaml: "version: 1\nstages:\n  a:\n    run: 'true'\n",
        sets: &[],
        expect: &["p.yaml:3:3: error: stage `a`: missing `op`"],
    },
    Case {
        name: "unknown op",
        yaml: "version: 1\nstages:\n  a:\n    op: comand\n",
        sets: &[],
        expect: &["p.yaml:4:9: error: stage `a`: unknown op `comand`", "did you mean `command`?"],
    },
    Case {
        name: "unknown parameter",
        yaml: "version: 1\nstages:\n  a:\n    op: command\n    rn: 'true'\n",
        sets: &[],
        expect: &[
            "p.yaml:5:5: error: stage `a`: unknown parameter of op `command` `rn`",
            "did you mean `run`?",
            "p.yaml:3:3: error: stage `a`, parameter `run`: missing required parameter",
        ],
    },
    Case {
        name: "wrong type",
        yaml: "version: 1\nstages:\n  a:\n    op: command\n    run: [1, 2]\n",
        sets: &[],
        expect: &["p.yaml:5:10: error: stage `a`, parameter `run`: expected a string, found a list"],
    },
    Case {
        name: "integer expected",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    shards: many\n",
        sets: &[],
        expect: &["p.yaml:5:13: error: stage `a`, parameter `shards`: expected an integer, found the string `many`"],
    },
    Case {
        name: "undefined variable",
        yaml: "version: 1\nvars:\n  count: 3\nstages:\n  a:\n    op: debug_shards\n    shards: ${cuont}\n",
        sets: &[],
        expect: &[
            "p.yaml:7:13: error: stage `a`, parameter `shards`: undefined variable `cuont` (did you mean `count`?)",
        ],
    },
    Case {
        name: "item outside foreach",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    seed: ${item}\n",
        sets: &[],
        expect: &["parameter `seed`: `${item}` is only defined inside a stage with `foreach`"],
    },
    Case {
        name: "unknown stage reference",
        yaml: "version: 1\nstages:\n  tokens:\n    op: debug_shards\n  b:\n    op: debug_shards\n    inputs: [tokns]\n",
        sets: &[],
        expect: &["p.yaml:7:14: error: stage `b`, parameter `inputs`: unknown stage `tokns`", "did you mean `tokens`?"],
    },
    Case {
        name: "unknown instance key",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    foreach: [x1, x2]\n    seed: 1\n  b:\n    op: debug_shards\n    inputs: ['a[x3]']\n",
        sets: &[],
        expect: &[
            "p.yaml:9:14: error: stage `b`, parameter `inputs`: unknown instance of stage `a` `x3`",
            "did you mean `x1`?",
        ],
    },
    Case {
        name: "ambiguous implicit reference",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    foreach: [x1, x2]\n  b:\n    op: debug_shards\n    inputs: a\n",
        sets: &[],
        expect: &[
            "p.yaml:8:13: error: stage `b`, parameter `inputs`: stage `a` has 2 instances; say which: `a[KEY]`, or `a[*]` for all of them",
            "instances: x1, x2",
        ],
    },
    Case {
        name: "key on a single stage",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n  b:\n    op: debug_shards\n    inputs: ['a[x]']\n",
        sets: &[],
        expect: &["stage `a` has no `foreach`/`matrix`, so it has no instance `[x]`"],
    },
    Case {
        name: "unknown output",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n  b:\n    op: debug_shards\n    inputs: [a.data.bn]\n",
        sets: &[],
        expect: &["unknown output of op `debug_shards` `data.bn`", "did you mean `data.bin`?"],
    },
    Case {
        name: "no named outputs",
        yaml: "version: 1\nstages:\n  a:\n    op: command\n    run: 'true'\n  b:\n    op: command\n    run: 'true'\n    inputs: {x: a.out}\n",
        sets: &[],
        expect: &["op `command` of stage `a` has no named outputs"],
    },
    Case {
        name: "cycle",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    inputs: [b]\n  b:\n    op: debug_shards\n    inputs: [a]\n",
        sets: &[],
        expect: &["p.yaml:3:3: error: stage `a`: dependency cycle: a -> b -> a"],
    },
    Case {
        name: "self reference",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    inputs: [a]\n",
        sets: &[],
        expect: &["stage `a`, parameter `inputs`: a stage cannot use its own output"],
    },
    Case {
        name: "duplicate key",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n  a:\n    op: debug_shards\n",
        sets: &[],
        expect: &["p.yaml:5:3: error: duplicate key `a` (first defined at line 3)"],
    },
    Case {
        name: "foreach not a list",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    foreach: 3\n",
        sets: &[],
        expect: &[
            "p.yaml:5:14: error: stage `a`, parameter `foreach`: expected a list to iterate over, found an integer",
        ],
    },
    Case {
        name: "foreach and matrix",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    foreach: [1]\n    matrix: {k: [1]}\n",
        sets: &[],
        expect: &["stage `a`, parameter `matrix`: a stage takes `foreach` or `matrix`, not both"],
    },
    Case {
        name: "duplicate instance keys",
        yaml: "version: 1\nstages:\n  a:\n    op: debug_shards\n    foreach: [1, 1]\n",
        sets: &[],
        expect: &["two instances would both be named `a[1]`"],
    },
    Case {
        name: "invalid stage name",
        yaml: "version: 1\nstages:\n  my stage:\n    op: debug_shards\n",
        sets: &[],
        expect: &["p.yaml:3:3: error: stage `my stage`: stage names may contain only letters, digits"],
    },
    Case {
        name: "set unknown variable",
        yaml: "version: 1\nvars:\n  steps: 3\nstages:\n  a:\n    op: debug_shards\n    shards: ${steps}\n",
        sets: &["stpes=4"],
        expect: &["--set #1:1:1: error: unknown variable `stpes`", "did you mean `steps`?"],
    },
    Case {
        name: "set malformed",
        yaml: "version: 1\nvars:\n  steps: 3\nstages:\n  a:\n    op: debug_shards\n",
        sets: &["steps"],
        expect: &["`steps` is not of the form NAME=VALUE"],
    },
    Case {
        name: "unknown default",
        yaml: "version: 1\ndefaults:\n  shardz: 3\nstages:\n  a:\n    op: debug_shards\n",
        sets: &[],
        expect: &[
            "p.yaml:3:3: error: `defaults`: unknown default (not a parameter of any op in this pipeline, nor an op name) `shardz`",
            "did you mean `shards`?",
        ],
    },
    Case {
        name: "unknown per-op default",
        yaml: "version: 1\ndefaults:\n  debug_shards: {sed: 3}\nstages:\n  a:\n    op: debug_shards\n",
        sets: &[],
        expect: &["`defaults.debug_shards`: unknown parameter of op `debug_shards` `sed`", "did you mean `seed`?"],
    },
    Case {
        name: "list element type",
        yaml: "version: 1\nstages:\n  a:\n    op: command\n    run: x\n    scripts: [ok.sh, {a: 2}]\n",
        sets: &[],
        expect: &[
            "p.yaml:6:22: error: stage `a`, parameter `scripts`: expected a path to a file or directory, found a mapping",
        ],
    },
    Case {
        name: "string interpolation of a list",
        yaml: "version: 1\nvars:\n  xs: [1, 2]\nstages:\n  a:\n    op: command\n    run: echo ${xs}\n",
        sets: &[],
        expect: &["`${xs}` is a list and cannot be inserted into the string `echo ${xs}`"],
    },
    Case {
        name: "tag on a mapping",
        yaml: "version: 1\nvars: !!map {a: 1}\nstages:\n  a: {op: command, run: 'true'}\n",
        sets: &[],
        expect: &["p.yaml:2:7: error: YAML tags are not supported (found `!!map`)"],
    },
    Case {
        name: "tag on a flow mapping",
        yaml: "version: 1\nstages:\n  a: !foo {op: command, run: 'true'}\n",
        sets: &[],
        expect: &["p.yaml:3:6: error: YAML tags are not supported (found `!foo`)"],
    },
    Case {
        name: "tag on a sequence",
        yaml: "version: 1\nstages:\n  a:\n    op: command\n    run: 'true'\n    scripts: !custom [a.sh]\n",
        sets: &[],
        expect: &["p.yaml:6:14: error: YAML tags are not supported (found `!custom`)"],
    },
    Case {
        name: "alias bomb",
        yaml: "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\ni: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n",
        sets: &[],
        expect: &["p.yaml:6:36: error: the document expands past the limit of 1000000 YAML nodes"],
    },
    Case {
        name: "negative max_tokens",
        yaml: "version: 1\nstages:\n  t:\n    op: tokenize\n    corpus: c.jsonl\n    tokenizer: tok.json\n    max_tokens: -5\n",
        sets: &[],
        expect: &["p.yaml:7:17: error: stage `t`, parameter `max_tokens`: -5 is out of range (expected at least 1)"],
    },
    Case {
        name: "huge context_size",
        yaml: "version: 1\nstages:\n  t:\n    op: tokenize\n    corpus: c.jsonl\n    tokenizer: tok.json\n    context_size: 1099511627776\n",
        sets: &[],
        expect: &[
            "p.yaml:7:19: error: stage `t`, parameter `context_size`: 1099511627776 is out of range (expected 2 to 1048576)",
        ],
    },
    Case {
        name: "train_sae sizes out of range",
        yaml: "version: 1\nvars:\n  bs: 0\nstages:\n  a:\n    op: debug_shards\n  s:\n    op: train_sae\n    activations: a\n    hook: h\n    d_sae: 1000000000000\n    k: 0\n    batch_size: ${bs}\n    total_tokens: -1\n    checkpoint_every: 0\n    log_every: 0\n",
        sets: &[],
        expect: &[
            "p.yaml:11:12: error: stage `s`, parameter `d_sae`: 1000000000000 is out of range (expected 1 to 16777216)",
            "p.yaml:12:8: error: stage `s`, parameter `k`: 0 is out of range",
            "parameter `batch_size`: 0 is out of range (expected 1 to 16777216)",
            "p.yaml:14:19: error: stage `s`, parameter `total_tokens`: -1 is out of range (expected at least 1)",
            "parameter `checkpoint_every`: 0 is out of range",
            "parameter `log_every`: 0 is out of range",
        ],
    },
    Case {
        name: "shard_tokens out of range",
        yaml: "version: 1\nstages:\n  t:\n    op: debug_shards\n  c:\n    op: collect_activations\n    model: toy/x@1\n    tokens: t\n    hooks: [h]\n    shard_tokens: 0\n    batch_size: -3\n",
        sets: &[],
        expect: &[
            "p.yaml:10:19: error: stage `c`, parameter `shard_tokens`: 0 is out of range (expected at least 1)",
            "parameter `batch_size`: -3 is out of range",
        ],
    },
    Case {
        name: "all errors of a file at once",
        yaml: "version: 1\nstages:\n  a:\n    op: comand\n  b:\n    op: debug_shards\n    shards: x\n  c:\n    op: debug_shards\n    inputs: [zz]\n",
        sets: &[],
        expect: &["unknown op `comand`", "expected an integer", "unknown stage `zz`", "3 errors in p.yaml"],
    },
];

#[test]
fn malformed_pipelines_report_precise_errors() {
    assert!(CASES.len() >= 20);
    let mut failures = Vec::new();
    for case in CASES {
        let opts = LoadOptions { sets: case.sets.iter().map(|s| s.to_string()).collect(), params_file: None };
        match load_str(&registry(), Path::new("p.yaml"), case.yaml, &opts, None) {
            Ok(_) => failures.push(format!("[{}] loaded without error", case.name)),
            Err(LoadError::Io(..)) => failures.push(format!("[{}] unexpected I/O error", case.name)),
            Err(e @ LoadError::Invalid(_)) => {
                let text = e.to_string();
                for want in case.expect {
                    if !text.contains(want) {
                        failures.push(format!("[{}] missing `{want}` in:\n{text}\n", case.name));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_pipeline_expands_foreach_matrix_and_fan_in() {
    let yaml = r#"
version: 1
name: demo
vars:
  steps: [s1, s2, s3]
  base_seed: 7
defaults:
  shard_bytes: 64
stages:
  tokens:
    op: debug_shards
    seed: ${base_seed}
  acts:
    op: debug_shards
    foreach: ${steps}
    seed: 1
    inputs: [tokens]
  train:
    op: debug_shards
    foreach: ${steps}
    inputs: [acts]          # same key as this instance
  sweep:
    op: debug_shards
    matrix: {k: [16, 32], lr: [0.001]}
    seed: ${matrix.k}
  match:
    op: debug_shards
    inputs: ['train[s3]', 'train[*].data.bin']
"#;
    let p = load_str(&registry(), Path::new("p.yaml"), yaml, &LoadOptions::default(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = p.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "tokens",
            "acts[s1]",
            "acts[s2]",
            "acts[s3]",
            "train[s1]",
            "train[s2]",
            "train[s3]",
            "sweep[k=16,lr=0.001]",
            "sweep[k=32,lr=0.001]",
            "match"
        ]
    );
    let idx = p.instance_index();
    let train_s2 = &p.instances[idx["train[s2]"]];
    assert_eq!(train_s2.inputs[0].targets[0].instance, idx["acts[s2]"]);
    assert_eq!(train_s2.params.0["shard_bytes"], 64);
    assert_eq!(p.instances[idx["sweep[k=32,lr=0.001]"]].params.0["seed"], 32);
    let m = &p.instances[idx["match"]];
    assert_eq!(m.inputs[0].targets.len(), 4);
    assert_eq!(m.inputs[0].targets[3].output.as_deref(), Some("data.bin"));
    // --set overrides typed values.
    let opts = LoadOptions { sets: vec!["steps=[a, s3]".into()], params_file: None };
    let p = load_str(&registry(), Path::new("p.yaml"), yaml, &opts, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.instances.iter().any(|i| i.id == "train[a]"));
}

#[test]
fn alias_bomb_fails_fast() {
    let mut yaml = String::from(
        "version: 1\nstages:\n  a: {op: command, run: 'true'}\nvars:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        yaml.push_str(&format!("  {}: &{} [{}]\n", w[1], w[1], vec![format!("*{}", w[0]); 10].join(", ")));
    }
    let err = load_str(&registry(), Path::new("p.yaml"), &yaml, &LoadOptions::default(), None)
        .err()
        .expect("an alias bomb must not load");
    let text = err.to_string();
    assert!(text.contains("p.yaml:10:") && text.contains("expands past the limit of 1000000 YAML nodes"), "{text}");
}

#[test]
fn ops_ranges_are_within_their_types_and_defaults() {
    for op in saepipe::ops::registry() {
        for spec in op.params() {
            let Some((lo, hi)) = spec.range else { continue };
            assert!(lo <= hi, "{}.{}", op.name(), spec.name);
            if let Some(d) = spec.default.as_ref().and_then(|d| d.as_i64()) {
                assert!((lo..=hi).contains(&d), "default of {}.{} ({d}) is outside its range", op.name(), spec.name);
            }
        }
    }
}

#[test]
fn empty_corpus_fails_tokenize_naming_the_file() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let t = tempfile::tempdir().unwrap();
    for (name, content) in [("none.jsonl", ""), ("blank.jsonl", "{\"text\": \"\"}\n{\"text\": \"\"}\n")] {
        std::fs::write(t.path().join(name), content).unwrap();
        std::fs::write(t.path().join("p.yaml"), format!("version: 1\nstages:\n  tokens:\n    op: tokenize\n    corpus: {name}\n    tokenizer: toy/toy-grammar@step2000\n    context_size: 32\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_saepipe"))
            .args(["run", "p.yaml", "-q"])
            .current_dir(t.path())
            .env_remove("RUST_BACKTRACE")
            .env("SAEPIPE_MODELS", repo.join("models"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(err.contains(name) && err.contains("the corpus holds"), "{name}: {err}");
    }
}

/// Hook names are checked against the model's config.json when the pipeline is
/// loaded (`validate`, `plan`, `run`), without loading weights: a misspelt hook
/// and a layer the model lacks are both located, with the closest valid name.
#[test]
fn hook_names_are_checked_against_the_model_config_at_validate_time() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("p.yaml");
    let yaml = "version: 1\nstages:\n  t:\n    op: command\n    run: 'true'\n  acts:\n    op: collect_activations\n    model: toy/toy-grammar@step2000\n    tokens: t\n    hooks:\n      - blocks.1.hook_resid_pre\n      - blocks.1.hook_resid_prex\n      - blocks.5.hook_resid_pre\n";
    let err = load_str(&registry(), &base, yaml, &LoadOptions::default(), None)
        .err()
        .expect("unknown hooks must not load")
        .to_string();
    assert!(err.contains("p.yaml:12:9: error: stage `acts`, parameter `hooks`: unknown hook point `blocks.1.hook_resid_prex` (did you mean `blocks.1.hook_resid_pre`?)"), "{err}");
    assert!(
        err.contains(
            "p.yaml:13:9: error: stage `acts`, parameter `hooks`: unknown hook point `blocks.5.hook_resid_pre`"
        ),
        "{err}"
    );
    assert!(err.contains("has 2 layers"), "{err}");
    assert!(!err.contains("p.yaml:11:"), "the valid hook is not reported: {err}");
    // A model that is not available locally is not checked here (no download at validate time).
    let remote = yaml.replace("toy/toy-grammar@step2000", "nobody/not-cached@main");
    let p = load_str(&registry(), &base, &remote, &LoadOptions::default(), None);
    assert!(p.is_ok(), "{:?}", p.err().map(|e| e.to_string()));
}

/// A wrong value given with `--set` is reported once per stage (not once per
/// `foreach` instance), saying that it came from the `--set`.
#[test]
fn a_bad_set_value_is_reported_once_per_stage_naming_the_set() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("p.yaml");
    let yaml = "version: 1\nvars:\n  k: 8\nstages:\n  a:\n    op: debug_shards\n    foreach: [1, 2, 3, 4]\n    seed: ${item}\n    shards: ${k}\n  b:\n    op: debug_shards\n    shards: ${k}\n";
    let opts = LoadOptions { sets: vec!["k=eight".into()], params_file: None };
    let err = load_str(&registry(), &base, yaml, &opts, None).err().expect("a string for an integer").to_string();
    assert!(
        err.contains("p.yaml:9:13: error: stage `a` (4 instances), parameter `shards`: expected an integer, found the string `eight` (the value of `${k}`, given by `--set k=eight`)"),
        "{err}"
    );
    assert!(err.contains("p.yaml:12:13: error: stage `b`, parameter `shards`"), "{err}");
    assert!(err.ends_with("2 errors in ") || err.contains("2 errors in"), "{err}");
}
