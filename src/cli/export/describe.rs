//! What an exported artifact holds, found from its manifest and the metadata
//! of its files, written as `_saepipe.json` (for programs) and `_README.md`
//! (for people: what it is, and how to open it without saepipe).

use super::{DESCRIPTION_FILE, README_FILE};
use anyhow::{Context, Result, bail};
use arrow_schema::DataType;
use parquet::file::reader::{FileReader, SerializedFileReader};
use saepipe_cache::{FileEntry, Manifest};
use saepipe_data::{DataError, Dtype, LEGACY_STORE_INDEX_FILE, STORE_INDEX_FILE, StoreInfo};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::path::Path;

/// Version of `_saepipe.json`'s layout.
const EXPORT_FORMAT_VERSION: u32 = 1;

/// An artifact's payload, as the export sees it.
pub(crate) struct Content {
    /// Every payload file with its path in the export: the path it has in the
    /// cache, except that a store index named `store.json` (older stores)
    /// becomes `_store.json`, so dataset readers skip it.
    pub files: Vec<(FileEntry, String)>,
    /// The activation store, when the artifact is one.
    pub store: Option<StoreInfo>,
    /// Sparse coders (SAELens or sparsify directories) in the artifact.
    coders: Vec<Coder>,
    /// Parquet tables other than activation store shards.
    tables: Vec<Table>,
}

struct Coder {
    /// The coder's directory, relative to the artifact (`.` for the root).
    dir: String,
    /// Its `cfg.json`.
    cfg: Value,
    /// Name of its weights file.
    weights: &'static str,
}

struct Table {
    path: String,
    rows: i64,
    /// (name, type) of every column.
    columns: Vec<(String, String)>,
    /// The file's `saepipe.*` key-value metadata.
    saepipe: BTreeMap<String, String>,
}

/// Reads what the artifact in `dir` (with manifest `m`, verified) holds.
pub(super) fn survey(dir: &Path, m: &Manifest) -> Result<Content> {
    let store = if m.file(STORE_INDEX_FILE).is_some() || m.file(LEGACY_STORE_INDEX_FILE).is_some() {
        match StoreInfo::load(dir) {
            Ok(info) => Some(info),
            Err(e @ DataError::UnsupportedVersion { .. }) => return Err(e.into()),
            // Some other file of that name (a `command` stage's output): plain data.
            Err(_) => None,
        }
    } else {
        None
    };
    let mut files = Vec::new();
    for f in &m.files {
        let dest = match &store {
            Some(_) if f.path == LEGACY_STORE_INDEX_FILE => STORE_INDEX_FILE.to_string(),
            _ => f.path.clone(),
        };
        if dest == README_FILE || dest == DESCRIPTION_FILE {
            bail!("its file `{}` has the name of a file the export writes to describe it", f.path);
        }
        files.push((f.clone(), dest));
    }
    let shards: HashSet<&str> = store.iter().flat_map(|s| s.shards.iter().map(|x| x.file.as_str())).collect();
    let mut coders = Vec::new();
    let mut tables = Vec::new();
    for f in &m.files {
        let (parent, name) = f.path.rsplit_once('/').unwrap_or((".", f.path.as_str()));
        if name == "cfg.json" {
            let sibling = |n: &str| if parent == "." { n.to_string() } else { format!("{parent}/{n}") };
            let weights =
                ["sae_weights.safetensors", "sae.safetensors"].into_iter().find(|w| m.file(&sibling(w)).is_some());
            if let Some(weights) = weights {
                let path = dir.join(&f.path);
                let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                // A cfg.json that is not JSON is exported as a plain file, not described.
                if let Ok(cfg) = serde_json::from_slice(&text) {
                    coders.push(Coder { dir: parent.to_string(), cfg, weights });
                }
            }
        } else if name.ends_with(".parquet") && !shards.contains(f.path.as_str()) {
            // Likewise a `.parquet` file that is not Parquet (a `command` stage may write anything).
            if let Ok(t) = table(&dir.join(&f.path), &f.path) {
                tables.push(t);
            }
        }
    }
    Ok(Content { files, store, coders, tables })
}

