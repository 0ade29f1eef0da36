//! Corpus readers: documents streamed one at a time from JSONL, plain text and
//! Parquet files (also glob patterns and directories of them, such as a Hugging
//! Face datasets snapshot), so memory is bounded by one document (one Parquet
//! record batch for Parquet) whatever the corpus size.

use crate::error::{DataError, Result, io, pq};
use crate::rng::{ShuffleBuffer, SplitMix64};
use arrow_array::{Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// How one file holds its documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object per line; the document is the string in `field`.
    Jsonl {
        /// The JSON field holding the text.
        field: String,
    },
    /// One document per line (line breaks removed; empty lines are empty documents,
    /// as the Hugging Face `text` loader keeps them).
    TextLines,
    /// The whole file is one document.
    TextFile,
    /// The document is the string column `column`.
    Parquet {
        /// The column holding the text.
        column: String,
    },
}

/// Which format to read files with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatChoice {
    /// From the extension: `.jsonl`/`.ndjson`/`.json` → JSONL, `.parquet` → Parquet,
    /// anything else → text, one document per line. JSONL field and Parquet column
    /// are `text_field`.
    Auto,
    /// This format for every file.
    Fixed(FileFormat),
}

/// An ordered list of corpus files, each with its format.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The files in reading order, with the format each is read with.
    pub files: Vec<(PathBuf, FileFormat)>,
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn guess(path: &Path, text_field: &str) -> FileFormat {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("jsonl" | "ndjson" | "json") => FileFormat::Jsonl { field: text_field.to_string() },
        Some("parquet") => FileFormat::Parquet { column: text_field.to_string() },
        _ => FileFormat::TextLines,
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        // Hidden entries are caches and lock files (`.cache/`, `.gitattributes`).
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

impl Corpus {
    /// Resolves `inputs` (files, glob patterns, directories) in the given order.
    /// A directory contributes its Parquet files (recursively, sorted by path), or,
    /// where it holds none, its `.jsonl`/`.ndjson`/`.txt` files. Glob matches are sorted.
    pub fn resolve(inputs: &[impl AsRef<str>], format: &FormatChoice, text_field: &str) -> Result<Corpus> {
        let mut paths = Vec::new();
        for input in inputs {
            let input = input.as_ref();
            let p = Path::new(input);
            if p.is_dir() {
                let mut all = Vec::new();
                walk(p, &mut all)?;
                let ext =
                    |f: &PathBuf, e: &[&str]| f.extension().and_then(|x| x.to_str()).is_some_and(|x| e.contains(&x));
                let parquet: Vec<PathBuf> = all.iter().filter(|f| ext(f, &["parquet"])).cloned().collect();
                let chosen = if parquet.is_empty() {
                    all.into_iter().filter(|f| ext(f, &["jsonl", "ndjson", "txt"])).collect()
                } else {
                    parquet
                };
                if chosen.is_empty() {
                    return Err(DataError::Corpus {
                        path: p.into(),
                        message: "directory holds no .parquet, .jsonl, .ndjson or .txt files".into(),
                    });
                }
                paths.extend(chosen);
            } else if has_glob_chars(input) {
                let mut matched: Vec<PathBuf> = glob::glob(input)
                    .map_err(|e| DataError::Corpus { path: p.into(), message: format!("invalid glob pattern: {e}") })?
                    .filter_map(|r| r.ok())
                    .filter(|f| f.is_file())
                    .collect();
                if matched.is_empty() {
                    return Err(DataError::Corpus { path: p.into(), message: "glob pattern matches no file".into() });
                }
                matched.sort();
                paths.extend(matched);
            } else if p.is_file() {
                paths.push(p.to_path_buf());
            } else {
                return Err(DataError::Corpus { path: p.into(), message: "no such file or directory".into() });
            }
        }
        let files = paths
            .into_iter()
            .map(|p| {
                let f = match format {
                    FormatChoice::Auto => guess(&p, text_field),
                    FormatChoice::Fixed(f) => f.clone(),
                };
                (p, f)
            })
            .collect();
        Ok(Corpus { files })
    }

    /// Streams the documents, in file order.
    pub fn documents(&self) -> Documents {
        Documents { files: self.files.clone(), next_file: 0, current: None }
    }

    /// Streams the documents, shuffled by a seeded shuffle buffer of `buffer_docs`
    /// documents (see docs/formats.md; reproducible for a given seed and buffer size).
    pub fn shuffled_documents(&self, seed: u64, buffer_docs: usize) -> ShuffledDocuments {
        ShuffledDocuments {
            inner: self.documents(),
            buffer: Some(ShuffleBuffer::new(buffer_docs, SplitMix64::new(seed))),
            tail: None,
        }
    }

    /// Fails, naming the corpus file(s), when the corpus holds no document with
    /// text (no documents at all, or only empty ones), which can yield no tokens.
    /// Reads only up to the first non-empty document.
    pub fn check_has_text(&self) -> Result<()> {
        let mut empty = 0u64;
        for d in self.documents() {
            if !d?.is_empty() {
                return Ok(());
            }
            empty += 1;
        }
        let path = match self.files.as_slice() {
            [(one, _)] => one.clone(),
            many => PathBuf::from(many.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>().join(", ")),
        };
        let message = match empty {
            0 => "the corpus holds no documents".to_string(),
            n => format!("the corpus holds only empty documents ({n} of them)"),
        };
        Err(DataError::Corpus { path, message })
    }

    /// Number of documents (one pass over the corpus).
    pub fn count_documents(&self) -> Result<u64> {
        let mut n = 0;
        for d in self.documents() {
            d?;
            n += 1;
        }
        Ok(n)
    }
}

enum Source {
    Lines { path: PathBuf, reader: std::io::BufReader<std::fs::File>, line: usize, json_field: Option<String> },
    Parquet { path: PathBuf, reader: ParquetRecordBatchReader, batch: Option<RecordBatch>, row: usize, column: String },
}

/// Iterator over the documents of a [`Corpus`].
pub struct Documents {
    files: Vec<(PathBuf, FileFormat)>,
    next_file: usize,
    current: Option<Source>,
}

fn string_at(path: &Path, column: &str, batch: &RecordBatch, row: usize) -> Result<String> {
    let col = batch.column(0);
    let null = || DataError::Corpus { path: path.into(), message: format!("column `{column}` has a null document") };
    if col.is_null(row) {
        return Err(null());
    }
    if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
        Ok(a.value(row).to_string())
    } else if let Some(a) = col.as_any().downcast_ref::<LargeStringArray>() {
        Ok(a.value(row).to_string())
    } else if let Some(a) = col.as_any().downcast_ref::<StringViewArray>() {
        Ok(a.value(row).to_string())
    } else {
        Err(DataError::Corpus {
            path: path.into(),
            message: format!("column `{column}` has type {}, expected a string column", col.data_type()),
        })
    }
}

