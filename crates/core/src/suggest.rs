//! Did-you-mean: the one rule every "unknown name" error uses to suggest the
//! name the user probably meant (stage kinds, parameters, hook names, fields).

/// The candidate closest to `name` by Damerau–Levenshtein distance (a swap of
/// two neighbouring letters counts once), when it is close enough to be a
/// plausible typo: at most a third of the longer name's length, and at least
/// one edit always allowed. Ties go to the earliest candidate.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= (name.chars().count().max(c.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)` when there is a close candidate, else an empty string;
/// for appending to an error message.
pub fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, candidates).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
}

/// ` (did you mean `dir/x`?)` for a path that does not exist when its
/// directory holds a file or folder with a close name, else an empty string.
pub fn path_hint(path: &std::path::Path) -> String {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return String::new();
    };
    let listed = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
    let Ok(entries) = std::fs::read_dir(listed) else { return String::new() };
    let names: Vec<String> = entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    match did_you_mean(name, names.iter().map(String::as_str)) {
        Some(close) => format!(" (did you mean `{}`?)", dir.join(close).display()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_a_sibling_with_a_close_name() {
        let t = std::env::temp_dir().join(format!("saepipe-suggest-{}", std::process::id()));
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("toy_sae.yaml"), "").unwrap();
        assert_eq!(
            path_hint(&t.join("toy_sea.yaml")),
            format!(" (did you mean `{}`?)", t.join("toy_sae.yaml").display())
        );
        assert_eq!(path_hint(&t.join("entirely-else.txt")), "");
        assert_eq!(path_hint(&t.join("missing-dir/x.yaml")), "");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn suggests_plausible_typos_only() {
        let names = ["train_sae", "collect_activations", "plot"];
        assert_eq!(did_you_mean("train_sa", names), Some("train_sae"));
        assert_eq!(did_you_mean("trian_sae", names), Some("train_sae"));
        assert_eq!(did_you_mean("plto", names), Some("plot"));
        assert_eq!(did_you_mean("evaluate", names), None);
        assert_eq!(
            hint("blocks.1.hook_resid_prex", ["blocks.1.hook_resid_pre"]),
            " (did you mean `blocks.1.hook_resid_pre`?)"
        );
        assert_eq!(hint("x", ["yyyy"]), "");
    }
}
