//! Pretrained coders of SAELens's registry in their releases' own on-disk
//! layouts, named by SAELens's conversion functions (see [`crate::registry`]).
//!
//! | conversion | files (`P` = the registry path) | tensors → SAELens layout |
//! |---|---|---|
//! | plain SAELens (`null`) | `P/cfg.json`, `P/sae_weights.safetensors` [+ `P/sparsity.safetensors`] | as stored |
//! | `gemma_2` | `P/params.npz` | `W_enc [d_in,d_sae]`, `W_dec`, `b_enc`, `b_dec`, `threshold`; JumpReLU |
//! | `gemma_3` | `P/params.safetensors` [+ `P/config.json`] | `w_enc`, `w_dec [d_sae,d_out]`, …, `affine_skip_connection [d_in,d_out]` → `W_skip` transposed |
//! | `llama_scope` | `P/hyperparams.json`, `P/checkpoints/final.safetensors` | `encoder.weight [d_sae,d_in]` and `decoder.weight [d_in,d_sae]` transposed; scalar threshold × √d_in / average input norm |
//! | `qwen_scope` | `P` (`layer<n>.sae.pt`) | `W_enc [d_sae,d_in]`, `W_dec [d_in,d_sae]` transposed; TopK, k from the repository name |
//! | `dictionary_learning_1` | `P/config.json`, `P/ae.pt` | `encoder.weight`/`decoder.weight` transposed or `W_enc`/`W_dec`; ReLU, TopK, gated or JumpReLU by `dict_class` |
//! | `mwhanna_transcoder` | `P` (`layer_<n>.safetensors`), `wandb-config.yaml` (or `wanb-config.yaml`) [+ `config.yaml`] | `W_enc [d_sae,d_in]` transposed; ReLU transcoder |
//!
//! Hooks, model names and the other metadata are derived as SAELens's loaders
//! derive them; then the release's config overrides apply, and for
//! `expected_average_only_in` coders the registry's norm scaling factor is
//! folded into the weights (`W_enc·s`, `W_dec/s`, `b_dec/s`), as
//! `SAE.from_pretrained` does. The registry's hook, normalisation, Neuronpedia
//! id and provenance land in the coder's metadata.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::arch::{Activation, Normalization};
use crate::coder::SparseCoder;
use crate::error::{Result, SaeError};
use crate::meta::Metadata;
use crate::registry::PretrainedSae;
use tensors::Tensors;

mod tensors;

/// How a release's files are laid out (SAELens's conversion function).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Conversion {
    /// The plain SAELens layout (`conversion_func: null`).
    SaeLens,
    /// Gemma Scope (Gemma 2): `params.npz`.
    Gemma2,
    /// Gemma Scope 2 (Gemma 3): `params.safetensors`.
    Gemma3,
    /// Llama Scope: `hyperparams.json` + `checkpoints/final.safetensors`.
    LlamaScope,
    /// Qwen Scope: `layer<n>.sae.pt`.
    QwenScope,
    /// dictionary_learning (SAEBench): `config.json` + `ae.pt`.
    DictionaryLearning1,
    /// mwhanna's transcoders: `layer_<n>.safetensors` + wandb config.
    MwhannaTranscoder,
}

impl Conversion {
    /// SAELens's names of the supported conversions (`sae_lens` is the plain layout).
    pub const SUPPORTED: &'static [&'static str] = &[
        "sae_lens (conversion_func null)",
        "gemma_2",
        "gemma_3",
        "llama_scope",
        "qwen_scope",
        "dictionary_learning_1",
        "mwhanna_transcoder",
    ];

    /// The conversion of a SAELens `conversion_func` name, if supported.
    pub fn parse(name: &str) -> Option<Conversion> {
        Some(match name {
            "sae_lens" => Conversion::SaeLens,
            "gemma_2" => Conversion::Gemma2,
            "gemma_3" => Conversion::Gemma3,
            "llama_scope" => Conversion::LlamaScope,
            "qwen_scope" => Conversion::QwenScope,
            "dictionary_learning_1" => Conversion::DictionaryLearning1,
            "mwhanna_transcoder" => Conversion::MwhannaTranscoder,
            _ => return None,
        })
    }

    /// SAELens's name of the conversion.
    pub fn name(self) -> &'static str {
        match self {
            Conversion::SaeLens => "sae_lens",
            Conversion::Gemma2 => "gemma_2",
            Conversion::Gemma3 => "gemma_3",
            Conversion::LlamaScope => "llama_scope",
            Conversion::QwenScope => "qwen_scope",
            Conversion::DictionaryLearning1 => "dictionary_learning_1",
            Conversion::MwhannaTranscoder => "mwhanna_transcoder",
        }
    }
}

