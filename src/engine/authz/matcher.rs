//! Precomputed value matchers: the Rust counterparts of the Envoy matchers Istio generates
//! (`StringMatcher`, header `present_match`, `CidrRange`, the `uri_template` path matcher and
//! the regexes Istio emits for namespaces, service accounts and principal suffixes).
//!
//! Everything is parsed and normalised at config time; matching never allocates.

use std::net::IpAddr;

/// Istio's string value semantics (`matcher.StringMatcher`): `abc` exact, `abc*` prefix,
/// `*abc` suffix, `*` = Envoy regex `.+` (non-empty). Only a leading or trailing `*` is special.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// Envoy `safe_regex: .+` — RE2's `.` does not match `\n`.
    NonEmpty,
}

impl StrMatch {
    /// Compiles one policy value. `*` is checked first, as Istio does, so that a prefix or
    /// suffix is never empty.
    pub fn new(value: &str) -> Self {
        if value == "*" {
            StrMatch::NonEmpty
        } else if let Some(rest) = value.strip_prefix('*') {
            StrMatch::Suffix(rest.into())
        } else if let Some(rest) = value.strip_suffix('*') {
            StrMatch::Prefix(rest.into())
        } else {
            StrMatch::Exact(value.into())
        }
    }

    /// Same, for a case-insensitive matcher (Envoy `ignore_case: true`, ASCII only): the
    /// pattern is lower-cased once here, the request value is compared without allocating.
    pub fn new_ignore_case(value: &str) -> Self {
        Self::new(&value.to_ascii_lowercase())
    }

    pub fn matches(&self, s: &str) -> bool {
        match self {
            StrMatch::Exact(e) => s == &**e,
            StrMatch::Prefix(p) => s.starts_with(&**p),
            StrMatch::Suffix(x) => s.ends_with(&**x),
            StrMatch::NonEmpty => non_empty_regex(s),
        }
    }

    /// Case-insensitive match; the pattern must come from [`StrMatch::new_ignore_case`].
    pub fn matches_ignore_case(&self, s: &str) -> bool {
        let b = s.as_bytes();
        match self {
            StrMatch::Exact(e) => b.eq_ignore_ascii_case(e.as_bytes()),
            StrMatch::Prefix(p) => {
                b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            StrMatch::Suffix(x) => {
                b.len() >= x.len() && b[b.len() - x.len()..].eq_ignore_ascii_case(x.as_bytes())
            }
            StrMatch::NonEmpty => non_empty_regex(s),
        }
    }
}

/// RE2 full match of `.+`.
fn non_empty_regex(s: &str) -> bool {
    !s.is_empty() && !s.contains('\n')
}

/// An Envoy `HeaderMatcher` as Istio builds it: `*` is `present_match`, anything else a
/// string match on the header's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    Present,
    Value(StrMatch),
}

impl HeaderMatch {
    pub fn new(value: &str) -> Self {
        if value == "*" {
            HeaderMatch::Present
        } else {
            HeaderMatch::Value(StrMatch::new(value))
        }
    }

    /// `:authority` matching: case-insensitive.
    pub fn new_host(value: &str) -> Self {
        if value == "*" {
            HeaderMatch::Present
        } else {
            HeaderMatch::Value(StrMatch::new_ignore_case(value))
        }
    }

    /// `value` is None when the header is absent.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (HeaderMatch::Present, v) => v.is_some(),
            (HeaderMatch::Value(m), Some(v)) => m.matches(v),
            (HeaderMatch::Value(_), None) => false,
        }
    }

    pub fn matches_ignore_case(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (HeaderMatch::Present, v) => v.is_some(),
            (HeaderMatch::Value(m), Some(v)) => m.matches_ignore_case(v),
            (HeaderMatch::Value(_), None) => false,
        }
    }
}

