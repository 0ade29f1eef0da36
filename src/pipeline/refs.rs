//! Stage references: `stage`, `stage[key]`, `stage[*]` (fan-in over all
//! instances), each optionally followed by `.output` (a named output of the artifact).

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// `stage`: the stage's single instance, or inside a `foreach` the instance with
    /// the same key.
    Implicit,
    Key(String),
    All,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    pub stage: String,
    pub selector: Selector,
    pub output: Option<String>,
}

pub fn valid_stage_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub fn parse(text: &str) -> Result<Ref, String> {
    let text = text.trim();
    let name_end = text.find(['[', '.']).unwrap_or(text.len());
    let stage = &text[..name_end];
    if !valid_stage_name(stage) {
        return Err(format!(
            "`{text}` is not a stage reference (expected `stage`, `stage[key]`, `stage[*]` or `stage.output`)"
        ));
    }
    let mut rest = &text[name_end..];
    let mut selector = Selector::Implicit;
    if let Some(r) = rest.strip_prefix('[') {
        let close = r.find(']').ok_or_else(|| format!("missing `]` in reference `{text}`"))?;
        let key = &r[..close];
        selector = if key == "*" { Selector::All } else { Selector::Key(key.to_string()) };
        rest = &r[close + 1..];
    }
    let output = match rest {
        "" => None,
        r => match r.strip_prefix('.') {
            Some(o) if !o.is_empty() => Some(o.to_string()),
            _ => return Err(format!("unexpected `{r}` after the stage in reference `{text}`")),
        },
    };
    Ok(Ref { stage: stage.to_string(), selector, output })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn forms() {
        assert_eq!(parse("tok").unwrap(), Ref { stage: "tok".into(), selector: Selector::Implicit, output: None });
        assert_eq!(parse("train[step1]").unwrap().selector, Selector::Key("step1".into()));
        assert_eq!(
            parse("train[*].sae").unwrap(),
            Ref { stage: "train".into(), selector: Selector::All, output: Some("sae".into()) }
        );
        assert!(parse("a b").is_err());
        assert!(parse("train[x").is_err());
    }
}