/// The footer of a Parquet file: rows, columns and saepipe metadata.
fn table(path: &Path, rel: &str) -> Result<Table> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader =
        SerializedFileReader::new(file).with_context(|| format!("reading the Parquet footer of {}", path.display()))?;
    let md = reader.metadata().file_metadata();
    let schema = parquet::arrow::parquet_to_arrow_schema(md.schema_descr(), md.key_value_metadata())
        .with_context(|| format!("reading the schema of {}", path.display()))?;
    let columns = schema.fields().iter().map(|f| (f.name().clone(), type_name(f.data_type()))).collect();
    let saepipe = md
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key.starts_with("saepipe."))
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    Ok(Table { path: rel.to_string(), rows: md.num_rows(), columns, saepipe })
}

/// An Arrow type as pyarrow prints it (`uint32`, `fixed_size_list<float32>[512]`).
fn type_name(t: &DataType) -> String {
    match t {
        DataType::FixedSizeList(f, n) => format!("fixed_size_list<{}>[{n}]", type_name(f.data_type())),
        DataType::List(f) | DataType::LargeList(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "bool".into(),
        other => other.to_string().to_lowercase(),
    }
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "float32",
        Dtype::F16 => "float16",
    }
}

impl Content {
    fn kind(&self) -> &'static str {
        if self.store.is_some() {
            "activation_store"
        } else if !self.coders.is_empty() {
            "sparse_coder"
        } else if !self.tables.is_empty() {
            "tables"
        } else {
            "files"
        }
    }
}

/// `_saepipe.json` and `_README.md` of an export into `dir`. `tokenizer`: what
/// the store's token table says about its tokenizer, when it is known.
pub(super) fn render(c: &Content, m: &Manifest, tokenizer: Option<Value>, dir: &Path) -> (Value, String) {
    let mut j = json!({
        "format": "saepipe-export",
        "format_version": EXPORT_FORMAT_VERSION,
        "exported_by": format!("saepipe {}", env!("CARGO_PKG_VERSION")),
        "kind": c.kind(),
        "artifact": {
            "key": m.key.to_string(),
            "op": m.op,
            "op_version": m.op_version,
            "stage": m.stage,
            "published_by": format!("saepipe {}", m.saepipe_version),
            "created_unix": m.created_unix,
            "params": m.params,
            "inputs": m.inputs,
            "external": m.external,
            "metrics": m.metrics,
        },
        "files": c.files.iter().map(|(f, dest)| json!({"path": dest, "size": f.size, "blake3": f.blake3})).collect::<Vec<_>>(),
    });
    let tokenizer = c.store.as_ref().map(|s| {
        let mut t = tokenizer.unwrap_or_else(|| json!({}));
        if let Some(fp) = s.meta.extra.get("tokenizer_fingerprint") {
            t["tokenizer_json_blake3"] = fp.clone();
        }
        t
    });
    if let Some(s) = &c.store {
        j["activation_store"] = json!({
            "model": s.meta.model,
            "revision": s.meta.revision,
            "weight_fingerprint": s.meta.weight_fingerprint,
            "hooks": s.meta.hooks,
            "dtype": dtype_name(s.meta.dtype),
            "rows": s.total_tokens,
            "shards": s.shards.len(),
            "rows_per_shard": s.rows_per_shard,
            "context_size": s.meta.context_size,
            "compression": s.compression.name(),
            "processing": s.meta.processing,
            "token_artifact": s.meta.token_artifact,
            "tokenizer": tokenizer,
            "index": STORE_INDEX_FILE,
        });
    }
    if !c.coders.is_empty() {
        j["coders"] = c
            .coders
            .iter()
            .map(|k| json!({"dir": k.dir, "weights": k.weights, "summary": coder_summary(&k.cfg), "cfg": k.cfg}))
            .collect();
    }
    if !c.tables.is_empty() {
        j["tables"] = c
            .tables
            .iter()
            .map(|t| {
                let cols: Vec<Value> = t.columns.iter().map(|(n, ty)| json!({"name": n, "type": ty})).collect();
                json!({"path": t.path, "rows": t.rows, "columns": cols, "saepipe_metadata": t.saepipe})
            })
            .collect();
    }
    (j, readme(c, m, tokenizer.as_ref(), dir))
}

