//! `tokenize`: a text corpus → a Parquet token table of fixed-length contexts.

use super::{Op, Params, StageCtx, hub_dataset, model_ref};
use crate::engine::{ParamSpec, ParamType};
use anyhow::{Context, Result, bail};
use saepipe_data::corpus::FileFormat;
use saepipe_data::{Corpus, FormatChoice, Mode, Tl2Pad, TokenizeOptions, Tokenizer, tokenize_to_table};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The `tokenize` op: a text corpus to a Parquet table of fixed-length token contexts.
pub struct TokenizeOp;

fn corpus_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(path)?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
        files.sort();
        if files.is_empty() {
            bail!("corpus directory {} holds no files", path.display());
        }
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

pub(crate) fn tokenizer_path(params: &Params, base: &Path) -> Result<PathBuf> {
    let spec = params.str("tokenizer")?;
    let direct = base.join(spec);
    if direct.is_file() {
        return Ok(direct);
    }
    let dir = model_ref::resolve(spec, base)?;
    Ok(dir.join("tokenizer.json"))
}

impl Op for TokenizeOp {
    fn name(&self) -> &'static str {
        "tokenize"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "tokenize a corpus (JSONL or text) into fixed-length contexts (Parquet)"
    }
    fn outputs(&self) -> &'static [&'static str] {
        &["tokens.parquet"]
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::required("corpus", ParamType::Path, "corpus file, or a directory of them (read in name order), or a hub dataset's split: hf-dataset:<org>/<name>[@rev][/split]"),
            ParamSpec::required("tokenizer", ParamType::Str, "a tokenizer.json path, or a model reference whose tokenizer.json to use"),
            ParamSpec::optional("format", ParamType::Enum(&["auto", "jsonl", "text_lines", "parquet"]), json!("auto"), "corpus format; auto: .jsonl/.json are JSONL, .parquet Parquet, other files one document per line"),
            ParamSpec::optional("field", ParamType::Str, json!("text"), "JSONL field or Parquet column holding the document text"),
            ParamSpec::optional("context_size", ParamType::Int, json!(128), "tokens per context, including the leading BOS").range(2, 1 << 20),
            ParamSpec::maybe("max_tokens", ParamType::Int, "stop after this many tokens (whole contexts)").min(1),
            ParamSpec::optional(
                "mode",
                ParamType::Enum(&["saelens", "transformer_lens", "transformer_lens_2"]),
                json!("saelens"),
                "saelens: BOS starts every context and separates documents; transformer_lens: as TransformerLens 3.x tokenize_and_concatenate; transformer_lens_2: as TransformerLens 2.x's (EOS-string joins, 20 text chunks, pad ids removed: every EOS with a HookedTransformer tokenizer), which published 2024-25 numbers used",
            ),
            ParamSpec::maybe("num_proc", ParamType::Int, "transformer_lens modes: datasets.map num_proc, the number of contiguous corpus shards (default 10 as in tokenize_and_concatenate; 1 = one shard, as num_proc=None or streaming)").range(1, 4096),
            ParamSpec::maybe("tl2_pad", ParamType::Enum(&["eos", "added"]), "transformer_lens_2, tokenizer without pad token: eos (default; HookedTransformer's model.tokenizer, pad = EOS, so every EOS is removed) or added (a bare tokenizer: <PAD> is added and EOS stays)"),
            ParamSpec::maybe("tl2_short_batch", ParamType::Enum(&["pad", "drop"]), "transformer_lens_2: a map batch shorter than one row is padded to one row with the pad id (default, TransformerLens 2.8-2.17) or dropped (2.0-2.7)"),
            ParamSpec::maybe("shuffle_seed", ParamType::Int, "shuffle documents with this seed (docs/formats.md describes the algorithm)").min(0),
            ParamSpec::optional("shuffle_buffer", ParamType::Int, json!(10000), "documents held by the shuffle buffer").range(1, 100_000_000),
        ]
    }
    /// The tokenizer, and a hub dataset's Parquet files (a local corpus is a
    /// path parameter, keyed by content already).
    fn external_inputs(&self, params: &Params, base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let mut out = vec![("tokenizer".into(), tokenizer_path(params, base_dir)?)];
        let corpus = params.str("corpus")?;
        if hub_dataset::is_hub_dataset(corpus) {
            let files = hub_dataset::resolve(corpus).context("parameter `corpus`")?;
            out.extend(files.into_iter().enumerate().map(|(i, f)| (format!("corpus[{i}]"), f)));
        }
        Ok(out)
    }
    fn check_params(&self, params: &Params, _base_dir: &Path) -> Vec<super::ParamProblem> {
        // A missing corpus is bad input, found before anything runs.
        match params.str("corpus") {
            Ok(corpus) if hub_dataset::is_hub_dataset(corpus) => match hub_dataset::DatasetRef::parse(corpus) {
                Ok(_) => Vec::new(),
                Err(e) => vec![("corpus", None, e.to_string())],
            },
            Ok(corpus) if !Path::new(corpus).exists() => {
                let hint = saepipe_core::suggest::path_hint(Path::new(corpus));
                vec![("corpus", None, format!("no such file or directory: {corpus}{hint}"))]
            }
            _ => Vec::new(),
        }
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = &ctx.params;
        let corpus = p.str("corpus")?;
        let files = if hub_dataset::is_hub_dataset(corpus) {
            hub_dataset::resolve(corpus)?
        } else {
            corpus_files(Path::new(corpus))?
        };
        let tok_path = tokenizer_path(p, &ctx.base_dir)?;
        let tok = Tokenizer::from_file(&tok_path)?;
        let context_size = p.usize("context_size")?;
        if context_size < 2 {
            bail!("parameter `context_size` must be at least 2");
        }
        let format = match p.str("format")? {
            "jsonl" => FormatChoice::Fixed(FileFormat::Jsonl { field: p.str("field")?.to_string() }),
            "text_lines" => FormatChoice::Fixed(FileFormat::TextLines),
            "parquet" => FormatChoice::Fixed(FileFormat::Parquet { column: p.str("field")?.to_string() }),
            _ => FormatChoice::Auto,
        };
        let inputs: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let corpus = Corpus::resolve(&inputs, &format, p.str("field")?)?;
        corpus.check_has_text()?;
        let mode = Mode::from_name(p.str("mode")?).unwrap_or(Mode::SaeLens);
        let mut opts = TokenizeOptions::new(mode, context_size);
        if let Some(n) = p.get("num_proc").and_then(Value::as_i64) {
            if mode == Mode::SaeLens {
                bail!("parameter `num_proc` applies to the transformer_lens modes only");
            }
            if n < 1 {
                bail!("parameter `num_proc` must be at least 1");
            }
            opts.transformer_lens.num_proc = if n == 1 { None } else { Some(n as usize) };
        }
        for name in ["tl2_pad", "tl2_short_batch"] {
            if p.get(name).is_some() && mode != Mode::TransformerLens2 {
                bail!("parameter `{name}` applies to mode transformer_lens_2 only");
            }
        }
        if p.opt_str("tl2_pad") == Some("added") {
            opts.transformer_lens.tl2_pad = Tl2Pad::Added;
        }
        if p.opt_str("tl2_short_batch") == Some("drop") {
            opts.transformer_lens.pad_short_batch = false;
        }
        opts.max_tokens = p.get("max_tokens").and_then(Value::as_u64);
        if let Some(seed) = p.get("shuffle_seed").and_then(Value::as_u64) {
            opts.shuffle = Some((seed, p.usize("shuffle_buffer")?));
        }
        if let Some(m) = opts.max_tokens {
            ctx.progress.set_total(m / context_size as u64, "contexts");
        }
        let summary = tokenize_to_table(
            &corpus,
            &tok,
            &opts,
            &ctx.out_dir.join("tokens.parquet"),
            json!({ "corpus": inputs.iter().map(|f| Path::new(f).file_name().map(|n| n.to_string_lossy().into_owned())).collect::<Vec<_>>() }),
            &ctx.provenance(),
        )?;
        if summary.contexts == 0 {
            bail!("the corpus {} yields no complete context of {context_size} tokens", inputs.join(", "));
        }
        ctx.progress.set_position(summary.contexts);
        Ok(
            json!({ "contexts": summary.contexts, "tokens": summary.tokens, "context_size": context_size, "mode": mode.name(), "bos_token_id": tok.special.bos }),
        )
    }
}