/// The repository files a pretrained coder needs.
#[derive(Debug, Clone, PartialEq)]
pub struct FilePlan {
    /// Required files; each entry lists alternatives (the first one the
    /// repository has is taken). The last entry marks the set as complete.
    pub required: Vec<Vec<String>>,
    /// Fetched when the repository has them.
    pub optional: Vec<String>,
    /// Where the coder is in the repository (its folder, or its single file):
    /// what a cache key fingerprints and what a label names.
    pub primary: String,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

impl PretrainedSae {
    /// The files this coder needs from its repository.
    pub fn files(&self) -> FilePlan {
        let p = self.path.as_str();
        let one = |s: String| vec![s];
        let (required, optional) = match self.conversion {
            Conversion::SaeLens => (
                vec![one(join(p, "sae_weights.safetensors")), one(join(p, "cfg.json"))],
                vec![join(p, "sparsity.safetensors")],
            ),
            Conversion::Gemma2 => (vec![one(join(p, "params.npz"))], vec![]),
            Conversion::Gemma3 => (vec![one(join(p, "params.safetensors"))], vec![join(p, "config.json")]),
            Conversion::LlamaScope => {
                (vec![one(join(p, "checkpoints/final.safetensors")), one(join(p, "hyperparams.json"))], vec![])
            }
            Conversion::QwenScope => (vec![one(p.to_string())], vec![]),
            Conversion::DictionaryLearning1 => (vec![one(join(p, "ae.pt")), one(join(p, "config.json"))], vec![]),
            Conversion::MwhannaTranscoder => (
                vec![vec!["wandb-config.yaml".into(), "wanb-config.yaml".into()], one(p.to_string())],
                vec!["config.yaml".into()],
            ),
        };
        FilePlan { required, optional, primary: p.to_string() }
    }

    /// Picks the files to download from a commit's file list, completion marker
    /// last; or says what is missing.
    pub fn select(&self, listing: &[String]) -> std::result::Result<Vec<String>, String> {
        let plan = self.files();
        let has = |f: &str| listing.iter().any(|x| x == f);
        let mut required = Vec::new();
        for alts in &plan.required {
            match alts.iter().find(|f| has(f)) {
                Some(f) => required.push(f.clone()),
                None => {
                    let near: Vec<&str> = listing
                        .iter()
                        .filter(|f| f.starts_with(&format!("{}/", plan.primary)) || parent(f) == parent(&plan.primary))
                        .map(String::as_str)
                        .take(12)
                        .collect();
                    return Err(format!(
                        "the {} layout of `{}` needs `{}`, which the repository does not have{}",
                        self.conversion.name(),
                        plan.primary,
                        alts.join("` or `"),
                        if near.is_empty() { String::new() } else { format!("; files nearby: [{}]", near.join(", ")) }
                    ));
                }
            }
        }
        let marker = required.pop();
        let mut out: Vec<String> = required;
        out.extend(plan.optional.iter().filter(|f| has(f)).cloned());
        out.extend(marker);
        Ok(out)
    }

    /// Whether a snapshot directory holds every required file.
    pub fn complete_in(&self, snapshot: &Path) -> bool {
        self.files().required.iter().all(|alts| alts.iter().any(|f| snapshot.join(f).is_file()))
    }