/// The cfg.json fields people look for first (SAELens 6 and older, sparsify).
fn coder_summary(cfg: &Value) -> Value {
    let meta = cfg.get("metadata").unwrap_or(&Value::Null);
    let pick = |keys: &[&str]| {
        keys.iter().find_map(|k| cfg.get(*k).or_else(|| meta.get(*k)).filter(|v| !v.is_null())).cloned()
    };
    let mut out = serde_json::Map::new();
    for (name, keys) in [
        ("architecture", &["architecture"][..]),
        ("d_in", &["d_in"]),
        ("d_sae", &["d_sae", "num_latents"]),
        ("d_out", &["d_out"]),
        ("k", &["k"]),
        ("hook_name", &["hook_name", "hook_point"]),
        ("hook_name_out", &["hook_name_out"]),
        ("model_name", &["model_name"]),
        ("dtype", &["dtype"]),
        ("normalize_activations", &["normalize_activations"]),
    ] {
        if let Some(v) = pick(keys) {
            out.insert(name.into(), v);
        }
    }
    Value::Object(out)
}

fn readme(c: &Content, m: &Manifest, tokenizer: Option<&Value>, dir: &Path) -> String {
    let mut r = String::new();
    let hooks = |s: &StoreInfo| s.meta.hooks.iter().map(|h| format!("`{}`", h.name)).collect::<Vec<_>>().join(", ");
    let title = match (&c.store, c.coders.first()) {
        (Some(s), _) => format!("Activations of `{}` at {}", s.meta.model, hooks(s)),
        (None, Some(_)) => format!("Sparse coder from stage `{}`", m.stage),
        (None, None) if !c.tables.is_empty() => format!("Tables from stage `{}`", m.stage),
        _ => format!("Files from stage `{}`", m.stage),
    };
    let _ = writeln!(r, "# {title}\n");
    let _ = writeln!(
        r,
        "Exported by saepipe {} from its cache: artifact `{}` (stage `{}`, op `{}` version {}), published {} by saepipe {}. \
         Files whose names start with `_` describe the data; pyarrow and pandas skip them when they open the \
         directory, and polars, DuckDB and Hugging Face `datasets` are given the `*.parquet` files. `{DESCRIPTION_FILE}` holds everything below in JSON, with every file's size and blake3 \
         (check them with `b3sum`).\n",
        env!("CARGO_PKG_VERSION"),
        m.key,
        m.stage,
        m.op,
        m.op_version,
        utc(m.created_unix),
        m.saepipe_version
    );
    // Paths in the snippets: the directory as it was exported to, as a Python string literal.
    let path = format!("{:?}", dir.display().to_string());
    if let Some(s) = &c.store {
        store_section(&mut r, s, tokenizer, &path);
    }
    for k in &c.coders {
        coder_section(&mut r, k, &path);
    }
    if !c.tables.is_empty() {
        tables_section(&mut r, &c.tables, &path);
    }
    let _ = writeln!(r, "## Files\n");
    let shards = c.store.as_ref().map_or(0, |s| s.shards.len());
    if shards > 0 {
        let s = c.store.as_ref().unwrap();
        let (first, last) = (&s.shards[0].file, &s.shards[shards - 1].file);
        let range = if shards == 1 { format!("`{first}`") } else { format!("`{first}` … `{last}`") };
        let _ = writeln!(r, "- {range}: {shards} Parquet shard(s) of the store, in row order");
        let _ = writeln!(r, "- `{STORE_INDEX_FILE}`: the store index (saepipe activation store format, see below)");
    }
    let shard_names: HashSet<&str> = c.store.iter().flat_map(|s| s.shards.iter().map(|x| x.file.as_str())).collect();
    for (f, dest) in &c.files {
        if shards > 0 && (shard_names.contains(f.path.as_str()) || dest == STORE_INDEX_FILE) {
            continue;
        }
        let _ = writeln!(r, "- `{dest}` ({})", crate::exec::plan::human_bytes(f.size));
    }
    let _ = writeln!(r, "- `{README_FILE}`, `{DESCRIPTION_FILE}`: this description\n");
    let _ = writeln!(r, "## How it was made\n");
    let _ = writeln!(r, "Parameters of stage `{}` (op `{}`), as they entered the cache key:\n", m.stage, m.op);
    let _ = writeln!(r, "```json\n{}\n```\n", serde_json::to_string_pretty(&m.params).unwrap_or_default());
    if !m.inputs.is_empty() {
        let _ = writeln!(r, "Inputs (cache keys of the artifacts it was computed from):\n");
        for (label, key) in &m.inputs {
            let _ = writeln!(r, "- {label}: `{key}`");
        }
        r.push('\n');
    }
    if !m.external.is_empty() {
        let _ = writeln!(r, "External files, by content fingerprint (blake3):\n");
        for (label, fp) in &m.external {
            let _ = writeln!(r, "- {label}: `{fp}`");
        }
        r.push('\n');
    }
    r
}