/// A full-match pattern of literals and `.*` / `.+` gaps: the shape of every regex Istio
/// emits for identities (`.*/ns/<ns>/.*`, `spiffe://.*<suffix>`,
/// `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`). Matched greedily-leftmost, which is exact
/// for this shape (a gap absorbs anything) and linear-ish in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    toks: Vec<GlobTok>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GlobTok {
    Lit(Box<str>),
    /// A gap of at least `min` bytes (0 = `.*`, 1 = `.+`).
    Gap {
        min: usize,
    },
}

impl Glob {
    /// Builds a glob from parts; consecutive literals and gaps are merged.
    fn from_parts<'a>(parts: impl IntoIterator<Item = GlobPart<'a>>) -> Self {
        let mut toks: Vec<GlobTok> = Vec::new();
        for part in parts {
            match part {
                GlobPart::Lit("") => {}
                GlobPart::Lit(l) => match toks.last_mut() {
                    Some(GlobTok::Lit(prev)) => *prev = format!("{prev}{l}").into(),
                    _ => toks.push(GlobTok::Lit(l.into())),
                },
                GlobPart::Gap(min) => match toks.last_mut() {
                    Some(GlobTok::Gap { min: prev }) => *prev += min,
                    _ => toks.push(GlobTok::Gap { min }),
                },
            }
        }
        Glob { toks }
    }

    /// `*` in `pattern` is a `.*` gap, everything else literal.
    pub fn star(pattern: &str) -> Self {
        let mut parts = Vec::new();
        for (i, lit) in pattern.split('*').enumerate() {
            if i > 0 {
                parts.push(GlobPart::Gap(0));
            }
            parts.push(GlobPart::Lit(lit));
        }
        Self::from_parts(parts)
    }

    pub fn matches(&self, s: &str) -> bool {
        let s = s.as_bytes();
        let mut pos = 0usize;
        let mut gap: Option<usize> = None;
        let last = self.toks.len().saturating_sub(1);
        for (i, tok) in self.toks.iter().enumerate() {
            match tok {
                GlobTok::Gap { min } => gap = Some(gap.unwrap_or(0) + min),
                GlobTok::Lit(lit) => {
                    let lit = lit.as_bytes();
                    match gap.take() {
                        // Anchored right after the previous token.
                        None => {
                            if !s.get(pos..).is_some_and(|r| r.starts_with(lit)) {
                                return false;
                            }
                            pos += lit.len();
                        }
                        // The last literal is anchored at the end of the input.
                        Some(min) if i == last => {
                            return s.len() >= pos + min + lit.len() && s.ends_with(lit);
                        }
                        // A floating literal: the leftmost placement leaves the most room.
                        Some(min) => {
                            let start = pos + min;
                            match s.get(start..).and_then(|r| find(r, lit)) {
                                Some(at) => pos = start + at + lit.len(),
                                None => return false,
                            }
                        }
                    }
                }
            }
        }
        match gap {
            Some(min) => s.len() >= pos + min,
            None => pos == s.len(),
        }
    }
}

enum GlobPart<'a> {
    Lit(&'a str),
    Gap(usize),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

const SPIFFE: &str = "spiffe://";

/// A matcher on the peer identity: Envoy RBAC `authenticated.principal_name`, applied to each
/// URI SAN of the client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMatch {
    Str(StrMatch),
    Glob(Glob),
    /// Any of several globs (the alternatives of the service-account regex).
    AnyGlob(Box<[Glob]>),
    /// `trustDomains` / `source.trustDomain` with a `*` (istiod's regex
    /// `spiffe://<prefix>[^/]*<suffix>/.*`): the SAN's trust domain (between `spiffe://` and
    /// the next `/`) starts with `prefix` and ends with `suffix`.
    TrustDomain {
        prefix: Box<str>,
        suffix: Box<str>,
    },
}

