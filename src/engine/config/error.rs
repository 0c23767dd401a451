//! Configuration errors that name the JSON path of the offending value.

use serde::de::DeserializeOwned;

/// A configuration error: where (`policies[2].spec.rules[0].from[0].source.principal`) and what.
/// Displayed as `path: message` (just the message for the document itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{message}", path, if path.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    /// For an unknown field: the fields accepted where it was found (for hints and for the
    /// test that keeps docs/configuration.md and the parser in step). Empty otherwise.
    pub known_fields: Vec<String>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            known_fields: Vec::new(),
        }
    }
}

/// Joins a parent path and a child segment: `join("a", "b") == "a.b"`, `join("a", "[0]") == "a[0]"`.
pub fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else if child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}

/// Deserializes `value` (found at `path`) into `T`, turning serde's error into a
/// [`ConfigError`] whose path points at the offending field. Unknown fields become
/// `<path>.<field>: unknown field, did you mean <closest>?`.
pub fn from_value<T: DeserializeOwned>(
    value: &serde_json::Value,
    path: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let inner = err.path().to_string();
        let at = if inner == "." || inner.is_empty() {
            path.to_string()
        } else if inner.starts_with('[') {
            format!("{path}{inner}")
        } else {
            join(path, &inner)
        };
        describe(&at, &err.inner().to_string())
    })
}

/// Rewrites serde's messages into the contract's wording.
fn describe(at: &str, serde_message: &str) -> ConfigError {
    if let Some((field, expected)) = parse_unknown_field(serde_message) {
        let hint = closest(&field, &expected)
            .map(|c| format!(", did you mean {c}?"))
            .unwrap_or_default();
        // serde_path_to_error already ends the path with the unknown key.
        let path = if at.ends_with(&format!(".{field}")) || at == field {
            at.to_string()
        } else {
            join(at, &field)
        };
        let mut err = ConfigError::new(path, format!("unknown field{hint}"));
        err.known_fields = expected;
        return err;
    }
    if let Some(field) = serde_message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return ConfigError::new(join(at, field), "required field is missing");
    }
    // Drop serde_json's " at line X column Y" suffix: there is no source text, only a value.
    ConfigError::new(at, serde_message.to_string())
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or
/// "there are no fields").
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect();
    Some((field.to_string(), expected))
}

/// The known name closest to `field` by edit distance, if reasonably close.
pub fn closest(field: &str, known: &[String]) -> Option<String> {
    let lower = field.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (levenshtein(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= (k.len().max(field.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Source {
        principals: Option<Vec<String>>,
        not_principals: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct From {
        source: Source,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        from: Vec<From>,
    }

    #[test]
    fn unknown_field_names_path_and_suggestion() {
        let v = serde_json::json!({"from": [{"source": {"principal": ["a"]}}]});
        let err = from_value::<Rule>(&v, "policies[2].spec.rules[0]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "policies[2].spec.rules[0].from[0].source.principal: unknown field, did you mean principals?"
        );
    }

    #[test]
    fn wrong_type_names_path() {
        let v = serde_json::json!({"from": [{"source": {"principals": "a"}}]});
        let err = from_value::<Rule>(&v, "x").unwrap_err();
        assert_eq!(err.path, "x.from[0].source.principals");
        assert!(
            err.message.contains("expected a sequence"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_field_names_path() {
        let v = serde_json::json!({"from": [{}]});
        let err = from_value::<Rule>(&v, "r").unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.from[0].source: required field is missing"
        );
    }

    #[test]
    fn no_suggestion_when_nothing_is_close() {
        let v = serde_json::json!({"from": [{"source": {"zzzzzzzzzzzz": 1}}]});
        let err = from_value::<Rule>(&v, "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "from[0].source.zzzzzzzzzzzz: unknown field"
        );
    }
}
