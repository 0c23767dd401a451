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
///
/// The value is deserialized from its compact JSON text: serde_json then reports where in
/// that one line it failed, and [`path_at`] turns the column into the JSON path. (Tracking
/// the path in the deserializer, as serde_path_to_error does, instantiates every
/// configuration type a second time: about 60 KB of the wasm module.)
pub fn from_value<T: DeserializeOwned>(
    value: &serde_json::Value,
    path: &str,
) -> Result<T, ConfigError> {
    let text = value.to_string();
    serde_json::from_str::<T>(&text).map_err(|err| {
        let inner = path_at(&text, err.column());
        let at = if inner.is_empty() {
            path.to_string()
        } else if inner.starts_with('[') || path.is_empty() {
            format!("{path}{inner}")
        } else {
            format!("{path}.{inner}")
        };
        // serde_json's message ends with " at line 1 column N": the position is the path now.
        let message = err.to_string();
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        describe(&at, message.strip_suffix(&suffix).unwrap_or(&message))
    })
}

/// One open container while scanning JSON text.
enum Frame {
    /// An object, with the key whose value is being read (None between members).
    Object(Option<String>),
    /// An array, with the index of the element being read.
    Array(usize),
}

/// The JSON path (`a.b[2].c`) of what compact JSON `text` was reading just before its
/// one-based `column`: the innermost member or element that was open there.
pub(crate) fn path_at(text: &str, column: usize) -> String {
    let bytes = text.as_bytes();
    let end = column.min(bytes.len());
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < end {
        match bytes[i] {
            b'{' => stack.push(Frame::Object(None)),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(n)) => *n += 1,
                Some(Frame::Object(key)) => *key = None,
                None => {}
            },
            b'"' => {
                // The string's extent: up to the first unescaped quote.
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                let literal = text.get(start..=i.min(bytes.len() - 1)).unwrap_or("");
                if let Some(Frame::Object(key @ None)) = stack.last_mut() {
                    *key = Some(serde_json::from_str(literal).unwrap_or_default());
                }
            }
            _ => {}
        }
        i += 1;
    }
    let mut out = String::new();
    for frame in &stack {
        match frame {
            Frame::Object(Some(key)) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// Rewrites serde's messages into the contract's wording.
fn describe(at: &str, serde_message: &str) -> ConfigError {
    if let Some((field, expected)) = parse_unknown_field(serde_message) {
        let hint = closest(&field, &expected)
            .map(|c| format!(", did you mean {c}?"))
            .unwrap_or_default();
        // The position is just after the unknown key, so the path already ends with it.
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
    fn path_at_follows_members_and_elements() {
        let text = r#"{"a":[1,{"b\"c":{"d":[true,"x,]}"]}}],"e":2}"#;
        let at = |needle: &str| path_at(text, text.find(needle).unwrap() + needle.len());
        assert_eq!(at(r#"{"a":[1"#), "a[0]");
        assert_eq!(at(r#"{"b\"c""#), r#"a[1].b"c"#);
        assert_eq!(at(r#"{"d":[true,"x"#), r#"a[1].b"c.d[1]"#);
        // A string's commas and brackets are not structure.
        assert_eq!(at(r#""x,]}""#), r#"a[1].b"c.d[1]"#);
        // After a container closes, its member is still the one being read.
        assert_eq!(at(r#""x,]}"]"#), r#"a[1].b"c.d"#);
        assert_eq!(at(r#""e":2"#), "e");
        assert_eq!(path_at(text, 0), "");
        assert_eq!(path_at(text, 10_000), "");
    }

    #[test]
    fn wrong_type_deep_in_arrays_names_the_element() {
        let v = serde_json::json!({"from": [{"source": {"principals": ["a"]}}, {"source": {"principals": [1]}}]});
        let err = from_value::<Rule>(&v, "p").unwrap_err();
        assert_eq!(err.path, "p.from[1].source.principals[0]");
        assert!(!err.message.contains("line 1"), "{}", err.message);
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