impl IdMatch {
    /// `principals` / `source.principal`: `StringMatcherWithPrefix(v, "spiffe://")`.
    /// `*` is `.+` on the whole SAN (the `spiffe://` prefix is not required); `*x` is the
    /// regex `spiffe://.*x`, which we match with `x` taken literally.
    pub fn principal(value: &str) -> Self {
        if value == "*" {
            IdMatch::Str(StrMatch::NonEmpty)
        } else if let Some(rest) = value.strip_prefix('*') {
            IdMatch::Glob(Glob::from_parts([
                GlobPart::Lit(SPIFFE),
                GlobPart::Gap(0),
                GlobPart::Lit(rest),
            ]))
        } else if let Some(rest) = value.strip_suffix('*') {
            IdMatch::Str(StrMatch::Prefix(format!("{SPIFFE}{rest}").into()))
        } else {
            IdMatch::Str(StrMatch::Exact(format!("{SPIFFE}{value}").into()))
        }
    }

    /// `trustDomains` / `source.trustDomain` (istiod's `srcTrustDomainGenerator`): `*` =
    /// any `spiffe://` identity; `td` = prefix `spiffe://td/`; one `*` inside = any run of
    /// characters without `/` there.
    pub fn trust_domain(value: &str) -> Self {
        match value.split_once('*') {
            None => IdMatch::Str(StrMatch::Prefix(format!("{SPIFFE}{value}/").into())),
            Some(_) if value == "*" => IdMatch::Str(StrMatch::Prefix(SPIFFE.into())),
            Some((prefix, suffix)) => IdMatch::TrustDomain {
                prefix: prefix.into(),
                suffix: suffix.into(),
            },
        }
    }

    /// `namespaces` / `source.namespace`: regex `.*/ns/<v>/.*` with every `*` of the value
    /// turned into `.*`.
    pub fn namespace(value: &str) -> Self {
        IdMatch::Glob(Glob::star(&format!("*/ns/{value}/*")))
    }

    /// `serviceAccounts` / `source.serviceAccount`: `ns/sa`, or `sa` in the policy's
    /// namespace; regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`.
    pub fn service_account(value: &str, policy_namespace: &str) -> Self {
        let (ns, sa) = value.split_once('/').unwrap_or((policy_namespace, value));
        let ns_part = format!("/ns/{ns}/");
        let sa_part = format!("sa/{sa}");
        let mut alternatives = Vec::with_capacity(4);
        for nested in [false, true] {
            for trailing in [false, true] {
                let mut parts = vec![
                    GlobPart::Lit(SPIFFE),
                    GlobPart::Gap(1),
                    GlobPart::Lit(&ns_part),
                ];
                if nested {
                    parts.push(GlobPart::Gap(1));
                    parts.push(GlobPart::Lit("/"));
                }
                parts.push(GlobPart::Lit(&sa_part));
                if trailing {
                    parts.push(GlobPart::Lit("/"));
                    parts.push(GlobPart::Gap(1));
                }
                alternatives.push(Glob::from_parts(parts));
            }
        }
        IdMatch::AnyGlob(alternatives.into())
    }

    pub fn matches(&self, san: &str) -> bool {
        match self {
            IdMatch::Str(m) => m.matches(san),
            IdMatch::Glob(g) => g.matches(san),
            IdMatch::AnyGlob(gs) => gs.iter().any(|g| g.matches(san)),
            IdMatch::TrustDomain { prefix, suffix } => san
                .strip_prefix(SPIFFE)
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(td, _)| {
                    td.len() >= prefix.len() + suffix.len()
                        && td.starts_with(&**prefix)
                        && td.ends_with(&**suffix)
                        && !td.contains('/')
                }),
        }
    }
}

/// `requestPrincipals` / `request.auth.principal`: Istio splits the value at the LAST `/`
/// into an issuer matcher and a subject matcher on the verified JWT payload (`iss`, `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPrincipalMatch {
    pub iss: StrMatch,
    pub sub: StrMatch,
}

