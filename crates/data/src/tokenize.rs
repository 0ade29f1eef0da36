//! Corpus → fixed-length token contexts, in the packings users compare against:
//!
//! - [`Mode::SaeLens`]: what SAELens's `concat_and_batch_sequences` does when its
//!   ActivationsStore tokenizes text on the fly: documents tokenized without special
//!   tokens, concatenated into one stream; every context starts with BOS
//!   (`begin_batch_token`), BOS separates documents inside a context
//!   (`sequence_separator_token`), neither is doubled when the document already starts
//!   with that token; the last incomplete context is dropped.
//! - [`Mode::TransformerLens`]: TransformerLens 3.x `utils.tokenize_and_concatenate`
//!   token for token, including how `datasets.Dataset.map` groups documents (contiguous
//!   `num_proc` shards, batches of 1000 inside a shard): per batch, documents tokenized
//!   without special tokens are joined with EOS, cut into rows of ctx−1 (the remainder
//!   of each batch is dropped; a batch shorter than one row becomes one row padded with
//!   the pad token, EOS when the tokenizer has none) and BOS is prepended to each row.
//! - [`Mode::TransformerLens2`]: TransformerLens 2.x (2.0 to 2.17)
//!   `tokenize_and_concatenate`, which published numbers of 2024–25 were made with. The
//!   same map batches, but it works on text: per batch the documents are joined with the
//!   EOS *string*, the text is cut into 20 chunks of (chars − 1) / 20 + 1 characters
//!   (cutting words and EOS strings), the chunks are tokenized as separate texts (with
//!   the tokenizer's own special tokens), and every pad id is removed. A HookedTransformer's
//!   tokenizer has pad = EOS when the tokenizer defines no pad token, so then every EOS,
//!   separators included, is removed ([`Tl2Pad::Eos`]); a bare tokenizer gets a `<PAD>`
//!   token added instead and keeps its EOS ([`Tl2Pad::Added`]); a tokenizer with a pad token
//!   of its own loses only that. Rows of ctx−1 with BOS prepended, remainder dropped; a
//!   batch with fewer tokens than a row is padded to one row with the pad id (2.8–2.17) or
//!   dropped (2.0–2.7, [`TlOptions::pad_short_batch`]); a batch of whitespace only gives
//!   no row.

use crate::corpus::Corpus;
use crate::error::{DataError, Result, io};
use crate::tokens::{TokenTableMeta, TokenTableWriter};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// BOS/EOS/pad token ids of a tokenizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialTokens {
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token (also the document separator in TransformerLens modes).
    pub eos: Option<u32>,
    /// Padding token.
    pub pad: Option<u32>,
}

/// A Hugging Face tokenizer (`tokenizer.json`, no network) with its special tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The `tokenizer.json` it was loaded from (named in errors).
    pub path: PathBuf,
    /// blake3 (hex) of tokenizer.json: recorded with every token table.
    pub fingerprint: String,
    /// BOS/EOS/pad as found next to the file (see [`from_file`](Self::from_file)).
    pub special: SpecialTokens,
}