impl Documents {
    fn open(&mut self, path: PathBuf, format: FileFormat) -> Result<Option<String>> {
        match format {
            FileFormat::TextFile => Ok(Some(std::fs::read_to_string(&path).map_err(io(&path))?)),
            FileFormat::TextLines | FileFormat::Jsonl { .. } => {
                let file = std::fs::File::open(&path).map_err(io(&path))?;
                let json_field = match format {
                    FileFormat::Jsonl { field } => Some(field),
                    _ => None,
                };
                self.current = Some(Source::Lines {
                    path,
                    reader: std::io::BufReader::with_capacity(1 << 16, file),
                    line: 0,
                    json_field,
                });
                Ok(None)
            }
            FileFormat::Parquet { column } => {
                let file = std::fs::File::open(&path).map_err(io(&path))?;
                let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq(&path))?;
                let leaves: Vec<usize> = b
                    .parquet_schema()
                    .columns()
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.path().parts() == [column.as_str()])
                    .map(|(i, _)| i)
                    .collect();
                if leaves.is_empty() {
                    let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
                    return Err(DataError::Corpus {
                        path,
                        message: format!("no column `{column}` (columns: {})", names.join(", ")),
                    });
                }
                let mask = ProjectionMask::leaves(b.parquet_schema(), leaves);
                let reader = b.with_projection(mask).with_batch_size(1024).build().map_err(pq(&path))?;
                self.current = Some(Source::Parquet { path, reader, batch: None, row: 0, column });
                Ok(None)
            }
        }
    }

    fn next_from_current(&mut self) -> Result<Option<String>> {
        let Some(src) = self.current.as_mut() else { return Ok(None) };
        match src {
            Source::Lines { path, reader, line, json_field } => {
                let mut buf = String::new();
                loop {
                    buf.clear();
                    let n = reader.read_line(&mut buf).map_err(|e| DataError::Corpus {
                        path: path.clone(),
                        message: format!("line {}: {e}", *line + 1),
                    })?;
                    if n == 0 {
                        return Ok(None);
                    }
                    *line += 1;
                    if buf.ends_with('\n') {
                        buf.pop();
                        if buf.ends_with('\r') {
                            buf.pop();
                        }
                    }
                    let Some(field) = json_field else { return Ok(Some(std::mem::take(&mut buf))) };
                    if buf.trim().is_empty() {
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(&buf).map_err(|e| DataError::Corpus {
                        path: path.clone(),
                        message: format!("line {}: invalid JSON: {e}", line),
                    })?;
                    return match v.get(field.as_str()) {
                        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                        Some(other) => Err(DataError::Corpus {
                            path: path.clone(),
                            message: format!("line {line}: field `{field}` is not a string but {other}"),
                        }),
                        None => Err(DataError::Corpus {
                            path: path.clone(),
                            message: format!("line {line}: no field `{field}`"),
                        }),
                    };
                }
            }
            Source::Parquet { path, reader, batch, row, column } => loop {
                if let Some(b) = batch
                    && *row < b.num_rows()
                {
                    let s = string_at(path, column, b, *row)?;
                    *row += 1;
                    return Ok(Some(s));
                }
                match reader.next() {
                    None => return Ok(None),
                    Some(r) => {
                        *batch =
                            Some(r.map_err(|e| DataError::Parquet { path: path.clone(), message: e.to_string() })?);
                        *row = 0;
                    }
                }
            },
        }
    }
}

