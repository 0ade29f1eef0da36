//! Attention patterns and scores collected by `collect_activations` equal
//! TransformerLens's: the op runs on the committed GPT-2 fixture (its weights and
//! tokens; goldens from scripts/fixtures/model_tl.py) and every stored per-token
//! row is compared with `blocks.L.attn.hook_pattern` / `hook_attn_scores`.
//!
//! A stored row for query token q holds, head by head, the keys 0..ctx; the keys
//! after q (masked: −inf scores, zero probabilities in TransformerLens) are
//! stored as 0 (docs/formats.md).

use saepipe::engine::{NoProgress, Op, Params, StageCtx};
use saepipe::ops::collect_activations::CollectActivationsOp;
use saepipe_data::{ActivationReader, TokenTableMeta, TokenTableWriter};
use safetensors::SafeTensors;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/model/tests/fixtures/tl/gpt2")
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The fixture's tokens as a token-table artifact in `dir`; returns (batch, ctx).
fn token_artifact(dir: &Path) -> (usize, usize) {
    let tokens: Vec<Vec<u32>> =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("tokens.json")).unwrap()).unwrap();
    let meta = TokenTableMeta {
        tokenizer_fingerprint: "fixture".into(),
        mode: "transformer_lens".into(),
        context_size: tokens[0].len(),
        bos_id: None,
        eos_id: None,
        pad_id: None,
        extra: json!({}),
    };
    let mut w = TokenTableWriter::create(&dir.join("tokens.parquet"), meta).unwrap();
    for t in &tokens {
        w.push(t).unwrap();
    }
    w.finish().unwrap();
    (tokens.len(), tokens[0].len())
}

/// Runs the collect_activations op itself (defaults from its schema) on the
/// fixture model, batch size 1 so that batches are split as in a real run.
fn collect(root: &Path, hooks: &[String]) -> PathBuf {
    let op = CollectActivationsOp;
    let mut params: BTreeMap<String, serde_json::Value> =
        op.params().into_iter().filter_map(|s| s.default.map(|d| (s.name.to_string(), d))).collect();
    params.insert("model".into(), json!(fixture().display().to_string()));
    params.insert("hooks".into(), json!(hooks));
    params.insert("device".into(), json!("cpu"));
    params.insert("batch_size".into(), json!(1));
    let tokens = root.join("tokens");
    let (out, partial) = (root.join("out"), root.join("partial"));
    for d in [&tokens, &out, &partial] {
        std::fs::create_dir_all(d).unwrap();
    }
    token_artifact(&tokens);
    let mut log = Vec::new();
    let mut ctx = StageCtx {
        instance: "acts".into(),
        params: Params(params),
        table_metadata: Default::default(),
        inputs: BTreeMap::from([("tokens".to_string(), vec![tokens])]),
        input_names: Default::default(),
        streamed: Default::default(),
        out_dir: out.clone(),
        partial_dir: partial,
        base_dir: root.to_path_buf(),
        threads: 1,
        progress: &NoProgress,
        log: &mut log,
        lock_held: &|| true,
    };
    op.run(&mut ctx).unwrap_or_else(|e| panic!("{e:#}\n{}", String::from_utf8_lossy(&log)));
    out
}

#[test]
fn collected_attention_rows_equal_transformer_lens() {
    let t = tempfile::tempdir().unwrap();
    let hooks: Vec<String> = (0..2)
        .flat_map(|l| [format!("blocks.{l}.attn.hook_pattern"), format!("blocks.{l}.attn.hook_attn_scores")])
        .collect();
    let store = collect(t.path(), &hooks);
    let (batch, ctx) = token_artifact(t.path());
    let heads = 4;

    let names: Vec<&str> = hooks.iter().map(String::as_str).collect();
    let reader = ActivationReader::open(&store, &names).unwrap().sequential();
    assert_eq!(reader.widths(), vec![heads * ctx; hooks.len()], "a row holds every head's keys");
    let mut stored: Vec<Vec<f32>> = vec![Vec::new(); hooks.len()];
    for b in reader.batches(5) {
        for (i, h) in b.unwrap().hooks.into_iter().enumerate() {
            stored[i].extend(h);
        }
    }

    let bytes = std::fs::read(fixture().join("hooks_none.safetensors")).unwrap();
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    for (name, rows) in hooks.iter().zip(&stored) {
        let t = golden.tensor(name).unwrap();
        assert_eq!(t.shape(), [batch, heads, ctx, ctx], "{name}");
        let want = f32s(t.data());
        assert_eq!(rows.len(), want.len(), "{name}");
        let scale = want.iter().filter(|x| x.is_finite()).fold(0f32, |m, x| m.max(x.abs()));
        let mut worst = 0f32;
        for b in 0..batch {
            for q in 0..ctx {
                for h in 0..heads {
                    for k in 0..ctx {
                        let got = rows[((b * ctx + q) * heads + h) * ctx + k];
                        let tl = want[((b * heads + h) * ctx + q) * ctx + k];
                        if k > q {
                            // Masked in TransformerLens; stored as 0.
                            assert!(tl == f32::NEG_INFINITY || tl == 0.0, "{name}: TL masks key {k} of query {q}");
                            assert_eq!(got, 0.0, "{name}: masked key {k} of query {q} (batch {b}, head {h})");
                        } else {
                            worst = worst.max((got - tl).abs() / scale);
                        }
                    }
                }
            }
        }
        assert!(worst < 1e-4, "{name}: differs from TransformerLens by {worst:e} (relative)");
        if name.ends_with("hook_pattern") {
            for row in rows.chunks(ctx) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{name}: each head's row is a distribution");
            }
        } else {
            assert!(want.contains(&f32::NEG_INFINITY), "TransformerLens scores hold -inf above the diagonal");
        }
    }
}