impl RequestPrincipalMatch {
    /// Mirrors Istio's `requestPrincipalGenerator` case by case (including its quirks: in
    /// `*x/y*` only the issuer wildcard counts, the subject is the literal `y*`).
    pub fn new(value: &str) -> Self {
        let split = value.rfind('/');
        let (iss, sub) = match split {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, ""),
        };
        let exact = |s: &str| StrMatch::Exact(s.into());
        if value == "*" {
            return Self {
                iss: StrMatch::NonEmpty,
                sub: StrMatch::NonEmpty,
            };
        }
        if value.starts_with('*') {
            return match split {
                Some(_) => Self {
                    iss: if iss == "*" {
                        StrMatch::NonEmpty
                    } else {
                        StrMatch::Suffix(strip_star_prefix(iss).into())
                    },
                    sub: exact(sub),
                },
                None => Self {
                    iss: StrMatch::NonEmpty,
                    sub: StrMatch::Suffix(strip_star_prefix(value).into()),
                },
            };
        }
        if value.ends_with('*') {
            return match split {
                Some(_) => Self {
                    iss: exact(iss),
                    sub: if sub == "*" {
                        StrMatch::NonEmpty
                    } else {
                        StrMatch::Prefix(strip_star_suffix(sub).into())
                    },
                },
                None => Self {
                    iss: StrMatch::Prefix(strip_star_suffix(value).into()),
                    sub: StrMatch::NonEmpty,
                },
            };
        }
        Self {
            iss: exact(iss),
            sub: exact(sub),
        }
    }

    /// `iss` / `sub` are the payload's string claims (None when absent or not a string).
    pub fn matches(&self, iss: Option<&str>, sub: Option<&str>) -> bool {
        iss.is_some_and(|i| self.iss.matches(i)) && sub.is_some_and(|s| self.sub.matches(s))
    }
}

fn strip_star_prefix(s: &str) -> &str {
    s.strip_prefix('*').unwrap_or(s)
}

fn strip_star_suffix(s: &str) -> &str {
    s.strip_suffix('*').unwrap_or(s)
}

/// An Envoy `CidrRange`: the address is masked to the prefix; an address of the other
/// family never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    /// Parses like Go's `netip.ParsePrefix` / `netip.ParseAddr` (what Istio validates and
    /// translates with): `a.b.c.d`, IPv6, or either with `/bits`; a bare address is a /32 or
    /// /128. Bits are decimal without sign or leading zero.
    pub fn parse(value: &str) -> Result<Self, String> {
        let (addr, bits) = match value.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (value, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| match bits {
            Some(_) => format!("bad CIDR range ({value})"),
            None => format!("bad IP address ({value})"),
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => {
                let well_formed = !b.is_empty()
                    && b.bytes().all(|c| c.is_ascii_digit())
                    && (b.len() == 1 || !b.starts_with('0'));
                match b.parse::<u32>() {
                    Ok(n) if well_formed && n <= max => n,
                    _ => return Err(format!("bad CIDR range ({value}): bad prefix length")),
                }
            }
        };
        Ok(match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                Cidr::V4 {
                    net: u32::from(a) & mask,
                    mask,
                }
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                Cidr::V6 {
                    net: u128::from(a) & mask,
                    mask,
                }
            }
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Cidr::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == *net,
            _ => false,
        }
    }
}

/// Parses a port like Go's `strconv.ParseUint(v, 10, 32)` limited to 65535 (Istio's
/// `ValidatePorts` / `convertToPort`): decimal digits only, leading zeros allowed.
pub fn parse_port(value: &str) -> Result<u16, String> {
    if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("bad port ({value})"));
    }
    let digits = value.trim_start_matches('0');
    if digits.len() > 5 {
        return Err(format!("bad port ({value}): out of range"));
    }
    match digits.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(p as u16),
        Err(_) if digits.is_empty() => Ok(0),
        _ => Err(format!("bad port ({value}): out of range")),
    }
}

/// `paths` value: a string matcher on the path without query and fragment, or an Envoy
/// `uri_template` when the value contains `{*}` / `{**}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Str(StrMatch),
    Template(PathTemplate),
}

impl PathMatch {
    /// The value must have passed [`check_path_template`].
    pub fn new(value: &str) -> Self {
        if contains_path_template(value) {
            PathMatch::Template(PathTemplate::new(value))
        } else {
            PathMatch::Str(StrMatch::new(value))
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(t) => t.matches(path),
        }
    }
}

const MATCH_ONE: &str = "{*}";
const MATCH_ANY: &str = "{**}";

