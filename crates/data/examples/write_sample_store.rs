//! Writes sample stores for `scripts/fixtures/data_read_check.py`, which reads them
//! back with pyarrow and checks shapes and values (docs/formats.md):
//!
//!     cargo run -p saepipe-data --example write_sample_store -- OUT_DIR
//!     .venv/bin/python scripts/fixtures/data_read_check.py OUT_DIR
//!
//! OUT_DIR/f32 (uncompressed) and OUT_DIR/f16 (bss-zstd-1): 1000 tokens (ctx 20),
//! shards of 300 rows, hooks `blocks.0.hook_resid_pre` (d 16) and
//! `blocks.0.hook_mlp_out` (d 8) with value(seq, pos, j) = ((7 seq + 3 pos + j) mod 101 − 50) / 8
//! for the first hook and its negation for the second (exact in f16).
//! OUT_DIR/tokens.parquet: the tokenization fixture corpus in saelens mode, ctx 32.

use saepipe_data::activations::{Compression, Dtype, HookSpec, Rows, ShardedWriter, StoreMeta, WriterOptions};
use saepipe_data::corpus::{Corpus, FormatChoice};
use saepipe_data::tokenize::{Mode, TokenizeOptions, Tokenizer, tokenize_to_table};
use std::path::Path;

const CTX: u64 = 20;
const TOKENS: u64 = 1000;

fn value(seq: u64, pos: u64, j: u64) -> f32 {
    ((7 * seq + 3 * pos + j) % 101) as f32 / 8.0 - 50.0 / 8.0
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: write_sample_store OUT_DIR");
    let out = Path::new(&out);
    for (name, dtype, compression) in
        [("f32", Dtype::F32, Compression::None), ("f16", Dtype::F16, Compression::SplitZstd(1))]
    {
        let meta = StoreMeta {
            model: "sample".into(),
            revision: Some("main".into()),
            weight_fingerprint: "0".repeat(64),
            hooks: vec![
                HookSpec { name: "blocks.0.hook_resid_pre".into(), d: 16 },
                HookSpec { name: "blocks.0.hook_mlp_out".into(), d: 8 },
            ],
            dtype,
            processing: serde_json::json!({ "fold_ln": false }),
            token_artifact: "sample-tokens".into(),
            context_size: CTX as usize,
            extra: serde_json::json!({ "note": "written by examples/write_sample_store.rs" }),
        };
        let _ = std::fs::remove_dir_all(out.join(name));
        let mut w = ShardedWriter::open(
            &out.join(format!("{name}.partial")),
            meta,
            WriterOptions { rows_per_shard: 300, row_group_rows: 128, compression, allow_nonfinite: false },
        )
        .expect("open");
        for seq in 0..TOKENS / CTX {
            let rows: Vec<(u64, u64)> = (0..CTX).map(|p| (seq, p)).collect();
            let a: Vec<f32> = rows.iter().flat_map(|&(s, p)| (0..16).map(move |j| value(s, p, j))).collect();
            let b: Vec<f32> = rows.iter().flat_map(|&(s, p)| (0..8).map(move |j| -value(s, p, j))).collect();
            let seqs = vec![seq; CTX as usize];
            let pos: Vec<u32> = (0..CTX as u32).collect();
            let tok: Vec<u32> = (0..CTX).map(|p| ((seq * 31 + p) % 50) as u32).collect();
            w.push(seq * CTX, &Rows { seq: &seqs, pos: &pos, token: &tok, hooks: &[&a, &b] }).expect("push");
        }
        let info = w.finish(&out.join(name)).expect("finish");
        println!("{name}: {} shards, {} tokens", info.shards.len(), info.total_tokens);
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenize");
    let tok = Tokenizer::from_file(&fixtures.join("tokenizer.json")).expect("tokenizer");
    let corpus =
        Corpus::resolve(&[fixtures.join("corpus.jsonl").to_str().expect("utf-8 path")], &FormatChoice::Auto, "text")
            .expect("corpus");
    let s = tokenize_to_table(
        &corpus,
        &tok,
        &TokenizeOptions::new(Mode::SaeLens, 32),
        &out.join("tokens.parquet"),
        serde_json::Value::Null,
        &[],
    )
    .expect("tokenize");
    println!("tokens.parquet: {} contexts", s.contexts);
}
