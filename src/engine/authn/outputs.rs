//! What a successful authentication writes into the request: `outputPayloadToHeader`,
//! `outputClaimToHeaders`, and token removal.

use crate::json_string::{push_json_string, Escapes};
use crate::jwt::Jwt;
use serde_json::Value;

/// Request changes the adapter applies: first `remove`, then `add`, then `path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMutations {
    /// Header names (lower-case) to remove.
    pub remove: Vec<String>,
    /// Headers to add.
    pub add: Vec<(String, String)>,
    /// A new `:path` (a query-parameter token removed).
    pub path: Option<String>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty() && self.path.is_none()
    }

    /// Applies the changes to the engine's view of the request, so that authorization sees
    /// the request as Envoy's RBAC would after jwt_authn (forged output headers gone, claim
    /// headers set, token removed).
    pub fn apply_to(&self, req: &mut crate::attrs::RequestAttributes) {
        if !self.remove.is_empty() {
            req.headers
                .retain(|(name, _)| !self.remove.iter().any(|r| r.eq_ignore_ascii_case(name)));
        }
        req.headers.extend(self.add.iter().cloned());
        if let Some(path) = &self.path {
            req.path.clone_from(path);
        }
    }
}

/// Adds the payload header and claim headers of one verified token.
pub(crate) fn apply(
    payload_header: Option<&str>,
    claim_headers: &[(String, String)],
    jwt: &Jwt,
    m: &mut HeaderMutations,
) {
    if let Some(h) = payload_header {
        // The payload part exactly as the token carried it (Envoy forwards padding too).
        m.add.push((h.to_string(), jwt.payload_b64.clone()));
    }
    for (header, claim) in claim_headers {
        if let Some(v) = claim_value(&jwt.payload, claim).and_then(claim_to_string) {
            if !v.is_empty() {
                m.add.push((header.clone(), v));
            }
        }
    }
}

/// A claim by name; `a.b` walks nested objects (Envoy `StructUtils::GetValue`).
fn claim_value<'a>(payload: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    let mut parts = name.split('.');
    let mut current = payload.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Strings, numbers and booleans are copied as text; objects and lists as the standard,
/// padded base64 of their JSON (Envoy `addJWTClaimToHeader`); null copies nothing.
fn claim_to_string(v: &Value) -> Option<String> {
    use base64::Engine as _;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            let d = n.as_f64()?;
            // Envoy prints whole non-negative numbers as integers, others like C++
            // `std::to_string(double)` (six decimals).
            if d >= 0.0 && d < u64::MAX as f64 && d.fract() == 0.0 {
                Some(format!("{}", d as u64))
            } else {
                Some(format!("{d:.6}"))
            }
        }
        Value::Array(_) | Value::Object(_) => {
            let mut json = String::new();
            write_protobuf_json(v, &mut json);
            Some(base64::engine::general_purpose::STANDARD.encode(json))
        }
        Value::Null => None,
    }
}

/// Compact JSON as protobuf prints a `google.protobuf.Value`: every number is a double (whole
/// ones print without a fraction), `<` and `>` are `\u` escapes. Object members come in
/// sorted order; protobuf prints its map's unspecified order (README, "Differences").
fn write_protobuf_json(v: &Value, out: &mut String) {
    use std::fmt::Write as _;
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(d) if d.fract() == 0.0 && d.abs() < 1e15 => {
                let _ = write!(out, "{}", d as i64);
            }
            Some(d) => {
                let _ = write!(out, "{d}");
            }
            None => {}
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_protobuf_json(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(out, k, Escapes::Protobuf);
                out.push(':');
                write_protobuf_json(item, out);
            }
            out.push('}');
        }
        Value::String(text) => push_json_string(out, text, Escapes::Protobuf),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_strings() {
        assert_eq!(claim_to_string(&json!("a")), Some("a".into()));
        assert_eq!(claim_to_string(&json!(42)), Some("42".into()));
        assert_eq!(claim_to_string(&json!(1.5)), Some("1.500000".into()));
        assert_eq!(claim_to_string(&json!(-3)), Some("-3.000000".into()));
        assert_eq!(claim_to_string(&json!(true)), Some("true".into()));
        assert_eq!(claim_to_string(&json!(null)), None);
        // Lists and objects: standard padded base64 of compact JSON.
        assert_eq!(claim_to_string(&json!(["a"])), Some("WyJhIl0=".into()));
        assert_eq!(
            claim_to_string(&json!({"b": 1.0, "a": [2, "x"]})),
            Some("eyJhIjpbMiwieCJdLCJiIjoxfQ==".into())
        );
        let mut text = String::new();
        write_protobuf_json(
            &json!(["caf\u{e9}", "a\"b", "<&>", "\\/", 1.5, 2.0, null]),
            &mut text,
        );
        assert_eq!(
            text,
            r#"["caf\u00e9","a\"b","\u003c&\u003e","\\/",1.5,2,null]"#.replace("\\u00e9", "\u{e9}")
        );
    }

    #[test]
    fn nested_claims() {
        let p = json!({"a": {"b": {"c": "deep"}}, "x": 1});
        let p = p.as_object().unwrap();
        assert_eq!(claim_value(p, "a.b.c"), Some(&json!("deep")));
        assert_eq!(claim_value(p, "a.z"), None);
        assert_eq!(claim_value(p, "x.y"), None);
    }
}