fn store_section(r: &mut String, s: &StoreInfo, tokenizer: Option<&Value>, path: &str) {
    let meta = &s.meta;
    let dtype = dtype_name(meta.dtype);
    let (model, revision) = match &meta.revision {
        Some(rev) => (meta.model.strip_suffix(&format!("@{rev}")).unwrap_or(&meta.model), rev.as_str()),
        None => (meta.model.as_str(), "(none given)"),
    };
    let tok = match tokenizer {
        Some(t) => {
            let mut parts = Vec::new();
            if let Some(name) = t.get("tokenizer").and_then(Value::as_str) {
                parts.push(format!("`{name}`"));
            }
            if let Some(mode) = t.get("mode").and_then(Value::as_str) {
                parts.push(format!("packed as `{mode}`"));
            }
            if let Some(fp) = t.get("tokenizer_json_blake3").and_then(Value::as_str) {
                parts.push(format!("tokenizer.json blake3 `{fp}`"));
            }
            if parts.is_empty() { "unknown".to_string() } else { parts.join("; ") }
        }
        None => "unknown".to_string(),
    };
    let _ = writeln!(r, "## The activation store\n");
    let _ = writeln!(r, "| | |\n|---|---|");
    let _ = writeln!(r, "| model | `{model}` |");
    let _ = writeln!(r, "| revision | `{revision}` |");
    let _ = writeln!(r, "| weights (blake3 fingerprint) | `{}` |", meta.weight_fingerprint);
    for h in &meta.hooks {
        let _ = writeln!(r, "| hook | `{}`: {} values per token |", h.name, h.d);
    }
    let _ = writeln!(r, "| dtype | {dtype} |");
    let _ = writeln!(r, "| rows (tokens) | {} in {} shard(s) |", s.total_tokens, s.shards.len());
    let _ = writeln!(r, "| context size | {} tokens |", meta.context_size);
    let _ = writeln!(r, "| tokenizer | {tok} |");
    let _ = writeln!(r, "| weight processing | `{}` |", meta.processing);
    let _ = writeln!(r, "| compression | {} |\n", s.compression.name());
    let _ = writeln!(r, "One row per token, in store order (context by context). Columns:\n");
    let _ = writeln!(r, "- `seq` (uint64): the context's index in the token table");
    let _ = writeln!(r, "- `pos` (uint32): the token's position in its context");
    let _ = writeln!(r, "- `token` (uint32): the token id");
    for h in &meta.hooks {
        let _ = writeln!(
            r,
            "- `{}` (fixed_size_list<{dtype}>[{}]): the hook's activation at that token (TransformerLens hook name)",
            h.name, h.d
        );
    }
    let hook = &meta.hooks[0].name;
    let _ = writeln!(r, "\n## Opening it\n");
    let _ = writeln!(
        r,
        "```python\npath = {path}  # this directory\nhook = \"{hook}\"\n\n\
         # pandas (through pyarrow): one DataFrame; each hook cell holds a numpy array\n\
         import pandas as pd\ndf = pd.read_parquet(path)\n\n\
         # pyarrow: one hook as a (rows, d) numpy array\n\
         import pyarrow.dataset as ds\n\
         col = ds.dataset(path).to_table(columns=[hook]).column(hook).combine_chunks()\n\
         acts = col.flatten().to_numpy().reshape(-1, col.type.list_size)\n\n\
         # polars: give it the files (it refuses a directory that holds other files too)\n\
         import polars as pl\n\
         acts = pl.read_parquet(f\"{{path}}/*.parquet\", columns=[hook])[hook].to_numpy()\n\n\
         # DuckDB\nimport duckdb\n\
         duckdb.sql(f\"SELECT seq, pos, token FROM read_parquet('{{path}}/*.parquet') LIMIT 5\").show()\n\n\
         # Hugging Face datasets\nfrom datasets import load_dataset\n\
         data = load_dataset(\"parquet\", data_files=f\"{{path}}/*.parquet\", split=\"train\")\n```\n"
    );
    let _ = writeln!(
        r,
        "The store index `{STORE_INDEX_FILE}` (JSON: format `saepipe-activations`, version {}) lists every shard with \
         its first row, row count, size and blake3; each shard also carries the store's metadata under the Parquet \
         key `saepipe.store_meta`.\n",
        s.format_version
    );
}

