//! JSON objects as Envoy reads them: protobuf `JsonStringToMessage` into a `Struct`, with
//! protobuf's legacy syntax switched on (as `json_util` does).
//!
//! Matched: the top level must be an object; one trailing comma after the last member or
//! element is accepted (`{"a":1,}`, `[1,]`, but not `[,]` or `[1,,]`); at most 100 levels
//! of nesting; a member name repeated in one object (at any depth) makes the whole document
//! invalid, as protobuf refuses a `Struct` key set twice. Keeping the last (or first) value
//! instead would let a token carry two `exp`, `alg` or `sub` values and have a reader that
//! takes the other one disagree with the signer: a bypass.
//! Deliberately stricter (rejected here, accepted by protobuf's legacy mode): single-quoted
//! strings, unquoted keys, raw control characters inside strings, and loosely-validated
//! UTF-8. No mainstream issuer emits these, and accepting them would need a parser of our
//! own in the hot path.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// protobuf's `ParseOptions::kDefaultDepth`.
const MAX_DEPTH: usize = 100;

/// Parses `bytes` as a JSON object; `None` where Envoy reports a JSON error.
pub(crate) fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let value = match parse_unique(bytes) {
        Ok(v) => v,
        // A repeated member name is invalid however the commas are placed.
        Err(Invalid::DuplicateMember) => return None,
        // Slow path only for documents serde rejects: most often a trailing comma.
        Err(Invalid::Syntax) => parse_unique(&strip_trailing_commas(bytes)?).ok()?,
    };
    match value {
        Value::Object(map) if depth_within_limit(&map) => Some(map),
        // protobuf reads a `null` document into a `Struct` as an empty one.
        Value::Null => Some(Map::new()),
        _ => None,
    }
}

enum Invalid {
    Syntax,
    DuplicateMember,
}

const DUPLICATE: &str = "duplicate member name";

/// `serde_json::Value` from `bytes`, refusing an object that names a member twice.
fn parse_unique(bytes: &[u8]) -> Result<Value, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = UniqueValue.deserialize(&mut de).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE) {
            Invalid::DuplicateMember
        } else {
            Invalid::Syntax
        }
    })?;
    de.end().map_err(|_| Invalid::Syntax)?;
    Ok(value)
}

/// Builds a `Value` as serde_json's own impl does, with one more check in objects.
struct UniqueValue;

impl<'de> DeserializeSeed<'de> for UniqueValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(UniqueValue)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(UniqueValue)?;
            if members.insert(key, value).is_some() {
                return Err(de::Error::custom(DUPLICATE));
            }
        }
        Ok(Value::Object(members))
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
    use serde_json::Value;

    fn ok(s: &str) -> bool {
        parse_object(s.as_bytes()).is_some()
    }

    #[test]
    fn objects_only() {
        assert!(ok(r#"{"a":1}"#));
        assert!(ok(" {} "));
        assert!(!ok("[]"));
        assert!(!ok("1"));
        // protobuf's Struct parser takes `null` as the empty object.
        assert_eq!(parse_object(b" null ").map(|m| m.len()), Some(0));
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
    fn a_member_named_twice_is_invalid_at_any_depth() {
        assert!(!ok(r#"{"exp":1,"exp":2}"#));
        assert!(!ok(r#"{"alg":"RS256","kid":"a","alg":"none"}"#));
        assert!(!ok(r#"{"a":{"b":1,"b":1}}"#));
        assert!(!ok(r#"{"a":[{"b":1,"b":2}]}"#));
        // Escapes name the same member: "\u0073ub" is "sub".
        assert!(!ok(r#"{"sub":"a","\u0073ub":"b"}"#));
        // With the trailing-comma path too.
        assert!(!ok(r#"{"sub":"a","sub":"b",}"#));
        // The same name in sibling objects is fine, and so are near names.
        assert!(ok(r#"{"a":{"b":1},"c":{"b":1},"B":1,"b ":1}"#));
    }

    #[test]
    fn values_are_those_of_serde_json() {
        let text =
            r#"{"n":1,"f":1.5,"neg":-3,"big":18446744073709551615,"s":"x\n","l":[true,null]}"#;
        let mine = Value::Object(parse_object(text.as_bytes()).unwrap());
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(mine, theirs);
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
