//! Shared pieces of the fuzz targets: the fixture key set, HMAC minting (so fuzzed claims
//! still verify and reach authorization), a line-based request format, and small reference
//! matchers the targets compare meshguard's matchers against.
//!
//! The fixture JWKS holds PUBLIC keys only (their private halves were thrown away by
//! `examples/gen_seeds.rs`), plus one HMAC secret that exists only for fuzzing.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use meshguard_engine::RequestAttributes;
use meshguard_engine::parts::{KeyState, KeyStore};
use meshguard_engine::parts::Jwks;

/// The fixture key set: RSA (RS256 / alg-less), EC P-256 / P-384 / P-521, Ed25519, an
/// alg-less `oct` key (kid `hmac`), a kid-less P-256 key and one unusable key.
pub const FIXTURE_JWKS: &str = include_str!("../fixtures/jwks.json");

/// `name token` lines: one valid token per algorithm (and a few odd ones), minted by
/// `examples/gen_seeds.rs` against [`FIXTURE_JWKS`].
pub const FIXTURE_TOKENS: &str = include_str!("../fixtures/tokens.txt");

/// The secret of the fixture `oct` key. Fuzzing only: it protects nothing.
pub const HMAC_SECRET: &[u8] = b"meshguard-fuzz-only-hmac-secret-protects-nothing";
pub const HMAC_KID: &str = "hmac";

/// The issuer the fixture tokens and policies use.
pub const ISSUER: &str = "https://issuer.fuzz.meshguard.dev";

/// "Now" for every time check (2025-06-15), so runs are reproducible.
pub const NOW: u64 = 1_750_000_000;

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Input bytes as text: most inputs are UTF-8; the rest still exercise the parsers.
pub fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// HMAC of `input` for `HS256` / `HS384` / `HS512`, computed independently of meshguard.
pub fn hmac_sign(alg: &str, input: &[u8]) -> Option<Vec<u8>> {
    fn mac<M: Mac + hmac::digest::KeyInit>(input: &[u8]) -> Option<Vec<u8>> {
        let mut m = <M as Mac>::new_from_slice(HMAC_SECRET).ok()?;
        m.update(input);
        Some(m.finalize().into_bytes().to_vec())
    }
    match alg {
        "HS256" => mac::<Hmac<sha2::Sha256>>(input),
        "HS384" => mac::<Hmac<sha2::Sha384>>(input),
        "HS512" => mac::<Hmac<sha2::Sha512>>(input),
        _ => None,
    }
}

/// `header.payload.signature` for the given header and payload text, signed with the
/// fixture HMAC secret when `alg` is an HS algorithm.
pub fn mint(alg: &str, header_json: &str, payload_json: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header_json.as_bytes()),
        b64url(payload_json.as_bytes())
    );
    let sig = hmac_sign(alg, signing_input.as_bytes()).unwrap_or_else(|| b"x".to_vec());
    format!("{signing_input}.{}", b64url(&sig))
}

/// An HS256 token (kid `hmac`) carrying `payload_json` verbatim.
pub fn mint_hs256(payload_json: &str) -> String {
    mint(
        "HS256",
        r#"{"alg":"HS256","typ":"JWT","kid":"hmac"}"#,
        payload_json,
    )
}

/// The fixture key set, parsed.
pub fn fixture_jwks() -> Arc<Jwks> {
    match Jwks::parse(FIXTURE_JWKS) {
        Ok(jwks) => Arc::new(jwks),
        Err(status) => panic!("fixtures/jwks.json does not load: {status:?}"),
    }
}

/// The fixture tokens (`name`, `token`).
pub fn fixture_tokens() -> impl Iterator<Item = (&'static str, &'static str)> {
    FIXTURE_TOKENS
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n, t.trim()))
}

/// A key store that serves the fixture keys for every remote `jwksUri`.
pub struct FixtureKeys(pub Arc<Jwks>);

impl KeyStore for FixtureKeys {
    fn keys(&self, _uri: &str) -> KeyState {
        KeyState::Ready(self.0.clone())
    }
}