impl Iterator for Documents {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        loop {
            match self.next_from_current() {
                Ok(Some(doc)) => return Some(Ok(doc)),
                Ok(None) => self.current = None,
                Err(e) => {
                    // Stop after an error: the caller reports it.
                    self.current = None;
                    self.next_file = self.files.len();
                    return Some(Err(e));
                }
            }
            if self.next_file >= self.files.len() {
                return None;
            }
            let (path, format) = self.files[self.next_file].clone();
            self.next_file += 1;
            match self.open(path, format) {
                Ok(Some(doc)) => return Some(Ok(doc)),
                Ok(None) => {}
                Err(e) => {
                    self.next_file = self.files.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Documents through a seeded shuffle buffer.
pub struct ShuffledDocuments {
    inner: Documents,
    buffer: Option<ShuffleBuffer<String>>,
    tail: Option<std::vec::IntoIter<String>>,
}

impl Iterator for ShuffledDocuments {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        if let Some(tail) = self.tail.as_mut() {
            return tail.next().map(Ok);
        }
        let buffer = self.buffer.as_mut()?;
        for doc in self.inner.by_ref() {
            match doc {
                Err(e) => return Some(Err(e)),
                Ok(doc) => {
                    if let Some(out) = buffer.push(doc) {
                        return Some(Ok(out));
                    }
                }
            }
        }
        self.tail = Some(self.buffer.take()?.drain());
        self.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_corpora_are_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let none = tmp.path().join("none.jsonl");
        std::fs::write(&none, "").unwrap();
        let blank = tmp.path().join("blank.jsonl");
        std::fs::write(&blank, "{\"text\": \"\"}\n{\"text\": \"\"}\n").unwrap();
        let ok = tmp.path().join("ok.jsonl");
        std::fs::write(&ok, "{\"text\": \"\"}\n{\"text\": \"hi\"}\n").unwrap();
        let check =
            |p: &Path| Corpus::resolve(&[p.to_str().unwrap()], &FormatChoice::Auto, "text").unwrap().check_has_text();
        let e = check(&none).unwrap_err().to_string();
        assert!(e.contains("none.jsonl") && e.contains("holds no documents"), "{e}");
        let e = check(&blank).unwrap_err().to_string();
        assert!(e.contains("blank.jsonl") && e.contains("only empty documents (2 of them)"), "{e}");
        check(&ok).unwrap();
    }
}
