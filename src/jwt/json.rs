//! JSON objects as Envoy reads them: protobuf `JsonStringToMessage` into a `Struct`, with
//! protobuf's legacy syntax switched on (as `json_util` does).
//!
//! Matched: the top level must be an object; one trailing comma after the last member or
//! element is accepted (`{"a":1,}`, `[1,]`, but not `[,]` or `[1,,]`); at most 100 levels
//! of nesting.
//! Deliberately stricter (rejected here, accepted by protobuf's legacy mode): single-quoted
//! strings, unquoted keys, raw control characters inside strings, and loosely-validated
//! UTF-8. No mainstream issuer emits these, and accepting them would need a parser of our
//! own in the hot path.

use serde_json::{Map, Value};

/// protobuf's `ParseOptions::kDefaultDepth`.
const MAX_DEPTH: usize = 100;

/// Parses `bytes` as a JSON object; `None` where Envoy reports a JSON error.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let value = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        // Slow path only for documents serde rejects: most often a trailing comma.
        Err(_) => serde_json::from_slice::<Value>(&strip_trailing_commas(bytes)?).ok()?,
    };
    match value {
        Value::Object(map) if depth_within_limit(&map) => Some(map),
        _ => None,
    }
}

/// Removes each comma that follows a value and precedes `}` or `]`, outside strings.
/// `None` when there is nothing to remove (the document is invalid for another reason).
fn strip_trailing_commas(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut removed = false;
    for (i, &c) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            out.push(c);
            continue;
        }
        match c {
            b'"' => in_string = true,
            b',' => {
                let prev = out.iter().rev().find(|b| !is_ws(**b)).copied();
                let next = bytes
                    .get(i + 1..)
                    .and_then(|rest| rest.iter().find(|b| !is_ws(**b)).copied());
                let after_value = !matches!(prev, None | Some(b'[' | b'{' | b',' | b':'));
                if after_value && matches!(next, Some(b'}' | b']')) {
                    removed = true;
                    continue;
                }
            }
            _ => {}
        }
        out.push(c);
    }
    removed.then_some(out)
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn depth_within_limit(map: &Map<String, Value>) -> bool {
    fn value_depth_ok(v: &Value, depth: usize) -> bool {
        match v {
            Value::Object(m) => {
                depth <= MAX_DEPTH && m.values().all(|v| value_depth_ok(v, depth + 1))
            }
            Value::Array(a) => depth <= MAX_DEPTH && a.iter().all(|v| value_depth_ok(v, depth + 1)),
            _ => true,
        }
    }
    map.values().all(|v| value_depth_ok(v, 2))
}

#[cfg(test)]
mod tests {
    use super::parse_object;

    fn ok(s: &str) -> bool {
        parse_object(s.as_bytes()).is_some()
    }

    #[test]
    fn objects_only() {
        assert!(ok(r#"{"a":1}"#));
        assert!(ok(" {} "));
        assert!(!ok("[]"));
        assert!(!ok("1"));
        assert!(!ok("null"));
        assert!(!ok(""));
        assert!(!ok(r#"{"a":1} x"#));
    }

    #[test]
    fn one_trailing_comma_like_protobuf_legacy() {
        assert!(ok(r#"{"a":1,}"#));
        assert!(ok(r#"{"a":[1,2,],}"#));
        assert!(ok("{\"a\":{\"b\":\"x,]\" ,\n}\n,}"));
        assert!(!ok(r#"{,}"#));
        assert!(!ok(r#"{"a":[,]}"#));
        assert!(!ok(r#"{"a":[1,,]}"#));
        assert!(!ok(r#"{"a":,}"#));
        // Commas inside strings stay as they are.
        let m = parse_object(br#"{"a":"1,}",}"#).unwrap();
        assert_eq!(m["a"], "1,}");
    }

    #[test]
    fn depth_limit_is_protobufs() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(ok(&format!(r#"{{"a":{}}}"#, nest(100))));
        assert!(!ok(&format!(r#"{{"a":{}}}"#, nest(101))));
    }

    #[test]
    fn stricter_than_legacy_protobuf() {
        assert!(!ok("{'a':1}"));
        assert!(!ok("{a:1}"));
        assert!(!ok("{\"a\":\"\u{1}\"}"));
    }
}