pub fn contains_path_template(value: &str) -> bool {
    value.contains(MATCH_ONE) || value.contains(MATCH_ANY)
}

/// RFC 3986 `pchar` minus `*` (plus `=`): what Istio's admission (`CheckValidPathTemplate`)
/// and Envoy's `uri_template` accept in a literal segment of a template.
fn is_pchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&c)
}

/// What Envoy 1.40's `*` / `**` operators match in a path segment: the literal set and a
/// literal `*` too (probed side by side over every printable ASCII byte in
/// tests/e2e_differential.rs: `*` is the only byte on which a set without it disagrees, so
/// a DENY on `/api/{*}/private` must fire for `/api/*/private`).
fn is_segment_char(c: u8) -> bool {
    is_pchar(c) || c == b'*'
}

/// Istio's admission check of `paths` / `notPaths` (`CheckValidPathTemplate`), plus the
/// leading `/` that Envoy's `uri_template` requires (Istio accepts `a/{*}` and Envoy then
/// rejects the listener; meshguard rejects the policy).
pub fn check_path_template(path: &str) -> Result<(), String> {
    let template = contains_path_template(path);
    let mut seen_any = false;
    for glob in path.trim_matches('/').split('/') {
        if glob == MATCH_ONE || glob == MATCH_ANY {
            if seen_any {
                return Err(format!(
                    "invalid or unsupported path {path:?}: {{**}} is not the last operator"
                ));
            }
            seen_any = glob == MATCH_ANY;
            continue;
        }
        if glob.contains(['{', '}']) {
            return Err(format!(
                "invalid or unsupported path {path:?}: contains '{{' or '}}' beyond a supported path template"
            ));
        }
        if template && (glob.is_empty() || !glob.bytes().all(is_pchar)) {
            return Err(format!(
                "invalid or unsupported path {path:?}: segment {glob:?} is not a valid literal"
            ));
        }
    }
    if template && !path.starts_with('/') {
        return Err(format!(
            "invalid path template {path:?}: a path template must start with '/'"
        ));
    }
    // Istio trims every leading and trailing '/' before its checks; Envoy's `uri_template`
    // then refuses the listener for an empty segment (`//{**}`, `/a/{*}//`), which in a mesh
    // leaves the policy unenforced. A single trailing '/' is fine to both.
    let inner = path.get(1..).unwrap_or_default();
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if template && inner.split('/').any(str::is_empty) {
        return Err(format!(
            "invalid path template {path:?}: empty segment (Envoy's uri_template refuses it)"
        ));
    }
    Ok(())
}

/// Envoy's `uri_template` matcher for Istio's `{*}` (one segment: `[pchar]+`) and `{**}`
/// (`[pchar/]*`, must be the last operator; only literals may follow it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    head: Vec<TemplateTok>,
    /// Present when the template has `{**}`: the literal text after it (maybe empty).
    tail: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplateTok {
    Lit(Box<str>),
    One,
}

impl PathTemplate {
    /// The value must have passed [`check_path_template`].
    fn new(value: &str) -> Self {
        let mut head: Vec<TemplateTok> = Vec::new();
        let mut tail: Option<String> = None;
        let mut lit = String::new();
        for (i, seg) in value.split('/').enumerate() {
            if i > 0 {
                lit.push('/');
            }
            match seg {
                MATCH_ANY if tail.is_none() => {
                    if !lit.is_empty() {
                        head.push(TemplateTok::Lit(std::mem::take(&mut lit).into()));
                    }
                    tail = Some(String::new());
                }
                MATCH_ONE if tail.is_none() => {
                    if !lit.is_empty() {
                        head.push(TemplateTok::Lit(std::mem::take(&mut lit).into()));
                    }
                    head.push(TemplateTok::One);
                }
                _ => lit.push_str(seg),
            }
            if let Some(t) = tail.as_mut() {
                t.push_str(&lit);
                lit.clear();
            }
        }
        if !lit.is_empty() {
            head.push(TemplateTok::Lit(lit.into()));
        }
        PathTemplate {
            head,
            tail: tail.map(Into::into),
        }
    }

