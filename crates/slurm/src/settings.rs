//! Slurm settings of a pipeline or a stage: what `sbatch` is asked for. None of
//! them is part of any cache key (where a stage runs does not change what it
//! computes).

use serde_json::Value;

/// The setting names, as written in a pipeline's `slurm:` mappings.
pub const SETTING_NAMES: &[&str] = &[
    "partition",
    "account",
    "qos",
    "time",
    "mem",
    "cpus",
    "gpus",
    "constraint",
    "extra",
    "local",
    "retries",
    "warn_before",
];

/// Resources and placement for one job. Unset fields are left to the cluster's
/// defaults (or to the pipeline-level settings when merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlurmSettings {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`, in any form sbatch accepts (`90`, `4:00:00`, `1-12:00:00`).
    pub time: Option<String>,
    /// `--mem` (`16G`, `500M`).
    pub mem: Option<String>,
    /// `--cpus-per-task`.
    pub cpus: Option<u32>,
    /// GPUs: a count (`1`) or `type:count` (`a100:2`), as `--gres=gpu:...`.
    pub gpus: Option<String>,
    /// `--constraint`.
    pub constraint: Option<String>,
    /// Further sbatch arguments, passed as they are.
    pub extra: Vec<String>,
    /// Run in the driver's process instead of as a job (tiny stages such as plots).
    pub local: Option<bool>,
    /// Resubmissions after a genuine failure (not counting preemption requeues).
    pub retries: Option<u32>,
    /// Seconds before the time limit at which the job is warned (SIGUSR1) to
    /// save its progress and requeue itself; [`DEFAULT_WARN_BEFORE_SECS`]
    /// when `time` is set, 0 turns the warning off.
    pub warn_before: Option<u32>,
    /// Submissions per second the driver allows itself (run-wide: read from
    /// the pipeline's mapping; default 10).
    pub submits_per_second: Option<u32>,
}

/// The default of [`SlurmSettings::warn_before`]: enough for a checkpoint of
/// a large SAE on a slow shared file system.
pub const DEFAULT_WARN_BEFORE_SECS: u32 = 180;

/// A setting that could not be read, with the field it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    /// The offending field name as written.
    pub field: String,
    /// What is wrong, with a did-you-mean for unknown names.
    pub message: String,
}