fn config_token(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`. BOS/EOS/pad come from `tokenizer_config.json` or
    /// `special_tokens_map.json` beside it (as transformers reads them); without
    /// either, `<|endoftext|>` (GPT-2, Pythia), else `<s>`/`</s>`, serves as BOS and EOS
    /// and there is no pad token.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| DataError::Tokenizer { path: path.into(), message: e.to_string() })?;
        // transformers turns the file's truncation/padding off unless a call asks for it.
        inner.with_truncation(None).map_err(|e| DataError::Tokenizer { path: path.into(), message: e.to_string() })?;
        inner.with_padding(None);
        let mut tok = Tokenizer {
            inner,
            path: path.into(),
            fingerprint: blake3::hash(&bytes).to_hex().to_string(),
            special: SpecialTokens::default(),
        };
        tok.special = tok.find_special_tokens()?;
        Ok(tok)
    }

    fn find_special_tokens(&self) -> Result<SpecialTokens> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let p = dir.join(name);
            if !p.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&p).map_err(io(&p))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| DataError::Tokenizer { path: p.clone(), message: format!("invalid JSON: {e}") })?;
            let id = |key: &str| -> Result<Option<u32>> {
                match config_token(v.get(key)) {
                    None => Ok(None),
                    Some(t) => self.token_id(&t).map(Some).ok_or_else(|| DataError::Tokenizer {
                        path: p.clone(),
                        message: format!("{key} `{t}` is not in the vocabulary"),
                    }),
                }
            };
            let s = SpecialTokens { bos: id("bos_token")?, eos: id("eos_token")?, pad: id("pad_token")? };
            if s.bos.is_some() || s.eos.is_some() {
                return Ok(s);
            }
        }
        let first = |c: &[&str]| c.iter().find_map(|t| self.token_id(t));
        Ok(SpecialTokens {
            bos: first(&["<|endoftext|>", "<s>", "<bos>"]),
            eos: first(&["<|endoftext|>", "</s>", "<eos>"]),
            pad: None,
        })
    }

    /// The same tokenizer with other special tokens (overriding what the files say).
    pub fn with_special(mut self, special: SpecialTokens) -> Tokenizer {
        self.special = special;
        self
    }

    /// Token ids of `text`; with `add_special_tokens`, the tokenizer's post-processor
    /// adds its special tokens (as transformers' `add_special_tokens=True`).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| DataError::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes documents in parallel (rayon), keeping their order.
    pub fn encode_many(&self, docs: &[String], add_special_tokens: bool) -> Result<Vec<Vec<u32>>> {
        docs.par_iter().map(|d| self.encode(d, add_special_tokens)).collect()
    }

    /// Id of a token string (special tokens included), if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Text of token ids, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| DataError::Tokenizer { path: self.path.clone(), message: e.to_string() })
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// How documents are packed into contexts (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// SAELens `concat_and_batch_sequences` (`saelens`).
    SaeLens,
    /// TransformerLens 3.x `tokenize_and_concatenate` (`transformer_lens`).
    TransformerLens,
    /// TransformerLens 2.x `tokenize_and_concatenate` (`transformer_lens_2`).
    #[serde(rename = "transformer_lens_2")]
    TransformerLens2,
}

impl Mode {
    /// The mode's name in pipelines: `saelens`, `transformer_lens`, `transformer_lens_2`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::SaeLens => "saelens",
            Mode::TransformerLens => "transformer_lens",
            Mode::TransformerLens2 => "transformer_lens_2",
        }
    }

    /// The mode called `name` (see [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Mode> {
        [Mode::SaeLens, Mode::TransformerLens, Mode::TransformerLens2].into_iter().find(|m| m.name() == name)
    }
}

/// `transformer_lens_2`: the pad token when the tokenizer defines none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tl2Pad {
    /// EOS, as `HookedTransformer.set_tokenizer` sets it (`model.tokenizer`): every EOS
    /// id is removed, the document separators included.
    #[default]
    Eos,
    /// `<PAD>`, which `tokenize_and_concatenate` adds to a bare tokenizer as a special
    /// token (a new id unless the vocabulary has it): EOS stays.
    Added,
}

/// A special token chosen by role or id (SAELens's `"bos" | "eos" | int`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Special {
    /// The tokenizer's BOS (an error if it has none).
    Bos,
    /// The tokenizer's EOS (an error if it has none).
    Eos,
    /// This token id.
    Id(u32),
}

/// SAELens packing tokens; the defaults are SAELens's (`bos`, none, `bos`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SaeLensOptions {
    /// Token every context starts with.
    pub begin_batch_token: Option<Special>,
    /// Token put before every document.
    pub begin_sequence_token: Option<Special>,
    /// Token between documents inside a context.
    pub sequence_separator_token: Option<Special>,
}

impl Default for SaeLensOptions {
    fn default() -> Self {
        SaeLensOptions {
            begin_batch_token: Some(Special::Bos),
            begin_sequence_token: None,
            sequence_separator_token: Some(Special::Bos),
        }
    }
}

/// TransformerLens/datasets grouping (both TransformerLens modes); the defaults are
/// `tokenize_and_concatenate`'s.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TlOptions {
    /// `datasets.Dataset.map` batch size (1000).
    pub batch_docs: usize,
    /// `num_proc` (10); `None` = one shard (num_proc=None or 1, or a streaming dataset).
    pub num_proc: Option<usize>,
    /// Prepend BOS to every row (rows are then ctx−1 tokens of text plus BOS).
    pub add_bos_token: bool,
    /// `transformer_lens_2` only: the pad token of a tokenizer that defines none.
    #[serde(default)]
    pub tl2_pad: Tl2Pad,
    /// `transformer_lens_2` only: a map batch with fewer tokens than a row becomes one
    /// row padded with the pad id (true, TransformerLens 2.8–2.17) or is dropped (false,
    /// 2.0–2.7).
    #[serde(default = "yes")]
    pub pad_short_batch: bool,
}

fn yes() -> bool {
    true
}

impl Default for TlOptions {
    fn default() -> Self {
        TlOptions {
            batch_docs: 1000,
            num_proc: Some(10),
            add_bos_token: true,
            tl2_pad: Tl2Pad::Eos,
            pad_short_batch: true,
        }
    }
}

/// Everything that decides the contexts a corpus tokenizes into.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenizeOptions {
    /// The packing.
    pub mode: Mode,
    /// Tokens per context (at least 2).
    pub context_size: usize,
    /// Stop after floor(max_tokens / context_size) contexts.
    pub max_tokens: Option<u64>,
    /// Shuffle documents before tokenizing: (seed, shuffle buffer size in documents).
    pub shuffle: Option<(u64, usize)>,
    /// Options of [`Mode::SaeLens`].
    pub saelens: SaeLensOptions,
    /// Options of the TransformerLens modes.
    pub transformer_lens: TlOptions,
}

impl TokenizeOptions {
    /// `mode` and `context_size` with every other option at its default.
    pub fn new(mode: Mode, context_size: usize) -> TokenizeOptions {
        TokenizeOptions {
            mode,
            context_size,
            max_tokens: None,
            shuffle: None,
            saelens: SaeLensOptions::default(),
            transformer_lens: TlOptions::default(),
        }
    }
}

/// Exact port of SAELens `concat_and_batch_sequences` (concatenating mode), streaming.
pub(crate) struct SaeLensPacker {
    ctx: usize,
    begin_batch: Option<u32>,
    begin_sequence: Option<u32>,
    separator: Option<u32>,
    batch: Option<Vec<u32>>,
}

impl SaeLensPacker {
    pub(crate) fn new(
        ctx: usize,
        begin_batch: Option<u32>,
        begin_sequence: Option<u32>,
        separator: Option<u32>,
    ) -> SaeLensPacker {
        SaeLensPacker { ctx, begin_batch, begin_sequence, separator, batch: None }
    }

    /// Adds one document; calls `emit` with each context it completes.
    pub(crate) fn push(&mut self, tokens: &[u32], emit: &mut impl FnMut(&[u32]) -> Result<bool>) -> Result<bool> {
        let ctx = self.ctx;
        let mut offset = 0usize;
        let mut is_start = true;
        while offset < tokens.len() {
            let mut prefix: Vec<u32> = Vec::new();
            let mut pending = false;
            let mut first = tokens[offset];
            if is_start
                && let Some(bs) = self.begin_sequence
                && first != bs
            {
                prefix.insert(0, bs);
                pending = true;
                first = bs;
            }
            let take = |offset: usize, n: usize| &tokens[offset.min(tokens.len())..(offset + n).min(tokens.len())];
            match self.batch.as_mut() {
                None => {
                    if let Some(bb) = self.begin_batch
                        && first != bb
                    {
                        prefix.insert(0, bb);
                    }
                    let needed = ctx.saturating_sub(prefix.len());
                    let mut b: Vec<u32> = prefix[..prefix.len().min(ctx)].to_vec();
                    b.extend_from_slice(take(offset, needed));
                    self.batch = Some(b);
                    offset += needed;
                    is_start = pending && prefix.len() > ctx;
                }
                Some(batch) => {
                    if let Some(sep) = self.separator
                        && first != sep
                    {
                        prefix.insert(0, sep);
                    }
                    let needed = ctx.saturating_sub(batch.len() + prefix.len());
                    let prefix_needed = ctx.saturating_sub(batch.len());
                    batch.extend_from_slice(&prefix[..prefix.len().min(prefix_needed)]);
                    batch.extend_from_slice(take(offset, needed));
                    offset += needed;
                    is_start = pending && prefix.len() > prefix_needed;
                }
            }
            if self.batch.as_ref().is_some_and(|b| b.len() == ctx) {
                let b = self.batch.take().expect("just checked");
                if !emit(&b)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Document counts of the `datasets.Dataset.map` batches TransformerLens tokenizes,
/// for `n_docs` documents: `num_proc` contiguous shards (as `Dataset.shard(contiguous=True)`
/// splits them, num_proc capped at n_docs), each cut into batches of `batch_docs`.
pub(crate) fn tl_batch_sizes(n_docs: u64, batch_docs: usize, num_proc: Option<usize>) -> Vec<usize> {
    let shards = match num_proc {
        Some(p) if p as u64 > n_docs => n_docs.max(1),
        Some(p) => p.max(1) as u64,
        None => 1,
    };
    let (div, rem) = (n_docs / shards, n_docs % shards);
    let mut out = Vec::new();
    for k in 0..shards {
        let mut left = div + u64::from(k < rem);
        while left > 0 {
            let b = left.min(batch_docs as u64);
            out.push(b as usize);
            left -= b;
        }
    }
    out
}

/// TransformerLens rows of one map batch of tokenized documents.
pub(crate) fn tl_rows(
    docs: &[Vec<u32>],
    ctx: usize,
    add_bos: bool,
    special: SpecialTokens,
    emit: &mut impl FnMut(&[u32]) -> Result<bool>,
) -> Result<bool> {
    if docs.is_empty() {
        return Ok(true);
    }
    let eos = special.eos.expect("checked by caller");
    let mut tokens: Vec<u32> = Vec::with_capacity(docs.iter().map(|d| d.len() + 1).sum());
    for (i, d) in docs.iter().enumerate() {
        tokens.extend_from_slice(d);
        if i + 1 < docs.len() {
            tokens.push(eos);
        }
    }
    tl_emit_rows(tokens, ctx, add_bos, special.bos, Some(special.pad.unwrap_or(eos)), emit)
}

/// Cuts the tokens of one map batch into rows of ctx−1 (ctx without BOS), BOS first,
/// dropping the remainder; fewer tokens than a row make one row padded with `short_pad`,
/// or none when it is `None`.
fn tl_emit_rows(
    mut tokens: Vec<u32>,
    ctx: usize,
    add_bos: bool,
    bos: Option<u32>,
    short_pad: Option<u32>,
    emit: &mut impl FnMut(&[u32]) -> Result<bool>,
) -> Result<bool> {
    let seq_len = if add_bos { ctx - 1 } else { ctx };
    if tokens.len() < seq_len {
        match short_pad {
            Some(p) => tokens.resize(seq_len, p),
            None => return Ok(true),
        }
    }
    let mut row = Vec::with_capacity(ctx);
    for chunk in tokens.chunks_exact(seq_len) {
        row.clear();
        if add_bos {
            row.push(bos.expect("checked by caller"));
        }
        row.extend_from_slice(chunk);
        if !emit(&row)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Python's `str.isspace` for one character: Unicode White_Space plus U+001C–U+001F.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The tokenizer as TransformerLens 2.x `tokenize_and_concatenate` uses it: the EOS
/// string that joins documents and the pad id it removes (with `<PAD>` added as a special
/// token when that is the pad).
pub(crate) struct Tl2Tokenizer {
    tok: Tokenizer,
    eos_text: String,
    pub(crate) pad: u32,
}

impl Tl2Tokenizer {
    pub(crate) fn new(tok: &Tokenizer, missing_pad: Tl2Pad) -> Result<Tl2Tokenizer> {
        let err =
            |m: &str| DataError::Tokenizer { path: tok.path.clone(), message: format!("transformer_lens_2 mode: {m}") };
        let eos = tok.special.eos.ok_or_else(|| err("the tokenizer has no EOS token"))?;
        tok.special.bos.ok_or_else(|| err("the tokenizer has no BOS token"))?;
        let eos_text = tok.inner.id_to_token(eos).ok_or_else(|| err("the EOS id has no token text"))?;
        let mut t = Tokenizer {
            inner: tok.inner.clone(),
            path: tok.path.clone(),
            fingerprint: tok.fingerprint.clone(),
            special: tok.special,
        };
        let pad = match (tok.special.pad, missing_pad) {
            (Some(p), _) => p,
            (None, Tl2Pad::Eos) => eos,
            (None, Tl2Pad::Added) => {
                t.inner.add_special_tokens(&[tokenizers::AddedToken::from("<PAD>", true)]);
                t.inner.token_to_id("<PAD>").ok_or_else(|| err("could not add `<PAD>`"))?
            }
        };
        t.special.pad = Some(pad);
        Ok(Tl2Tokenizer { tok: t, eos_text, pad })
    }

    /// The tokens of one map batch of documents after pad removal, or `None` for a
    /// batch whose text is whitespace only (`tokenize_and_concatenate` returns no row).
    pub(crate) fn batch_tokens(&self, docs: &[String]) -> Result<Option<Vec<u32>>> {
        let text = docs.join(self.eos_text.as_str());
        if text.chars().all(py_isspace) {
            return Ok(None);
        }
        // 20 chunks of equal length in characters (Python string indices), the last ones
        // shorter or empty.
        let mut bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        bounds.push(text.len());
        let n = bounds.len() - 1;
        let len = (n - 1) / TL2_CHUNKS + 1;
        let chunks: Vec<String> = (0..TL2_CHUNKS)
            .map(|i| text[bounds[(i * len).min(n)]..bounds[((i + 1) * len).min(n)]].to_string())
            .collect();
        let mut tokens: Vec<u32> = self.tok.encode_many(&chunks, true)?.concat();
        tokens.retain(|&t| t != self.pad);
        Ok(Some(tokens))
    }
}

/// The number of pieces TransformerLens 2.x cuts each map batch's text into.
const TL2_CHUNKS: usize = 20;

/// TransformerLens 2.x rows of one map batch of documents (text).
pub(crate) fn tl2_rows(
    docs: &[String],
    tok: &Tl2Tokenizer,
    ctx: usize,
    o: &TlOptions,
    emit: &mut impl FnMut(&[u32]) -> Result<bool>,
) -> Result<bool> {
    if docs.is_empty() {
        return Ok(true);
    }
    match tok.batch_tokens(docs)? {
        None => Ok(true),
        Some(tokens) => {
            tl_emit_rows(tokens, ctx, o.add_bos_token, tok.tok.special.bos, o.pad_short_batch.then_some(tok.pad), emit)
        }
    }
}

fn resolve(s: Option<Special>, special: SpecialTokens, role: &'static str) -> Result<Option<u32>> {
    match s {
        None => Ok(None),
        Some(Special::Id(i)) => Ok(Some(i)),
        Some(Special::Bos) => special
            .bos
            .map(Some)
            .ok_or_else(|| DataError::Config { what: role, message: "the tokenizer has no BOS token".into() }),
        Some(Special::Eos) => special
            .eos
            .map(Some)
            .ok_or_else(|| DataError::Config { what: role, message: "the tokenizer has no EOS token".into() }),
    }
}

/// Documents to encode at once (in parallel) in `saelens` mode.
const ENCODE_CHUNK_DOCS: usize = 512;

/// Streams the contexts of `corpus` to `emit` (return `false` to stop). Memory is
/// bounded by the shuffle buffer and one chunk of documents.
pub fn for_each_context(
    corpus: &Corpus,
    tok: &Tokenizer,
    opts: &TokenizeOptions,
    mut emit: impl FnMut(&[u32]) -> Result<()>,
) -> Result<u64> {
    let ctx = opts.context_size;
    if ctx < 2 {
        return Err(DataError::Config { what: "context_size", message: format!("{ctx}: must be at least 2") });
    }
    let limit = opts.max_tokens.map(|m| m / ctx as u64).unwrap_or(u64::MAX);
    let mut n = 0u64;
    let mut emit_limited = |c: &[u32]| -> Result<bool> {
        if n >= limit {
            return Ok(false);
        }
        emit(c)?;
        n += 1;
        Ok(n < limit)
    };
    if limit == 0 {
        return Ok(0);
    }
    let mut docs: Box<dyn Iterator<Item = Result<String>>> = match opts.shuffle {
        Some((seed, buffer)) => Box::new(corpus.shuffled_documents(seed, buffer)),
        None => Box::new(corpus.documents()),
    };
    let chunk = |docs: &mut dyn Iterator<Item = Result<String>>, size: usize| -> Result<Vec<String>> {
        let mut v = Vec::with_capacity(size);
        for d in docs.take(size) {
            v.push(d?);
        }
        Ok(v)
    };
    match opts.mode {
        Mode::SaeLens => {
            let o = &opts.saelens;
            let mut packer = SaeLensPacker::new(
                ctx,
                resolve(o.begin_batch_token, tok.special, "begin_batch_token")?,
                resolve(o.begin_sequence_token, tok.special, "begin_sequence_token")?,
                resolve(o.sequence_separator_token, tok.special, "sequence_separator_token")?,
            );
            loop {
                let texts = chunk(&mut docs, ENCODE_CHUNK_DOCS)?;
                if texts.is_empty() {
                    break;
                }
                for t in tok.encode_many(&texts, false)? {
                    if !packer.push(&t, &mut emit_limited)? {
                        return Ok(n);
                    }
                }
            }
        }
        Mode::TransformerLens | Mode::TransformerLens2 => {
            if tok.special.bos.is_none() || tok.special.eos.is_none() {
                return Err(DataError::Tokenizer {
                    path: tok.path.clone(),
                    message: format!("{} mode needs BOS and EOS tokens", opts.mode.name()),
                });
            }
            let o = &opts.transformer_lens;
            let tl2 = if opts.mode == Mode::TransformerLens2 { Some(Tl2Tokenizer::new(tok, o.tl2_pad)?) } else { None };
            // datasets shards by document count, so count first (one extra read).
            let total = if o.num_proc.is_some_and(|p| p > 1) { corpus.count_documents()? } else { u64::MAX };
            let sizes: Box<dyn Iterator<Item = usize>> = if total == u64::MAX {
                Box::new(std::iter::repeat(o.batch_docs.max(1)))
            } else {
                Box::new(tl_batch_sizes(total, o.batch_docs.max(1), o.num_proc).into_iter())
            };
            for size in sizes {
                let texts = chunk(&mut docs, size)?;
                if texts.is_empty() {
                    break;
                }
                let more = match &tl2 {
                    Some(t2) => tl2_rows(&texts, t2, ctx, o, &mut emit_limited)?,
                    None => {
                        tl_rows(&tok.encode_many(&texts, false)?, ctx, o.add_bos_token, tok.special, &mut emit_limited)?
                    }
                };
                if !more {
                    return Ok(n);
                }
            }
        }
    }
    Ok(n)
}

/// Summary of a tokenization run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TokenizeSummary {
    /// Contexts written.
    pub contexts: u64,
    /// Tokens written (`contexts * context_size`).
    pub tokens: u64,
}

/// Tokenizes `corpus` into the token table `out` (see docs/formats.md). `extra` is
/// recorded as free-form metadata (corpus description, fingerprints), `provenance`
/// as plain key-value pairs of the footer (see [`TokenTableWriter::set_provenance`]).
pub fn tokenize_to_table(
    corpus: &Corpus,
    tok: &Tokenizer,
    opts: &TokenizeOptions,
    out: &Path,
    extra: serde_json::Value,
    provenance: &[(String, String)],
) -> Result<TokenizeSummary> {
    let meta = TokenTableMeta {
        tokenizer_fingerprint: tok.fingerprint.clone(),
        mode: opts.mode.name().into(),
        context_size: opts.context_size,
        bos_id: tok.special.bos,
        eos_id: tok.special.eos,
        pad_id: match opts.mode {
            Mode::TransformerLens2 => Some(Tl2Tokenizer::new(tok, opts.transformer_lens.tl2_pad)?.pad),
            _ => tok.special.pad,
        },
        extra: serde_json::json!({ "options": opts, "user": extra }),
    };
    let mut w = TokenTableWriter::create(out, meta)?;
    w.set_provenance(provenance);
    for_each_context(corpus, tok, opts, |c| w.push(c))?;
    let contexts = w.finish()?;
    Ok(TokenizeSummary { contexts, tokens: contexts * opts.context_size as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(ctx: usize, docs: &[&[u32]]) -> Vec<Vec<u32>> {
        let mut p = SaeLensPacker::new(ctx, Some(0), None, Some(0));
        let mut out = Vec::new();
        for d in docs {
            p.push(d, &mut |c| {
                out.push(c.to_vec());
                Ok(true)
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn saelens_packing_starts_with_bos_and_separates_documents() {
        let out = pack(4, &[&[1, 2, 3, 4, 5], &[6, 7], &[8, 9, 10]]);
        assert_eq!(out, vec![vec![0, 1, 2, 3], vec![0, 4, 5, 0], vec![0, 6, 7, 0], vec![0, 8, 9, 10]]);
        // A document that already starts with BOS gets no second one.
        assert_eq!(pack(4, &[&[0, 1], &[0, 2, 3]]), vec![vec![0, 1, 0, 2]]);
    }

    #[test]
    fn tl_batches_follow_datasets_sharding() {
        assert_eq!(tl_batch_sizes(2300, 1000, None), vec![1000, 1000, 300]);
        assert_eq!(tl_batch_sizes(23, 1000, Some(10)), vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(tl_batch_sizes(3, 1000, Some(10)), vec![1, 1, 1]);
        assert_eq!(tl_batch_sizes(2500, 100, Some(2)).len(), 26);
    }

    #[test]
    fn mode_names_round_trip() {
        for m in [Mode::SaeLens, Mode::TransformerLens, Mode::TransformerLens2] {
            assert_eq!(Mode::from_name(m.name()), Some(m));
        }
        assert_eq!(serde_json::to_value(Mode::TransformerLens2).unwrap(), serde_json::json!("transformer_lens_2"));
    }

    #[test]
    fn short_batches_are_padded_or_dropped() {
        let run = |tokens: Vec<u32>, pad: Option<u32>| {
            let mut out = Vec::new();
            tl_emit_rows(tokens, 4, true, Some(0), pad, &mut |r| {
                out.push(r.to_vec());
                Ok(true)
            })
            .unwrap();
            out
        };
        assert_eq!(run(vec![5, 6], Some(9)), vec![vec![0, 5, 6, 9]]);
        assert!(run(vec![5, 6], None).is_empty());
        assert_eq!(run(vec![1, 2, 3, 4, 5, 6, 7], None), vec![vec![0, 1, 2, 3], vec![0, 4, 5, 6]]);
        assert!("\u{1c} \t\u{3000}".chars().all(py_isspace) && !py_isspace('\u{200b}'));
    }
}
