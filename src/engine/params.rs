//! [`Params`]: an op's validated parameters, with typed accessors.

use anyhow::{Result, anyhow};
use serde_json::Value;
use std::collections::BTreeMap;

/// An op's validated parameters (defaults filled in, paths made absolute).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    /// The value of `name`; `None` when absent or `null`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }
    fn need(&self, name: &str) -> Result<&Value> {
        self.get(name).ok_or_else(|| anyhow!("parameter `{name}` is missing"))
    }
    /// The string `name`; an error when absent or not a string.
    pub fn str(&self, name: &str) -> Result<&str> {
        self.need(name)?.as_str().ok_or_else(|| anyhow!("parameter `{name}` must be a string"))
    }
    /// The string `name`, or `None` when absent or not a string.
    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }
    /// The integer `name`; an error when absent or not an integer.
    pub fn i64(&self, name: &str) -> Result<i64> {
        self.need(name)?.as_i64().ok_or_else(|| anyhow!("parameter `{name}` must be an integer"))
    }
    /// The non-negative integer `name`; an error when absent, not an integer or negative.
    pub fn usize(&self, name: &str) -> Result<usize> {
        let v = self.i64(name)?;
        usize::try_from(v).map_err(|_| anyhow!("parameter `{name}` must not be negative (got {v})"))
    }
    /// A non-negative integer, or `default` when absent.
    pub fn u64_or(&self, name: &str, default: u64) -> Result<u64> {
        match self.get(name) {
            None => Ok(default),
            Some(_) => Ok(self.usize(name)? as u64),
        }
    }
    /// The number `name` (integers accepted); an error when absent or not a number.
    pub fn f64(&self, name: &str) -> Result<f64> {
        self.need(name)?.as_f64().ok_or_else(|| anyhow!("parameter `{name}` must be a number"))
    }
    /// The boolean `name`; an error when absent or not a boolean.
    pub fn bool(&self, name: &str) -> Result<bool> {
        self.need(name)?.as_bool().ok_or_else(|| anyhow!("parameter `{name}` must be a boolean"))
    }
    /// The list of strings `name`, empty when absent; an error when it is anything else.
    pub fn str_list(&self, name: &str) -> Result<Vec<String>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("parameter `{name}` must be a list of strings"))
                })
                .collect(),
            Some(_) => Err(anyhow!("parameter `{name}` must be a list of strings")),
        }
    }
}