impl SlurmSettings {
    /// Reads settings from a mapping. Every problem is returned (unknown
    /// names with a did-you-mean, wrong types), not just the first.
    pub fn from_json(map: &serde_json::Map<String, Value>) -> Result<SlurmSettings, Vec<SettingError>> {
        let mut s = SlurmSettings::default();
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| errors.push(SettingError { field: field.to_string(), message });
        for (name, v) in map {
            let text = || match v {
                Value::String(x) => Some(x.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            let need_text = |err: &mut dyn FnMut(&str, String), what: &str| {
                let t = text();
                if t.is_none() {
                    err(name, format!("`{name}` must be {what}, found {}", kind(v)));
                }
                t
            };
            match name.as_str() {
                "partition" => s.partition = need_text(&mut err, "a string"),
                "account" => s.account = need_text(&mut err, "a string"),
                "qos" => s.qos = need_text(&mut err, "a string"),
                "constraint" => s.constraint = need_text(&mut err, "a string"),
                "time" => {
                    s.time = need_text(&mut err, "a time limit such as 90, \"4:00:00\" or \"1-12:00:00\"");
                    if let Some(t) = &s.time
                        && !valid_time(t)
                    {
                        err(name, format!("`time: {t}` is not a Slurm time limit (minutes, H:MM:SS or D-HH:MM:SS)"));
                    }
                }
                "mem" => {
                    s.mem = need_text(&mut err, "a memory size such as \"16G\"");
                    if let Some(m) = &s.mem
                        && !valid_mem(m)
                    {
                        err(name, format!("`mem: {m}` is not a memory size (a number with K, M, G or T)"));
                    }
                }
                "gpus" => {
                    s.gpus = need_text(&mut err, "a GPU count or type:count");
                    if let Some(g) = &s.gpus
                        && !valid_gpus(g)
                    {
                        err(name, format!("`gpus: {g}` is not a GPU count or type:count (e.g. 1, a100:2)"));
                    }
                }
                "cpus" => match v.as_u64() {
                    Some(n) if n >= 1 && n <= u32::MAX as u64 => s.cpus = Some(n as u32),
                    _ => err(name, format!("`cpus` must be a positive integer, found {}", kind(v))),
                },
                "retries" => match v.as_u64() {
                    Some(n) if n <= 100 => s.retries = Some(n as u32),
                    _ => err(name, format!("`retries` must be an integer from 0 to 100, found {}", kind(v))),
                },
                "submits_per_second" => match v.as_u64() {
                    Some(n) if (1..=1000).contains(&n) => s.submits_per_second = Some(n as u32),
                    _ => {
                        err(name, format!("`submits_per_second` must be an integer from 1 to 1000, found {}", kind(v)))
                    }
                },
                "warn_before" => match v.as_u64() {
                    Some(n) if n <= 86_400 => s.warn_before = Some(n as u32),
                    _ => err(name, format!("`warn_before` must be seconds from 0 to 86400, found {}", kind(v))),
                },
                "local" => match v.as_bool() {
                    Some(b) => s.local = Some(b),
                    None => err(name, format!("`local` must be true or false, found {}", kind(v))),
                },
                "extra" => match v {
                    Value::Array(items) if items.iter().all(Value::is_string) => {
                        s.extra = items.iter().map(|i| i.as_str().unwrap().to_string()).collect()
                    }
                    Value::String(one) => s.extra = vec![one.clone()],
                    _ => err(name, format!("`extra` must be a list of sbatch arguments, found {}", kind(v))),
                },
                other => {
                    let hint = saepipe_core::suggest::hint(other, SETTING_NAMES.iter().copied());
                    err(name, format!("unknown Slurm setting `{other}`{hint}; known: {}", SETTING_NAMES.join(", ")));
                }
            }
        }
        if errors.is_empty() { Ok(s) } else { Err(errors) }
    }

    /// These settings over `base`: each field set here wins; `extra` arguments
    /// are appended to the base's.
    pub fn over(&self, base: &SlurmSettings) -> SlurmSettings {
        SlurmSettings {
            partition: self.partition.clone().or_else(|| base.partition.clone()),
            account: self.account.clone().or_else(|| base.account.clone()),
            qos: self.qos.clone().or_else(|| base.qos.clone()),
            time: self.time.clone().or_else(|| base.time.clone()),
            mem: self.mem.clone().or_else(|| base.mem.clone()),
            cpus: self.cpus.or(base.cpus),
            gpus: self.gpus.clone().or_else(|| base.gpus.clone()),
            constraint: self.constraint.clone().or_else(|| base.constraint.clone()),
            extra: base.extra.iter().chain(&self.extra).cloned().collect(),
            local: self.local.or(base.local),
            retries: self.retries.or(base.retries),
            warn_before: self.warn_before.or(base.warn_before),
            submits_per_second: self.submits_per_second.or(base.submits_per_second),
        }
    }

    /// Seconds before the time limit at which the job gets its warning signal
    /// (`None`: no time limit set, or the warning is off).
    pub fn warning_secs(&self) -> Option<u32> {
        self.time.as_ref()?;
        Some(self.warn_before.unwrap_or(DEFAULT_WARN_BEFORE_SECS)).filter(|&s| s > 0)
    }

    /// The sbatch arguments for these settings.
    pub fn sbatch_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut push = |flag: &str, v: &Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{flag}={v}"));
            }
        };
        push("partition", &self.partition);
        push("account", &self.account);
        push("qos", &self.qos);
        push("time", &self.time);
        push("mem", &self.mem);
        push("constraint", &self.constraint);
        if let Some(c) = self.cpus {
            a.push(format!("--cpus-per-task={c}"));
        }
        if let Some(g) = &self.gpus {
            a.push(format!("--gres=gpu:{g}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; also UNLIMITED.
fn valid_time(t: &str) -> bool {
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return true;
    }
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    if days.is_some_and(|d| !all_digits(d)) {
        return false;
    }
    let parts: Vec<&str> = rest.split(':').collect();
    parts.len() <= 3 && parts.iter().all(|p| all_digits(p))
}

fn valid_mem(m: &str) -> bool {
    let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    all_digits(digits) && m.len() - digits.len() <= 1
}

fn valid_gpus(g: &str) -> bool {
    match g.rsplit_once(':') {
        Some((ty, n)) => !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && all_digits(n),
        None => all_digits(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Result<SlurmSettings, Vec<SettingError>> {
        SlurmSettings::from_json(v.as_object().unwrap())
    }

    #[test]
    fn settings_become_sbatch_arguments() {
        let s = read(json!({"partition": "gpu", "time": "4:00:00", "mem": "32G", "cpus": 8, "gpus": "a100:1",
                            "extra": ["--exclusive"], "retries": 2}))
        .unwrap();
        assert_eq!(
            s.sbatch_args(),
            ["--partition=gpu", "--time=4:00:00", "--mem=32G", "--cpus-per-task=8", "--gres=gpu:a100:1", "--exclusive"]
        );
        assert_eq!(s.retries, Some(2));
    }

    #[test]
    fn stage_settings_override_pipeline_settings() {
        let base = read(json!({"partition": "cpu", "account": "lab", "extra": ["--nice=10"]})).unwrap();
        let stage = read(json!({"partition": "gpu", "gpus": 1, "extra": "--exclusive"})).unwrap();
        let s = stage.over(&base);
        assert_eq!(s.partition.as_deref(), Some("gpu"));
        assert_eq!(s.account.as_deref(), Some("lab"));
        assert_eq!(s.extra, ["--nice=10", "--exclusive"]);
    }

    #[test]
    fn bad_settings_are_all_reported_with_suggestions() {
        let errs = read(json!({"partiton": "gpu", "time": "4h", "cpus": 0, "mem": "lots", "gpus": "two"})).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        assert_eq!(errs.len(), 5, "{text:?}");
        assert!(text.iter().any(|t| t.contains("did you mean `partition`")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("time:")), "{text:?}");
    }

    #[test]
    fn the_time_limit_warning_needs_a_time_limit_and_can_be_turned_off() {
        assert_eq!(read(json!({"partition": "gpu"})).unwrap().warning_secs(), None);
        assert_eq!(read(json!({"time": "4:00:00"})).unwrap().warning_secs(), Some(DEFAULT_WARN_BEFORE_SECS));
        let stage = read(json!({"warn_before": 600})).unwrap();
        assert_eq!(stage.over(&read(json!({"time": 90})).unwrap()).warning_secs(), Some(600));
        assert_eq!(read(json!({"time": 90, "warn_before": 0})).unwrap().warning_secs(), None);
        assert_eq!(read(json!({"submits_per_second": 2})).unwrap().submits_per_second, Some(2));
        assert!(read(json!({"submits_per_second": 0})).is_err());
        let errs = read(json!({"warn_before": "soon"})).unwrap_err();
        assert!(errs[0].message.contains("`warn_before` must be seconds"), "{errs:?}");
        assert!(!read(json!({"time": 90})).unwrap().sbatch_args().iter().any(|a| a.contains("USR1")));
    }

    #[test]
    fn time_formats() {
        for ok in ["90", "30:00", "4:00:00", "1-12", "1-12:30", "2-00:00:00", "UNLIMITED"] {
            assert!(valid_time(ok), "{ok}");
        }
        for bad in ["4h", "", "1-", "1:2:3:4", "-3"] {
            assert!(!valid_time(bad), "{bad}");
        }
    }
}
