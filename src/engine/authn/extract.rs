//! Token extraction, as Envoy's jwt_authn extractor: header locations (sorted by name +
//! prefix), then query parameters, then cookies; each location knows which rules (issuers)
//! may use it.

use super::outputs::HeaderMutations;
use crate::attrs::RequestAttributes;
use crate::istio::JwtRule;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Where a token was found (names borrowed from the extractor: no copy per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location<'a> {
    Header(&'a str),
    Param(&'a str),
    Cookie(&'a str),
}

impl Location<'_> {
    /// Removes the token after successful verification when the rule does not forward it:
    /// the whole header, or the query parameter (Envoy does not remove cookies).
    pub(crate) fn remove(&self, req: &RequestAttributes, m: &mut HeaderMutations) {
        match self {
            Location::Header(name) => m.remove.push((*name).to_string()),
            Location::Param(name) => {
                let current = m.path.clone().unwrap_or_else(|| req.path.clone());
                m.path = Some(remove_query_param(&current, name));
            }
            Location::Cookie(_) => {}
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Location::Header(h) => format!("header {h}"),
            Location::Param(p) => format!("query parameter {p}"),
            Location::Cookie(c) => format!("cookie {c}"),
        }
    }
}

/// An extracted token and the rules allowed to verify it. A header token is borrowed from
/// the request; a query or cookie value is decoded into its own string.
pub(crate) struct Token<'a> {
    pub value: Cow<'a, str>,
    pub location: Location<'a>,
    pub rules: &'a [usize],
}

#[derive(Debug, Default)]
struct HeaderLocation {
    name: String,
    prefix: String,
    rules: Vec<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct Extractor {
    /// Keyed by lower-case name + prefix, like Envoy's `std::map`, so extraction order matches.
    headers: BTreeMap<String, HeaderLocation>,
    params: BTreeMap<String, Vec<usize>>,
    cookies: BTreeMap<String, Vec<usize>>,
}

impl Extractor {
    pub(crate) fn add_rule(&mut self, rule: &JwtRule, idx: usize) {
        for h in &rule.from_headers {
            self.add_header(&h.name, &h.prefix, idx);
        }
        for p in &rule.from_params {
            self.params.entry(p.clone()).or_default().push(idx);
        }
        for c in &rule.from_cookies {
            self.cookies.entry(c.clone()).or_default().push(idx);
        }
        if rule.from_headers.is_empty()
            && rule.from_params.is_empty()
            && rule.from_cookies.is_empty()
        {
            self.add_header("authorization", "Bearer ", idx);
            self.params
                .entry("access_token".into())
                .or_default()
                .push(idx);
        }
    }

    /// The headers extraction reads: each header location's name, and `cookie` when a
    /// rule reads cookies.
    pub(crate) fn header_names(&self) -> Vec<Box<str>> {
        let mut names: Vec<Box<str>> = Vec::new();
        let cookie = (!self.cookies.is_empty()).then_some("cookie");
        for name in self.headers.values().map(|l| l.name.as_str()).chain(cookie) {
            if !names.iter().any(|n| **n == *name) {
                names.push(name.into());
            }
        }
        names
    }

    fn add_header(&mut self, name: &str, prefix: &str, idx: usize) {
        let name = name.to_ascii_lowercase();
        let loc = self
            .headers
            .entry(format!("{name}{prefix}"))
            .or_insert_with(|| HeaderLocation {
                name,
                prefix: prefix.to_string(),
                rules: Vec::new(),
            });
        loc.rules.push(idx);
    }

    pub(crate) fn extract<'a>(&'a self, req: &'a RequestAttributes) -> Vec<Token<'a>> {
        let mut tokens = Vec::new();
        for loc in self.headers.values() {
            for value in req.header_values(&loc.name) {
                let token = if loc.prefix.is_empty() {
                    value
                } else {
                    // Envoy finds the prefix anywhere in the value; it is nearly always
                    // at the start.
                    let pos = if value.starts_with(loc.prefix.as_str()) {
                        0
                    } else {
                        let Some(pos) = value.find(loc.prefix.as_str()) else {
                            continue;
                        };
                        pos
                    };
                    token_after(value, pos + loc.prefix.len())
                };
                tokens.push(Token {
                    value: Cow::Borrowed(token),
                    location: Location::Header(&loc.name),
                    rules: &loc.rules,
                });
            }
        }
        if !self.params.is_empty() {
            if let Some(query) = req.query() {
                for (name, rules) in &self.params {
                    if let Some(value) = first_query_value(query, name) {
                        tokens.push(Token {
                            value: Cow::Owned(value),
                            location: Location::Param(name),
                            rules,
                        });
                    }
                }
            }
        }
        if !self.cookies.is_empty() {
            for (name, rules) in &self.cookies {
                if let Some(value) = cookie_value(req, name) {
                    tokens.push(Token {
                        value: Cow::Owned(value),
                        location: Location::Cookie(name),
                        rules,
                    });
                }
            }
        }
        tokens
    }
}

/// Envoy's `extractJWT`: from `after`, skip to the first base64url-or-dot character and take
/// the rest; if there is none, the whole value.
fn token_after(value: &str, after: usize) -> &str {
    let is_jwt_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    match value.get(after..).and_then(|rest| rest.find(is_jwt_char)) {
        Some(offset) => value.get(after + offset..).unwrap_or(value),
        None => value,
    }
}

/// The first value of a query parameter, percent-decoded.
fn first_query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Removes every `name=...` pair from the query of `path`, keeping the others verbatim.
pub(crate) fn remove_query_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    // Envoy parses the query into (key, value) pairs, `&&` and a bare `flag` included (as
    // `("", "")` and `("flag", "")`), drops the token's and writes the rest back as `k=v`.
    let kept: Vec<String> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(key) != name
        })
        .map(|pair| {
            if pair.contains('=') {
                pair.to_string()
            } else {
                format!("{pair}=")
            }
        })
        .collect();
    let mut out = base.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let Some(&b) = bytes.get(i) else { break };
        if b == b'%' {
            let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
            if let (Some(h), Some(l)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cookie's value (Envoy `parseCookies`: `;`-separated, trimmed, quotes stripped).
fn cookie_value(req: &RequestAttributes, name: &str) -> Option<String> {
    req.header_values("cookie").find_map(|header| {
        header.split(';').find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            if k != name {
                return None;
            }
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some(v.to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_found_anywhere_then_token_chars() {
        assert_eq!(token_after("Bearer abc.def.ghi", 7), "abc.def.ghi");
        assert_eq!(token_after("Bearer   abc.def", 7), "abc.def");
        assert_eq!(token_after("Bearer ", 7), "Bearer ");
    }

    /// The prefix is looked for at the start first (the usual case); anywhere else in the
    /// value it is still found, as Envoy's extractor finds it.
    #[test]
    fn header_prefix_at_the_start_or_anywhere() {
        let mut ex = Extractor::default();
        ex.add_rule(&JwtRule::default(), 0);
        let req = |v: &str| RequestAttributes {
            headers: vec![("authorization".into(), v.into())],
            ..Default::default()
        };
        let tokens = |v: &str| -> Vec<String> {
            let r = req(v);
            ex.extract(&r).iter().map(|t| t.value.to_string()).collect()
        };
        assert_eq!(tokens("Bearer a.b.c"), ["a.b.c"]);
        assert_eq!(tokens("Basic eA==, Bearer a.b.c"), ["a.b.c"]);
        assert_eq!(tokens("xBearer a.b.c"), ["a.b.c"]);
        assert!(tokens("bearer a.b.c").is_empty());
        assert!(tokens("Basic eA==").is_empty());
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            first_query_value("a=1&access_token=x%2Ey", "access_token"),
            Some("x.y".into())
        );
        assert_eq!(first_query_value("a=1", "access_token"), None);
        assert_eq!(first_query_value("t=1&t=2", "t"), Some("1".into()));
    }

    #[test]
    fn query_param_removal_keeps_the_rest() {
        assert_eq!(
            remove_query_param("/p?a=1&access_token=t&b=2", "access_token"),
            "/p?a=1&b=2"
        );
        assert_eq!(
            remove_query_param("/p?access_token=t", "access_token"),
            "/p"
        );
        assert_eq!(remove_query_param("/p", "access_token"), "/p");
        // Empty and value-less parameters come back as Envoy re-serialises them.
        assert_eq!(
            remove_query_param("/p?&access_token=t&&flag&a=1&", "access_token"),
            "/p?=&=&flag=&a=1&="
        );
        assert_eq!(
            remove_query_param("/p?access_token=t&", "access_token"),
            "/p?="
        );
    }

    #[test]
    fn cookies() {
        let req = RequestAttributes {
            headers: vec![("cookie".into(), "a=1; session=\"tok\"; b=2".into())],
            ..Default::default()
        };
        assert_eq!(cookie_value(&req, "session"), Some("tok".into()));
        assert_eq!(cookie_value(&req, "c"), None);
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
