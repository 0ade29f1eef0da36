//! File names derived from stage instance ids (logs, job files, index entries).

/// A stage instance id as a file name (`train[step1]` → `train_step1_`).
pub(crate) fn safe_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_=.,".contains(c) { c } else { '_' }).collect()
}