fn coder_section(r: &mut String, k: &Coder, path: &str) {
    let summary = coder_summary(&k.cfg);
    let at = if k.dir == "." { "this directory".to_string() } else { format!("`{}/`", k.dir) };
    let layout = if k.weights == "sae.safetensors" { "EleutherAI sparsify" } else { "SAELens" };
    let _ = writeln!(r, "## Sparse coder in {at}\n");
    let _ = writeln!(r, "{layout} layout: `cfg.json` and `{}`.\n", k.weights);
    let _ = writeln!(r, "| | |\n|---|---|");
    if let Value::Object(fields) = &summary {
        for (name, v) in fields {
            let shown = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            let _ = writeln!(r, "| {name} | `{shown}` |");
        }
    }
    let sub = if k.dir == "." { String::new() } else { format!("/{}", k.dir) };
    let _ = writeln!(r, "\n```python\npath = {path}  # this directory\n");
    let _ = writeln!(r, "# the tensors as numpy arrays");
    let _ = writeln!(r, "from safetensors.numpy import load_file\nw = load_file(f\"{{path}}{sub}/{}\")", k.weights);
    if k.weights == "sae_weights.safetensors" {
        let _ = writeln!(r, "\n# with SAELens\nfrom sae_lens import SAE\nsae = SAE.load_from_disk(f\"{{path}}{sub}\")");
    }
    let _ = writeln!(r, "```\n");
}

fn tables_section(r: &mut String, tables: &[Table], path: &str) {
    let _ = writeln!(r, "## Tables\n");
    for t in tables {
        let _ = writeln!(r, "`{}`: {} rows\n", t.path, t.rows);
        let _ = writeln!(r, "| column | type |\n|---|---|");
        for (name, ty) in &t.columns {
            let _ = writeln!(r, "| `{name}` | {ty} |");
        }
        r.push('\n');
        if !t.saepipe.is_empty() {
            let _ = writeln!(r, "saepipe metadata (Parquet key-value metadata of the file):\n");
            for (key, v) in &t.saepipe {
                let _ = writeln!(r, "- `{key}`: `{v}`");
            }
            r.push('\n');
        }
    }
    let first = &tables[0].path;
    let _ = writeln!(
        r,
        "```python\npath = {path}  # this directory\n\nimport pandas as pd\ndf = pd.read_parquet(f\"{{path}}/{first}\")\n\n\
         import polars as pl\ndf = pl.read_parquet(f\"{{path}}/{first}\")\n\n\
         import duckdb\nduckdb.sql(f\"SELECT * FROM read_parquet('{{path}}/{first}') LIMIT 5\").show()\n```\n"
    );
}

/// `2026-01-31 12:00:00 UTC` for seconds since the Unix epoch.
fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a proleptic Gregorian date (eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_767_225_599.5), "2025-12-31 23:59:59 UTC");
    }

    #[test]
    fn arrow_type_names() {
        use arrow_schema::{DataType, Field};
        let list = DataType::FixedSizeList(std::sync::Arc::new(Field::new("item", DataType::Float32, false)), 64);
        assert_eq!(super::type_name(&list), "fixed_size_list<float32>[64]");
        assert_eq!(super::type_name(&DataType::UInt32), "uint32");
        assert_eq!(super::type_name(&DataType::Utf8), "string");
    }
}
