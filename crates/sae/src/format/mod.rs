//! On-disk formats of sparse coders and format detection.

pub mod npz;
pub mod pretrained;
pub mod saelens;
pub mod sparsify;
pub mod transcoder_pt;

use std::path::Path;

use crate::coder::SparseCoder;
use crate::error::{Result, SaeError};

pub use saelens::{read_saelens, write_saelens};
pub use sparsify::read_sparsify;
pub use transcoder_pt::load_transcoder_pt;

/// A recognised on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `cfg.json` + `sae_weights.safetensors`
    SaeLens,
    /// `cfg.json` + `sae.safetensors`
    Sparsify,
    /// A single `.pt` file of the transcoder paper (`{cfg, state_dict}`).
    TranscoderPt,
}

/// Detects the format of a coder directory by the files present, or of a
/// single coder file by its extension.
pub fn detect_format(path: &Path) -> Result<Format> {
    if path.is_file() {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if transcoder_pt::EXTENSIONS.contains(&ext) {
            return Ok(Format::TranscoderPt);
        }
        let found = match ext {
            "bin" => format!("a torch pickle file (`.{ext}`); coder files of the transcoder paper end in `.pt`, no reader for `.{ext}` is registered"),
            _ => "a single file; sparse coders are directories (SAELens: cfg.json + sae_weights.safetensors, sparsify: cfg.json + sae.safetensors) or transcoder-paper `.pt` files".to_string(),
        };
        return Err(SaeError::UnsupportedFormat { path: path.into(), found });
    }
    if !path.is_dir() {
        return Err(SaeError::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory")));
    }
    let has = |f: &str| path.join(f).is_file();
    if has(saelens::CFG_FILE) && has(saelens::WEIGHTS_FILE) {
        return Ok(Format::SaeLens);
    }
    if has(sparsify::CFG_FILE) && has(sparsify::WEIGHTS_FILE) {
        return Ok(Format::Sparsify);
    }
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| SaeError::io(path, e))?
        .filter_map(|e| e.ok())
        .map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() { format!("{n}/") } else { n }
        })
        .collect();
    names.sort();
    let subdirs_with_coders: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with('/'))
        .filter(|n| {
            let p = path.join(n.trim_end_matches('/'));
            p.join("cfg.json").is_file()
        })
        .collect();
    let mut found = if names.is_empty() {
        "an empty directory".to_string()
    } else {
        let shown: Vec<&str> = names.iter().take(12).map(String::as_str).collect();
        format!("files [{}]{}", shown.join(", "), if names.len() > 12 { ", ..." } else { "" })
    };
    if !subdirs_with_coders.is_empty() {
        found.push_str(&format!(
            "; subdirectories {:?} hold coders (one per hook point): pass one of them",
            subdirs_with_coders
        ));
    }
    Err(SaeError::UnsupportedFormat { path: path.into(), found })
}

/// Loads a sparse coder from a directory or file of any supported format.
pub fn load_coder(path: &Path) -> Result<SparseCoder> {
    match detect_format(path)? {
        Format::SaeLens => read_saelens(path),
        Format::Sparsify => read_sparsify(path),
        Format::TranscoderPt => load_transcoder_pt(path),
    }
}