/// A request in the line format the `matchers` seeds use:
///
/// ```text
/// GET /path?query            first line: method, space, path (no space: all path)
/// name: value                a header (`host` / `:authority` set the authority,
///                            `:scheme` the scheme, other pseudo headers are skipped)
/// @direct 10.0.0.1:5000      direct remote address (`ip:port` or `ip`)
/// @remote 203.0.113.7        remote address after XFF
/// @dest 10.0.0.2:8080        destination address
/// @san spiffe://...          a URI SAN of the client certificate (turns mTLS on)
/// @plaintext                 mTLS off (SANs kept: they must then be ignored)
/// @sni name                  requested server name
/// @claims {...}              an HS256 token (kid hmac) with this payload, in `authorization`
/// @claims-param {...}        the same token as query parameter `access_token`
/// @claims-header {...}       the same token in `x-jwt-assertion`
/// @claims-cookie {...}       the same token in cookie `session`
/// ```
///
/// `\n` inside a value stands for a newline.
pub fn parse_request(text: &str) -> RequestAttributes {
    let mut req = RequestAttributes::default();
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    match first.split_once(' ') {
        Some((m, p)) => {
            req.method = unescape(m);
            req.path = unescape(p);
        }
        None => req.path = unescape(first),
    }
    for line in lines {
        if let Some(rest) = line.strip_prefix('@') {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let value = unescape(value);
            match key {
                "direct" => req.direct_remote = addr(&value),
                "remote" => req.remote = addr(&value),
                "dest" => req.destination = addr(&value),
                "san" => {
                    req.connection.mtls = true;
                    req.connection.peer_uri_sans.push(value);
                }
                "plaintext" => req.connection.mtls = false,
                "sni" => req.connection.sni = Some(value),
                "claims" => req.headers.push((
                    "authorization".into(),
                    format!("Bearer {}", mint_hs256(&value)),
                )),
                "claims-header" => req
                    .headers
                    .push(("x-jwt-assertion".into(), mint_hs256(&value))),
                "claims-cookie" => req.headers.push((
                    "cookie".into(),
                    format!("a=b; session={}", mint_hs256(&value)),
                )),
                "claims-param" => {
                    let sep = if req.path.contains('?') { '&' } else { '?' };
                    let token = mint_hs256(&value);
                    req.path = format!("{}{sep}access_token={token}", req.path);
                }
                _ => {}
            }
        } else if let Some((name, value)) = line.split_once(':').filter(|(n, _)| !n.is_empty()) {
            let value = unescape(value.trim_start());
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "host" => req.host = value,
                _ => req.headers.push((name, value)),
            }
        } else if let Some(rest) = line.strip_prefix(':') {
            // Pseudo headers: `:authority: x` / `:scheme: https`.
            let (name, value) = rest.split_once(':').unwrap_or((rest, ""));
            let value = unescape(value.trim_start());
            match name {
                "authority" => req.host = value,
                "scheme" => req.scheme = value,
                "method" => req.method = value,
                "path" => req.path = value,
                _ => {}
            }
        }
    }
    req
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n")
}

fn addr(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)))
}

/// A token of a reference pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    Byte(u8),
    /// At least `min` bytes, each in `class`.
    Gap {
        min: usize,
        class: Class,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any byte (a `.` of a `(?s)` regex).
    Any,
    /// What Envoy 1.40's `uri_template` `{*}` matches: RFC 3986 pchar (minus `*`, plus
    /// `=`) and, as probed against Envoy (src/authz/matcher.rs `is_segment_char`), a
    /// literal `*`.
    Segment,
    /// A segment byte or `/` (`{**}`).
    SegmentSlash,
}

impl Class {
    fn has(self, c: u8) -> bool {
        match self {
            Class::Any => true,
            Class::Segment => is_pchar(c) || c == b'*',
            Class::SegmentSlash => c == b'/' || c == b'*' || is_pchar(c),
        }
    }
}

/// The `uri_template` literal alphabet.
pub fn is_pchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&c)
}

pub fn lit(s: &str) -> impl Iterator<Item = Tok> + '_ {
    s.bytes().map(Tok::Byte)
}

/// Full match of `toks` on `s`, by dynamic programming over positions: O(len(s) * tokens),
/// no backtracking, so it is an independent check of the matchers' greedy algorithms.
pub fn full_match(toks: &[Tok], s: &[u8]) -> bool {
    let n = s.len();
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    let mut next = vec![false; n + 1];
    for tok in toks {
        next.iter_mut().for_each(|b| *b = false);
        match *tok {
            Tok::Byte(b) => {
                for i in 0..n {
                    if cur[i] && s[i] == b {
                        next[i + 1] = true;
                    }
                }
            }
            Tok::Gap { min, class } => {
                // next[j]: some i in [run_start(j), j - min] with cur[i], where s[run_start..j]
                // is the longest run of class bytes ending at j. `count[x]` = #true in cur[..x].
                let mut count = vec![0usize; n + 2];
                for i in 0..=n {
                    count[i + 1] = count[i] + usize::from(cur[i]);
                }
                let mut run_start = 0usize;
                for j in 0..=n {
                    if j > 0 && !class.has(s[j - 1]) {
                        run_start = j;
                    }
                    if j >= min && run_start + min <= j && count[j - min + 1] > count[run_start] {
                        next[j] = true;
                    }
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    cur[n]
}

/// Envoy `uri_template` as a reference pattern: `{**}` is `[pchar*/]*`, `{*}` is `[pchar*]+`,
/// everything else literal.
pub fn template_tokens(template: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{**}") {
            toks.push(Tok::Gap {
                min: 0,
                class: Class::SegmentSlash,
            });
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{*}") {
            toks.push(Tok::Gap {
                min: 1,
                class: Class::Segment,
            });
            rest = r;
        } else {
            let c = rest.chars().next().map_or(1, char::len_utf8);
            toks.extend(lit(&rest[..c]));
            rest = &rest[c..];
        }
    }
    toks
}

/// `*` is `.*` (any bytes, newlines included), everything else literal.
pub fn star_tokens(pattern: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    for (i, part) in pattern.split('*').enumerate() {
        if i > 0 {
            toks.push(Tok::Gap {
                min: 0,
                class: Class::Any,
            });
        }
        toks.extend(lit(part));
    }
    toks
}

pub const ANY0: Tok = Tok::Gap {
    min: 0,
    class: Class::Any,
};
pub const ANY1: Tok = Tok::Gap {
    min: 1,
    class: Class::Any,
};