    /// The literal text every matching path starts with (the template's leading literal),
    /// if any: what the path index keys a template on.
    pub fn literal_prefix(&self) -> Option<&str> {
        match self.head.first() {
            Some(TemplateTok::Lit(l)) => Some(l),
            Some(TemplateTok::One) | None => None,
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        let p = path.as_bytes();
        let mut pos = 0usize;
        for tok in &self.head {
            match tok {
                TemplateTok::Lit(l) => {
                    if !p.get(pos..).is_some_and(|r| r.starts_with(l.as_bytes())) {
                        return false;
                    }
                    pos += l.len();
                }
                // Greedy is exact: `{*}` is a whole segment, so what follows starts with `/`,
                // which a segment run cannot consume.
                TemplateTok::One => {
                    let run = p
                        .get(pos..)
                        .map_or(0, |r| r.iter().take_while(|c| is_segment_char(**c)).count());
                    if run == 0 {
                        return false;
                    }
                    pos += run;
                }
            }
        }
        let rest = p.get(pos..).unwrap_or(&[]);
        match &self.tail {
            None => rest.is_empty(),
            Some(tail) => {
                let tail = tail.as_bytes();
                rest.len() >= tail.len()
                    && rest.ends_with(tail)
                    && rest[..rest.len() - tail.len()]
                        .iter()
                        .all(|c| *c == b'/' || is_segment_char(*c))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_match_forms() {
        assert!(StrMatch::new("abc").matches("abc"));
        assert!(!StrMatch::new("abc").matches("abcd"));
        assert!(StrMatch::new("abc*").matches("abcd"));
        assert!(StrMatch::new("abc*").matches("abc"));
        assert!(StrMatch::new("*abc").matches("xabc"));
        assert!(!StrMatch::new("*abc").matches("abcx"));
        assert!(StrMatch::new("*").matches("x"));
        assert!(!StrMatch::new("*").matches(""));
        // RE2 `.` does not match a newline.
        assert!(!StrMatch::new("*").matches("a\nb"));
        // Only a leading or trailing `*` is special.
        assert!(StrMatch::new("a*b").matches("a*b"));
        assert!(!StrMatch::new("a*b").matches("axb"));
        // `**` is a suffix matcher for a literal `*` (Istio strips one `*`).
        assert_eq!(StrMatch::new("**"), StrMatch::Suffix("*".into()));
    }

    #[test]
    fn str_match_ignore_case() {
        let m = StrMatch::new_ignore_case("*.Example.COM");
        assert!(m.matches_ignore_case("API.example.com"));
        assert!(!m.matches_ignore_case("example.com"));
        assert!(StrMatch::new_ignore_case("Foo.com").matches_ignore_case("FOO.COM"));
        assert!(StrMatch::new_ignore_case("foo.*").matches_ignore_case("FOO.bar"));
        // Multi-byte input must not panic on slicing.
        assert!(!StrMatch::new_ignore_case("é").matches_ignore_case("x"));
        assert!(!StrMatch::new_ignore_case("*ab").matches_ignore_case("é"));
    }

    #[test]
    fn header_match() {
        assert!(HeaderMatch::new("*").matches(Some("")));
        assert!(!HeaderMatch::new("*").matches(None));
        assert!(HeaderMatch::new("a*").matches(Some("abc")));
        assert!(!HeaderMatch::new("a*").matches(None));
    }

    #[test]
    fn glob_matching() {
        let g = Glob::star("*/ns/foo/*");
        assert!(g.matches("spiffe://td/ns/foo/sa/x"));
        assert!(g.matches("/ns/foo/"));
        assert!(!g.matches("spiffe://td/ns/foobar/sa/x"));
        let g = Glob::star("*/ns/foo*/*");
        assert!(g.matches("spiffe://td/ns/foobar/sa/x"));
        assert!(g.matches("spiffe://td/ns/foo/sa/x"));
        let g = Glob::star("*/ns/*-prod/*");
        assert!(g.matches("spiffe://td/ns/a-prod/sa/x"));
        assert!(!g.matches("spiffe://td/ns/a-dev/sa/x"));
        // Later occurrence is found.
        assert!(Glob::star("*/ns/b/*").matches("spiffe://td/ns/a/x/ns/b/sa/y"));
        // Anchored end literal must not overlap the previous one.
        assert!(!Glob::star("ab*ba").matches("aba"));
        assert!(Glob::star("ab*ba").matches("abba"));
        assert!(Glob::star("abc").matches("abc"));
        assert!(!Glob::star("abc").matches("abcd"));
        assert!(Glob::star("*").matches(""));
    }

    #[test]
    fn principal_matcher() {
        let san = "spiffe://cluster.local/ns/foo/sa/bar";
        assert!(IdMatch::principal("cluster.local/ns/foo/sa/bar").matches(san));
        assert!(IdMatch::principal("cluster.local/ns/foo/*").matches(san));
        assert!(IdMatch::principal("*/sa/bar").matches(san));
        assert!(IdMatch::principal("*").matches(san));
        // `*` is `.+` on the whole SAN: even a non-SPIFFE URI SAN matches.
        assert!(IdMatch::principal("*").matches("https://example.com"));
        // Suffix needs the spiffe:// scheme.
        assert!(!IdMatch::principal("*/sa/bar").matches("https://x/sa/bar"));
        assert!(!IdMatch::principal("cluster.local/ns/foo/sa/ba").matches(san));
    }

    #[test]
    fn service_account_matcher() {
        let m = IdMatch::service_account("foo/bar", "default");
        assert!(m.matches("spiffe://cluster.local/ns/foo/sa/bar"));
        assert!(m.matches("spiffe://cluster.local/ns/foo/x/y/sa/bar"));
        assert!(m.matches("spiffe://cluster.local/ns/foo/sa/bar/extra"));
        assert!(!m.matches("spiffe://cluster.local/ns/foo/sa/bar-junk"));
        assert!(!m.matches("spiffe://cluster.local/ns/foo/sa/bar/"));
        assert!(!m.matches("spiffe:///ns/foo/sa/bar"));
        assert!(!m.matches("spiffe://cluster.local/ns/other/sa/bar"));
        let m = IdMatch::service_account("bar", "default");
        assert!(m.matches("spiffe://td/ns/default/sa/bar"));
        assert!(!m.matches("spiffe://td/ns/foo/sa/bar"));
    }

    #[test]
    fn request_principal_split() {
        let m = RequestPrincipalMatch::new("https://issuer.example.com/realms/x/user-1");
        assert_eq!(
            m.iss,
            StrMatch::Exact("https://issuer.example.com/realms/x".into())
        );
        assert_eq!(m.sub, StrMatch::Exact("user-1".into()));
        let m = RequestPrincipalMatch::new("*");
        assert_eq!((m.iss, m.sub), (StrMatch::NonEmpty, StrMatch::NonEmpty));
        let m = RequestPrincipalMatch::new("iss/*");
        assert_eq!(
            (m.iss, m.sub),
            (StrMatch::Exact("iss".into()), StrMatch::NonEmpty)
        );
        let m = RequestPrincipalMatch::new("*/sub");
        assert_eq!(
            (m.iss, m.sub),
            (StrMatch::NonEmpty, StrMatch::Exact("sub".into()))
        );
        let m = RequestPrincipalMatch::new("*.com/sub");
        assert_eq!(
            (m.iss, m.sub),
            (
                StrMatch::Suffix(".com".into()),
                StrMatch::Exact("sub".into())
            )
        );
        let m = RequestPrincipalMatch::new("iss/su*");
        assert_eq!(
            (m.iss, m.sub),
            (StrMatch::Exact("iss".into()), StrMatch::Prefix("su".into()))
        );
        // No `/`: the whole value is the issuer and the subject must be present and empty...
        let m = RequestPrincipalMatch::new("iss");
        assert_eq!(
            (m.iss, m.sub),
            (StrMatch::Exact("iss".into()), StrMatch::Exact("".into()))
        );
        // ...unless it has a wildcard, which then applies to one side only.
        let m = RequestPrincipalMatch::new("*-suffix");
        assert_eq!(
            (m.iss, m.sub),
            (StrMatch::NonEmpty, StrMatch::Suffix("-suffix".into()))
        );
        let m = RequestPrincipalMatch::new("prefix-*");
        assert_eq!(
            (m.iss, m.sub),
            (StrMatch::Prefix("prefix-".into()), StrMatch::NonEmpty)
        );
        // Istio quirk: a leading `*` wins, the subject is then taken literally.
        let m = RequestPrincipalMatch::new("*.com/a*");
        assert_eq!(
            (m.iss, m.sub),
            (
                StrMatch::Suffix(".com".into()),
                StrMatch::Exact("a*".into())
            )
        );
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        // Host bits are masked, as Envoy does.
        assert!(Cidr::parse("10.1.2.3/16")
            .unwrap()
            .contains("10.1.9.9".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(!Cidr::parse("1.2.3.4")
            .unwrap()
            .contains("1.2.3.5".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        // Families never mix.
        assert!(!Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(!Cidr::parse("::/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/08",
            "1.2.3.4/+8",
            "::/129",
            "a.b.c.d",
            "01.2.3.4",
            "fe80::1%eth0",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_parsing() {
        assert_eq!(parse_port("80"), Ok(80));
        assert_eq!(parse_port("0"), Ok(0));
        assert_eq!(parse_port("080"), Ok(80));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("0000000000443"), Ok(443));
        for bad in [
            "",
            "65536",
            "-1",
            "+80",
            "8o",
            "99999999999999999999",
            " 80",
        ] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_template_validation() {
        for ok in [
            "/a/{*}",
            "/{**}",
            "/a/{*}/b/{**}",
            "/{**}/b/c",
            "/a/{*}/",
            "/a/{**}/",
            "/{**}/b/c",
            "/{*}/a:b@c=d",
            "/plain/*",
            "//plain",
            "*",
            "*/x",
        ] {
            assert!(check_path_template(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/{**}/{*}",
            "/{**}/{**}",
            "/a{*}",
            "/{*}b",
            "/{a}",
            "/foo{",
            "/a//{*}",
            "/{*}/a*",
            "/{*}/a b",
            "a/{*}",
            "/{***}",
            "//{**}",
            "/a/{*}//",
            "/{*}//b",
        ] {
            assert!(check_path_template(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_template_matching() {
        let t = PathMatch::new("/a/{*}/c");
        assert!(t.matches("/a/b/c"));
        assert!(!t.matches("/a/b/x/c"));
        assert!(!t.matches("/a//c"));
        assert!(!t.matches("/a/b/c/"));
        let t = PathMatch::new("/a/{**}");
        assert!(t.matches("/a/b"));
        assert!(t.matches("/a/b/c/d"));
        // Envoy's `**` is `[pchar/]*`: it also matches nothing.
        assert!(t.matches("/a/"));
        assert!(!t.matches("/a"));
        let t = PathMatch::new("/{**}/x");
        assert!(t.matches("/a/b/x"));
        assert!(t.matches("//x"));
        assert!(!t.matches("/x"));
        let t = PathMatch::new("/v1/{*}/items/{**}");
        assert!(t.matches("/v1/abc/items/1/2"));
        assert!(!t.matches("/v1/abc/other/1"));
        // Characters outside pchar never match an operator.
        assert!(!PathMatch::new("/a/{*}").matches("/a/b\"c"));
        // A literal `*` is a segment character to Envoy 1.40's operators.
        assert!(PathMatch::new("/a/{*}").matches("/a/*"));
        assert!(PathMatch::new("/a/{*}/c").matches("/a/x*y/c"));
        assert!(PathMatch::new("/a/{**}").matches("/a/*/**"));
        assert!(PathMatch::new("/a/{*}").matches("/a/b=c"));
        let t = PathMatch::new("/a/{*}/");
        assert!(t.matches("/a/b/"));
        assert!(!t.matches("/a/b"));
    }
}