    /// Loads the coder from a snapshot directory of its repository (the layout
    /// the Hugging Face cache or a plain download gives).
    pub fn load(&self, snapshot: &Path) -> Result<SparseCoder> {
        let p = &self.path;
        let at = |rel: &str| snapshot.join(join(p, rel));
        let (mut coder, meta) = match self.conversion {
            Conversion::SaeLens => {
                let c = crate::format::read_saelens(&snapshot.join(p))?;
                (c, Map::new())
            }
            Conversion::Gemma2 => self.gemma_2(&at("params.npz"))?,
            Conversion::Gemma3 => self.gemma_3(&at("params.safetensors"), &at("config.json"))?,
            Conversion::LlamaScope => {
                self.llama_scope(&at("hyperparams.json"), &at("checkpoints/final.safetensors"))?
            }
            Conversion::QwenScope => self.qwen_scope(&snapshot.join(p))?,
            Conversion::DictionaryLearning1 => self.dictionary_learning_1(&at("config.json"), &at("ae.pt"))?,
            Conversion::MwhannaTranscoder => self.mwhanna(snapshot)?,
        };
        // Derived metadata, then the release's overrides, then the registry's own fields.
        let mut m = coder.metadata.to_json_map();
        for (k, v) in meta {
            m.insert(k, v);
        }
        for (k, v) in &self.config_overrides {
            match k.as_str() {
                "d_in" | "d_sae" | "d_out" => {
                    let have = match k.as_str() {
                        "d_in" => coder.d_in,
                        "d_sae" => coder.d_sae,
                        _ => coder.d_out,
                    };
                    if v.as_u64() != Some(have as u64) {
                        return Err(SaeError::Invalid(format!(
                            "SAELens release `{}`: config override {k} = {v}, but the weights of `{}` have {k} {have}",
                            self.release, self.path
                        )));
                    }
                }
                "normalize_activations" => {
                    coder.normalize = v.as_str().and_then(Normalization::parse).ok_or_else(|| {
                        SaeError::Invalid(format!(
                            "SAELens release `{}`: config override normalize_activations = {v} is not supported",
                            self.release
                        ))
                    })?;
                }
                "dtype" | "device" | "revision" => {}
                _ => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(id) = &self.neuronpedia_id {
            m.insert("neuronpedia_id".into(), json!(id));
        }
        if coder.normalize == Normalization::ExpectedAverageOnlyIn {
            if let Some(s) = self.norm_scaling_factor {
                let s32 = s as f32;
                coder.w_enc.iter_mut().for_each(|v| *v *= s32);
                coder.w_dec.iter_mut().for_each(|v| *v /= s32);
                coder.b_dec.iter_mut().for_each(|v| *v /= s32);
                coder.normalize = Normalization::None;
                m.insert("norm_scaling_factor".into(), json!(s));
                m.insert("normalize_activations_folded".into(), json!("expected_average_only_in"));
            }
        }
        m.insert("saelens_release".into(), json!(self.release));
        m.insert("saelens_sae_id".into(), json!(self.sae_id));
        m.insert("saelens_conversion".into(), json!(self.conversion.name()));
        m.insert("saelens_registry_version".into(), json!(self.registry_version));
        m.insert("saelens_registry_model".into(), json!(self.model));
        m.insert("hf_repo_id".into(), json!(self.repo_id));
        m.insert("hf_revision".into(), json!(self.revision));
        m.insert("hf_path".into(), json!(self.path));
        if let Some(l0) = self.l0 {
            m.insert("saelens_expected_l0".into(), json!(l0));
        }
        coder.metadata = Metadata::from_json_map(&m);
        coder.validate().map_err(|e| SaeError::Invalid(format!("`{}/{}`: {e}", self.release, self.sae_id)))?;
        Ok(coder)
    }

    fn layer(&self, pattern_prefix: &str) -> Option<usize> {
        number_after(&self.path, pattern_prefix)
    }

    fn gemma_2(&self, file: &Path) -> Result<(SparseCoder, Map<String, Value>)> {
        let mut t = Tensors::npz(file)?;
        for (lower, upper) in [("w_enc", "W_enc"), ("w_dec", "W_dec")] {
            t.rename(lower, upper);
        }
        let [d_in, d_sae] = t.dims2("W_enc")?;
        let mut w_enc = t.take("W_enc", &[d_in, d_sae])?;
        let mut w_dec = t.take("W_dec", &[d_sae, d_in])?;
        let b_enc = t.take("b_enc", &[d_sae])?;
        let b_dec = t.take("b_dec", &[d_in])?;
        let threshold = t.take("threshold", &[d_sae])?;
        if t.has("scaling_factor") {
            let s = t.take("scaling_factor", &[d_sae])?;
            for (j, &sj) in s.iter().enumerate() {
                w_dec[j * d_in..(j + 1) * d_in].iter_mut().for_each(|v| *v *= sj);
            }
        }
        let (repo, folder) = (self.repo_id.as_str(), self.path.as_str());
        let embedding = folder.contains("embedding");
        if embedding {
            // Trained on embeddings scaled by √d_model, as SAELens undoes it.
            let r = (d_in as f32).sqrt();
            w_enc.iter_mut().for_each(|v| *v /= r);
            w_dec.iter_mut().for_each(|v| *v *= r);
        }
        let layer = if embedding { Some(0) } else { self.layer("layer_") };
        let model = ["2b-it", "9b-it", "27b-it", "2b", "9b", "27b"]
            .iter()
            .find(|k| repo.contains(*k))
            .map(|k| format!("gemma-2-{k}"))
            .unwrap_or_else(|| self.model.clone());
        let mut meta = Map::new();
        let hook = if repo.contains("res") && embedding {
            Some("hook_embed".to_string())
        } else if repo.contains("res") {
            layer.map(|l| format!("blocks.{l}.hook_resid_post"))
        } else if repo.contains("mlp") {
            layer.map(|l| format!("blocks.{l}.hook_mlp_out"))
        } else if repo.contains("att") {
            meta.insert("reshape_activations".into(), json!("hook_z"));
            layer.map(|l| format!("blocks.{l}.attn.hook_z"))
        } else {
            None
        };
        let hook = hook.ok_or_else(|| self.no_hook())?;
        meta.insert("model_name".into(), json!(model));
        meta.insert("hook_name".into(), json!(hook));
        meta.insert("dataset_path".into(), json!("monology/pile-uncopyrighted"));
        meta.insert("context_size".into(), json!(1024));
        meta.insert("prepend_bos".into(), json!(true));
        let coder =
            released_coder(Activation::JumpRelu { threshold }, [d_in, d_sae, d_in], (w_enc, b_enc), (w_dec, b_dec));
        Ok((coder, meta))
    }

    fn no_hook(&self) -> SaeError {
        SaeError::Invalid(format!(
            "SAELens release `{}` ({}): cannot tell the hook of `{}` from the repository `{}` and folder names",
            self.release,
            self.conversion.name(),
            self.path,
            self.repo_id
        ))
    }

    fn gemma_3(&self, file: &Path, config: &Path) -> Result<(SparseCoder, Map<String, Value>)> {
        let folder = self.path.as_str();
        if folder.contains("clt") {
            return Err(SaeError::Invalid(format!(
                "SAELens release `{}`: `{folder}` is a cross-layer transcoder; saepipe does not load Gemma Scope 2 CLTs",
                self.release
            )));
        }
        let raw: Map<String, Value> = if config.is_file() {
            let text = std::fs::read_to_string(config).map_err(|e| SaeError::io(config, e))?;
            serde_json::from_str(&text).map_err(|e| SaeError::Json { path: config.into(), source: e })?
        } else {
            Map::new()
        };
        if let Some(a) = raw.get("architecture").and_then(Value::as_str) {
            if a != "jump_relu" {
                return Err(SaeError::config(
                    config,
                    "architecture",
                    format!("`{a}` (Gemma Scope 2 coders are jump_relu)"),
                ));
            }
        }
        let layer = self.layer("layer_").ok_or_else(|| self.no_hook())?;
        let transcoder = folder.contains("transcoder");
        let (hook, hook_out, hf_in, hf_out) = if folder.contains("resid_post") {
            (format!("blocks.{layer}.hook_resid_post"), None, format!("model.layers.{layer}.output"), None)
        } else if folder.contains("attn_out") {
            (format!("blocks.{layer}.attn.hook_z"), None, format!("model.layers.{layer}.self_attn.o_proj.input"), None)
        } else if folder.contains("mlp_out") {
            (
                format!("blocks.{layer}.hook_mlp_out"),
                None,
                format!("model.layers.{layer}.post_feedforward_layernorm.output"),
                None,
            )
        } else if transcoder {
            (
                format!("blocks.{layer}.hook_mlp_in"),
                Some(format!("blocks.{layer}.hook_mlp_out")),
                format!("model.layers.{layer}.pre_feedforward_layernorm.output"),
                Some(format!("model.layers.{layer}.post_feedforward_layernorm.output")),
            )
        } else {
            return Err(self.no_hook());
        };
        let affine =
            transcoder && raw.get("affine_connection").and_then(Value::as_bool).unwrap_or(folder.contains("affine"));
        let mut t = Tensors::safetensors(file)?;
        let [d_in, d_sae] = t.dims2("w_enc")?;
        let d_out = if transcoder { t.dims2("w_dec")?[1] } else { d_in };
        let w_enc = t.take("w_enc", &[d_in, d_sae])?;
        let w_dec = t.take("w_dec", &[d_sae, d_out])?;
        let b_enc = t.take("b_enc", &[d_sae])?;
        let b_dec = t.take("b_dec", &[d_out])?;
        let threshold = t.take("threshold", &[d_sae])?;
        let w_skip = if affine { Some(t.transposed("affine_skip_connection", d_in, d_out)?) } else { None };
        let mut model = raw
            .get("model_name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| self.repo_id.replace("gemma-scope-2", "gemma-3"));
        if !model.contains("google") {
            model = format!("google/{model}");
        }
        model = model.replace("-v3", "-3");
        if model.contains("270m") {
            model = model.replace("-pt", "");
        }
        let mut meta = Map::new();
        meta.insert("model_name".into(), json!(model));
        meta.insert("hook_name".into(), json!(hook));
        meta.insert("hf_hook_name".into(), raw.get("hf_hook_point_in").cloned().unwrap_or(json!(hf_in)));
        if let Some(h) = hook_out {
            meta.insert("hook_name_out".into(), json!(h));
            meta.insert("hf_hook_name_out".into(), raw.get("hf_hook_point_out").cloned().unwrap_or(json!(hf_out)));
        }
        meta.insert("dataset_path".into(), json!("monology/pile-uncopyrighted"));
        meta.insert("context_size".into(), json!(1024));
        meta.insert("prepend_bos".into(), json!(true));
        let coder = SparseCoder {
            w_skip,
            transcoder,
            ..released_coder(Activation::JumpRelu { threshold }, [d_in, d_sae, d_out], (w_enc, b_enc), (w_dec, b_dec))
        };
        Ok((coder, meta))
    }

    fn llama_scope(&self, hyper: &Path, file: &Path) -> Result<(SparseCoder, Map<String, Value>)> {
        let h = read_json(hyper)?;
        let num = |k: &str| {
            h.get(k).and_then(Value::as_f64).ok_or_else(|| SaeError::config(hyper, k, "missing or not a number"))
        };
        let d_in = num("d_model")? as usize;
        let d_sae = num("d_sae")? as usize;
        let avg_in =
            h.get("dataset_average_activation_norm").and_then(|v| v.get("in")).and_then(Value::as_f64).ok_or_else(
                || SaeError::config(hyper, "dataset_average_activation_norm.in", "missing or not a number"),
            )?;
        // The scalar threshold, scaled as the input will be once the norm factor is folded.
        let thr = (num("jump_relu_threshold")? * (d_in as f64).sqrt() / avg_in) as f32;
        let hook = h
            .get("hook_point_in")
            .and_then(Value::as_str)
            .ok_or_else(|| SaeError::config(hyper, "hook_point_in", "missing"))?;
        let mut t = Tensors::safetensors(file)?;
        let w_enc = t.transposed("encoder.weight", d_sae, d_in)?;
        let w_dec = t.transposed("decoder.weight", d_in, d_sae)?;
        let b_enc = t.take("encoder.bias", &[d_sae])?;
        let b_dec = t.take("decoder.bias", &[d_in])?;
        let mut meta = Map::new();
        meta.insert("model_name".into(), json!("meta-llama/Llama-3.1-8B"));
        meta.insert("hook_name".into(), json!(hook));
        meta.insert("dataset_path".into(), json!("cerebras/SlimPajama-627B"));
        meta.insert("context_size".into(), json!(1024));
        meta.insert("prepend_bos".into(), json!(true));
        let coder = SparseCoder {
            normalize: Normalization::ExpectedAverageOnlyIn,
            ..released_coder(
                Activation::JumpRelu { threshold: vec![thr; d_sae] },
                [d_in, d_sae, d_in],
                (w_enc, b_enc),
                (w_dec, b_dec),
            )
        };
        Ok((coder, meta))
    }

    fn qwen_scope(&self, file: &Path) -> Result<(SparseCoder, Map<String, Value>)> {
        let (model_key, k) = parse_qwen_scope_repo(&self.repo_id).ok_or_else(|| {
            SaeError::Invalid(format!(
                "SAELens release `{}`: repository `{}` is not named SAE-Res-<model>-W<n>K-L0_<k> (qwen_scope takes k from it)",
                self.release, self.repo_id
            ))
        })?;
        let layer = number_after(&self.path, "layer").ok_or_else(|| self.no_hook())?;
        let mut t = Tensors::torch(file)?;
        let [d_sae, d_in] = t.dims2("W_enc")?;
        let w_enc = t.transposed("W_enc", d_sae, d_in)?;
        let w_dec = t.transposed("W_dec", d_in, d_sae)?;
        let b_enc = t.take("b_enc", &[d_sae])?;
        let b_dec = t.take("b_dec", &[d_in])?;
        if k == 0 || k > d_sae {
            return Err(SaeError::Invalid(format!(
                "`{}`: k {k} from the repository name is not in 1..={d_sae}",
                self.repo_id
            )));
        }
        let mut meta = Map::new();
        meta.insert("model_name".into(), json!(format!("Qwen/{model_key}")));
        meta.insert("hook_name".into(), json!(format!("blocks.{layer}.hook_resid_post")));
        meta.insert("hf_hook_name".into(), json!(format!("model.layers.{layer}")));
        meta.insert("context_size".into(), json!(1024));
        meta.insert("prepend_bos".into(), json!(true));
        let coder = released_coder(Activation::TopK { k }, [d_in, d_sae, d_in], (w_enc, b_enc), (w_dec, b_dec));
        Ok((coder, meta))
    }

    fn dictionary_learning_1(&self, config: &Path, file: &Path) -> Result<(SparseCoder, Map<String, Value>)> {
        let cfg = read_json(config)?;
        let trainer = cfg
            .get("trainer")
            .and_then(Value::as_object)
            .ok_or_else(|| SaeError::config(config, "trainer", "missing"))?;
        let tnum = |k: &str| {
            trainer.get(k).and_then(Value::as_u64).map(|v| v as usize).ok_or_else(|| {
                SaeError::config(config, &format!("trainer.{k}"), "missing or not a non-negative integer")
            })
        };
        let class = trainer.get("dict_class").and_then(Value::as_str).unwrap_or("AutoEncoder").to_string();
        let (d_in, d_sae, layer) = (tnum("activation_dim")?, tnum("dict_size")?, tnum("layer")?);
        let mut t = Tensors::torch(file)?;
        let w_enc = if t.has("W_enc") {
            t.take("W_enc", &[d_in, d_sae])?
        } else {
            t.transposed("encoder.weight", d_sae, d_in)?
        };
        let w_dec = if t.has("W_dec") {
            t.take("W_dec", &[d_sae, d_in])?
        } else {
            t.transposed("decoder.weight", d_in, d_sae)?
        };
        let b_dec_name = ["b_dec", "bias", "decoder_bias"].into_iter().find(|n| t.has(n)).unwrap_or("b_dec");
        let b_dec = t.take(b_dec_name, &[d_in])?;
        let b_enc_name = ["b_enc", "encoder.bias"].into_iter().find(|n| t.has(n));
        let mut apply_b_dec_to_input = true;
        let (activation, b_enc) = match class.as_str() {
            "GatedAutoEncoder" => (
                Activation::Gated {
                    b_gate: t.take("gate_bias", &[d_sae])?,
                    b_mag: t.take("mag_bias", &[d_sae])?,
                    r_mag: t.take("r_mag", &[d_sae])?,
                },
                Vec::new(),
            ),
            "AutoEncoderTopK" => {
                (Activation::TopK { k: tnum("k")? }, t.take(b_enc_name.unwrap_or("encoder.bias"), &[d_sae])?)
            }
            "MatryoshkaBatchTopKSAE" | "BatchTopKSAE" | "JumpReluAutoEncoder" => {
                if class == "JumpReluAutoEncoder" {
                    apply_b_dec_to_input = false;
                }
                let th = t.take_any("threshold")?;
                let threshold = match th.len() {
                    1 => vec![th[0]; d_sae],
                    n if n == d_sae => th,
                    n => {
                        return Err(SaeError::BadShape {
                            file: file.display().to_string(),
                            name: "threshold".into(),
                            expected: vec![d_sae],
                            found: vec![n],
                        });
                    }
                };
                (Activation::JumpRelu { threshold }, t.take(b_enc_name.unwrap_or("encoder.bias"), &[d_sae])?)
            }
            _ => (Activation::Relu, t.take(b_enc_name.unwrap_or("encoder.bias"), &[d_sae])?),
        };
        let lm = trainer.get("lm_name").and_then(Value::as_str).unwrap_or(&self.model);
        let mut meta = Map::new();
        meta.insert("model_name".into(), json!(lm.rsplit('/').next().unwrap_or(lm)));
        meta.insert("hook_name".into(), json!(format!("blocks.{layer}.hook_resid_post")));
        meta.insert("dataset_path".into(), json!("monology/pile-uncopyrighted"));
        if let Some(c) = cfg.get("buffer").and_then(|b| b.get("ctx_len")) {
            meta.insert("context_size".into(), c.clone());
        }
        meta.insert("prepend_bos".into(), json!(true));
        meta.insert("dictionary_learning_class".into(), json!(class));
        let coder = SparseCoder {
            apply_b_dec_to_input,
            ..released_coder(activation, [d_in, d_sae, d_in], (w_enc, b_enc), (w_dec, b_dec))
        };
        Ok((coder, meta))
    }

    fn mwhanna(&self, snapshot: &Path) -> Result<(SparseCoder, Map<String, Value>)> {
        let file = snapshot.join(&self.path);
        let layer = self
            .path
            .trim_end_matches(".safetensors")
            .rsplit('_')
            .next()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| self.no_hook())?;
        let mut t = Tensors::safetensors(&file)?;
        let [d_sae, d_in] = t.dims2("W_enc")?;
        let d_out = t.dims2("W_dec")?[1];
        let w_enc = t.transposed("W_enc", d_sae, d_in)?;
        let w_dec = t.take("W_dec", &[d_sae, d_out])?;
        let b_enc = t.take("b_enc", &[d_sae])?;
        let b_dec = t.take("b_dec", &[d_out])?;
        let read = |name: &str| std::fs::read_to_string(snapshot.join(name)).ok();
        let wandb = read("wandb-config.yaml").or_else(|| read("wanb-config.yaml")).unwrap_or_default();
        let model = read("config.yaml")
            .and_then(|c| yaml_top_scalar(&c, "model_name"))
            .or_else(|| number_text_after(&self.repo_id, "qwen3-").map(|s| format!("Qwen/Qwen3-{s}B")))
            .unwrap_or_else(|| self.model.clone());
        let mut meta = Map::new();
        meta.insert("model_name".into(), json!(model));
        meta.insert("hook_name".into(), json!(format!("blocks.{layer}.mlp.hook_in")));
        meta.insert("hook_name_out".into(), json!(format!("blocks.{layer}.hook_mlp_out")));
        meta.insert("dataset_path".into(), json!("monology/pile-uncopyrighted"));
        if let Some(b) = yaml_wandb_value(&wandb, "batch_size").and_then(|s| s.parse::<u64>().ok()) {
            meta.insert("context_size".into(), json!(b));
        }
        meta.insert("model_from_pretrained_kwargs".into(), json!({"fold_ln": false}));
        let coder = SparseCoder {
            transcoder: true,
            ..released_coder(Activation::Relu, [d_in, d_sae, d_out], (w_enc, b_enc), (w_dec, b_dec))
        };
        Ok((coder, meta))
    }
}

/// The decimal number right after the first `prefix` in `s` (`layer_12/…` → 12).
/// A coder with the defaults of the released layouts (no skip connection,
/// `b_dec` not subtracted from the input, no normalisation, an SAE); the
/// conversions override what differs.
fn released_coder(
    activation: Activation,
    [d_in, d_sae, d_out]: [usize; 3],
    (w_enc, b_enc): (Vec<f32>, Vec<f32>),
    (w_dec, b_dec): (Vec<f32>, Vec<f32>),
) -> SparseCoder {
    SparseCoder {
        activation,
        d_in,
        d_sae,
        d_out,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        w_skip: None,
        apply_b_dec_to_input: false,
        normalize: Normalization::None,
        transcoder: false,
        metadata: Metadata::default(),
        log_sparsity: None,
    }
}

fn number_after(s: &str, prefix: &str) -> Option<usize> {
    s.match_indices(prefix).find_map(|(i, _)| {
        let digits: String = s[i + prefix.len()..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The number (with an optional decimal part) after `prefix`, as text (`qwen3-1.7b` → `1.7`).
fn number_text_after(s: &str, prefix: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let i = lower.find(prefix)? + prefix.len();
    let n: String = lower[i..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    (lower[i + n.len()..].starts_with('b') && !n.is_empty()).then_some(n)
}

/// `(model_key, k)` of a Qwen Scope repository `…SAE-Res-<model_key>-W<n>K-L0_<k>`.
fn parse_qwen_scope_repo(repo: &str) -> Option<(String, usize)> {
    let rest = &repo[repo.find("SAE-Res-")? + "SAE-Res-".len()..];
    let (head, k) = rest.rsplit_once("-L0_")?;
    let k: usize = k.parse().ok()?;
    let (model_key, width) = head.rsplit_once("-W")?;
    width.strip_suffix('K')?.parse::<usize>().ok()?;
    Some((model_key.to_string(), k))
}

/// A top-level `key: value` scalar of a simple YAML file.
fn yaml_top_scalar(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?.trim();
        (!v.is_empty()).then(|| v.trim_matches(['"', '\'']).to_string())
    })
}

/// The `value:` under a top-level `key:` of a wandb config YAML.
fn yaml_wandb_value(text: &str, key: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != format!("{key}:")).skip(1);
    lines
        .by_ref()
        .take_while(|l| l.starts_with(' '))
        .find_map(|l| l.trim().strip_prefix("value:").map(|v| v.trim().trim_matches(['"', '\'']).to_string()))
}

fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| SaeError::io(path, e))?;
    match serde_json::from_str::<Value>(&text).map_err(|e| SaeError::Json { path: path.into(), source: e })? {
        Value::Object(m) => Ok(m),
        _ => Err(SaeError::config(path, "<root>", "expected a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(number_after("resid_post/layer_12_width_16k", "layer_"), Some(12));
        assert_eq!(number_after("layer4.sae.pt", "layer"), Some(4));
        assert_eq!(
            parse_qwen_scope_repo("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"),
            Some(("Qwen3-1.7B-Base".into(), 50))
        );
        assert_eq!(parse_qwen_scope_repo("Qwen/other"), None);
        assert_eq!(number_text_after("mwhanna/qwen3-1.7b-transcoders", "qwen3-"), Some("1.7".into()));
        let wandb = "_wandb:\n  value:\n    x: 1\nbatch_size:\n  desc: null\n  value: 64\nd_model:\n  value: 16\n";
        assert_eq!(yaml_wandb_value(wandb, "batch_size").as_deref(), Some("64"));
        assert_eq!(yaml_wandb_value(wandb, "d_model").as_deref(), Some("16"));
        assert_eq!(
            yaml_top_scalar("model_kind: x\nmodel_name: Qwen/Qwen3-0.6B\n", "model_name").as_deref(),
            Some("Qwen/Qwen3-0.6B")
        );
    }
}
