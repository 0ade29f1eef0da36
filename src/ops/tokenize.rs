//! `tokenize`: a text corpus → a Parquet token table of fixed-length contexts.

use super::{Op, Params, StageCtx, model_ref};
use crate::pipeline::schema::{ParamSpec, ParamType};
use anyhow::{Result, bail};
use saepipe_data::corpus::FileFormat;
use saepipe_data::{Corpus, FormatChoice, Mode, TokenizeOptions, Tokenizer, tokenize_to_table};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

pub struct TokenizeOp;

fn corpus_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)?.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
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
            ParamSpec::required("corpus", ParamType::Path, "corpus file, or a directory of them (read in name order)"),
            ParamSpec::required("tokenizer", ParamType::Str, "a tokenizer.json path, or a model reference whose tokenizer.json to use"),
            ParamSpec::optional("format", ParamType::Enum(&["auto", "jsonl", "text_lines", "parquet"]), json!("auto"), "corpus format; auto: .jsonl/.json are JSONL, .parquet Parquet, other files one document per line"),
            ParamSpec::optional("field", ParamType::Str, json!("text"), "JSONL field or Parquet column holding the document text"),
            ParamSpec::optional("context_size", ParamType::Int, json!(128), "tokens per context, including the leading BOS"),
            ParamSpec::maybe("max_tokens", ParamType::Int, "stop after this many tokens (whole contexts)"),
            ParamSpec::optional("mode", ParamType::Enum(&["saelens", "transformer_lens"]), json!("saelens"), "saelens: BOS starts every context and separates documents; transformer_lens: as tokenize_and_concatenate"),
            ParamSpec::maybe("shuffle_seed", ParamType::Int, "shuffle documents with this seed (docs/formats.md describes the algorithm)"),
            ParamSpec::optional("shuffle_buffer", ParamType::Int, json!(10000), "documents held by the shuffle buffer"),
        ]
    }
    fn external_inputs(&self, params: &Params, base_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        Ok(vec![("tokenizer".into(), tokenizer_path(params, base_dir)?)])
    }
    fn run(&self, ctx: &mut StageCtx) -> Result<Value> {
        let p = &ctx.params;
        let corpus_path = PathBuf::from(p.str("corpus")?);
        let files = corpus_files(&corpus_path)?;
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
        let mode = if p.str("mode")? == "transformer_lens" { Mode::TransformerLens } else { Mode::SaeLens };
        let mut opts = TokenizeOptions::new(mode, context_size);
        opts.max_tokens = p.get("max_tokens").and_then(Value::as_u64);
        if let Some(seed) = p.get("shuffle_seed").and_then(Value::as_u64) {
            opts.shuffle = Some((seed, p.usize("shuffle_buffer")?));
        }
        if let Some(m) = opts.max_tokens {
            ctx.progress.set_total(m / context_size as u64, "contexts");
        }
        let summary = tokenize_to_table(&corpus, &tok, &opts, &ctx.out_dir.join("tokens.parquet"), json!({ "corpus": inputs.iter().map(|f| Path::new(f).file_name().map(|n| n.to_string_lossy().into_owned())).collect::<Vec<_>>() }))?;
        if summary.contexts == 0 {
            bail!("the corpus yields no complete context of {context_size} tokens");
        }
        ctx.progress.set_position(summary.contexts);
        Ok(json!({ "contexts": summary.contexts, "tokens": summary.tokens, "context_size": context_size, "mode": mode.name(), "bos_token_id": tok.special.bos }))
    }
}
