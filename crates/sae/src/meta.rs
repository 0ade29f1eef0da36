//! Provenance metadata carried by a sparse coder (SAELens `metadata` block).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Typed view of the metadata users rely on; every other key is kept verbatim
/// in `extra` and written back on save.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Model the coder was trained on (TransformerLens / hub name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Input hook point (TransformerLens name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_name: Option<String>,
    /// Attention head of the hook, for per-head hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_head_index: Option<i64>,
    /// Output hook point of a transcoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_name_out: Option<String>,
    /// Tokens per training sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u64>,
    /// Whether a BOS token was prepended to each sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepend_bos: Option<bool>,
    /// Training dataset (hub name or path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_path: Option<String>,
    /// Extra model-loading arguments, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_from_pretrained_kwargs: Option<Value>,
    /// SAELens version that wrote the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sae_lens_version: Option<String>,
    /// Every other key, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Builds the typed struct from a JSON object, tolerating `null`s and
    /// odd types in known keys (those are kept in `extra` instead of failing).
    pub fn from_json_map(map: &Map<String, Value>) -> Metadata {
        let mut m = Metadata::default();
        for (k, v) in map {
            let kept = match k.as_str() {
                "model_name" => v.as_str().map(|s| m.model_name = Some(s.into())).is_some(),
                "hook_name" => v.as_str().map(|s| m.hook_name = Some(s.into())).is_some(),
                "hook_name_out" => v.as_str().map(|s| m.hook_name_out = Some(s.into())).is_some(),
                "hook_head_index" => v.as_i64().map(|x| m.hook_head_index = Some(x)).is_some(),
                "context_size" => v.as_u64().map(|x| m.context_size = Some(x)).is_some(),
                "prepend_bos" => v.as_bool().map(|x| m.prepend_bos = Some(x)).is_some(),
                "dataset_path" => v.as_str().map(|s| m.dataset_path = Some(s.into())).is_some(),
                "model_from_pretrained_kwargs" => {
                    if !v.is_null() {
                        m.model_from_pretrained_kwargs = Some(v.clone());
                    }
                    !v.is_null()
                }
                "sae_lens_version" => v.as_str().map(|s| m.sae_lens_version = Some(s.into())).is_some(),
                _ => false,
            };
            if !kept && !v.is_null() {
                m.extra.insert(k.clone(), v.clone());
            }
        }
        m
    }

    /// The metadata as a JSON object (the `metadata` block of `cfg.json`).
    pub fn to_json_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }
}
