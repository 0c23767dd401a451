//! Header, claim, identity and string matchers, and a full `Engine::decide`.
//!
//! The input is a request in the line format of `meshguard_fuzz::parse_request` (method and
//! path, headers, addresses, SANs, SNI, and `@claims {...}` lines that become a token signed
//! with the fixture HMAC key, so arbitrary claims pass authentication and reach the claim
//! matchers). It is decided by a fixed configuration, `fixtures/matchers.json`, that uses
//! every condition kind Istio has (sources, operations, `when` keys, claims, headers, dry
//! run, AUDIT, DENY, PeerAuthentication port-level mTLS, two JWT rules with every token
//! location and output header).
//!
//! Then each header line `pattern: value` of the input is also used as a (pattern, value)
//! pair for the value matchers themselves (`StrMatch`, `HeaderMatch`, `IdMatch`,
//! `RequestPrincipalMatch`, `Cidr`, `parse_port`, `Glob`). The matcher module is private to
//! the crate, so it is compiled here from `src/engine/authz/matcher.rs` itself (`#[path]`).
//! Oracles: the globs Istio's identity regexes become agree with an independent
//! dynamic-programming match; string matchers agree with their one-line definitions.

#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../../src/engine/authz/matcher.rs"]
mod matcher;

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use meshguard_engine::{Engine, Outcome};
use meshguard_fuzz::{
    fixture_jwks, full_match, lit, parse_request, star_tokens, text, FixtureKeys, Tok, ANY0, ANY1,
    FIXTURE_JWKS, NOW,
};

use matcher::{parse_port, Cidr, Glob, HeaderMatch, IdMatch, RequestPrincipalMatch, StrMatch};

thread_local! {
    static ENGINE: Engine = {
        let jwks = serde_json::to_string(FIXTURE_JWKS).unwrap_or_default();
        let cfg = include_str!("../fixtures/matchers.json").replace("\"@FIXTURE_JWKS@\"", &jwks);
        match Engine::from_json(&cfg) {
            Ok(e) => e,
            Err(err) => panic!("fixtures/matchers.json does not compile: {err}"),
        }
    };
    static KEYS: FixtureKeys = FixtureKeys(fixture_jwks());
}

/// Patterns and values longer than this skip the (quadratic) reference checks.
const REF_MAX: usize = 256;

fn str_ref(pattern: &str, s: &str) -> bool {
    if pattern == "*" {
        !s.is_empty() && !s.contains('\n')
    } else if let Some(x) = pattern.strip_prefix('*') {
        s.ends_with(x)
    } else if let Some(p) = pattern.strip_suffix('*') {
        s.starts_with(p)
    } else {
        s == pattern
    }
}

fn check_value_matchers(pattern: &str, value: &str) {
    // StrMatch, exact / prefix / suffix / `*`, case-sensitive and ASCII-case-insensitive.
    let sm = StrMatch::new(pattern);
    assert_eq!(
        sm.matches(value),
        str_ref(pattern, value),
        "StrMatch {pattern:?} on {value:?}"
    );
    let si = StrMatch::new_ignore_case(pattern);
    let lower = value.to_ascii_lowercase();
    assert_eq!(
        si.matches_ignore_case(value),
        str_ref(&pattern.to_ascii_lowercase(), &lower),
        "StrMatch ignore-case {pattern:?} on {value:?}"
    );
    // HeaderMatch: `*` = present.
    for v in [Some(value), None] {
        let h = HeaderMatch::new(pattern).matches(v);
        let want = match v {
            None => false,
            Some(_) if pattern == "*" => true,
            Some(v) => str_ref(pattern, v),
        };
        assert_eq!(h, want, "HeaderMatch {pattern:?} on {v:?}");
        let _ = HeaderMatch::new_host(pattern).matches_ignore_case(v);
    }
    // RequestPrincipalMatch on (value, value) and on the value split at its last `/`.
    let rp = RequestPrincipalMatch::new(pattern);
    let _ = rp.matches(Some(value), Some(value));
    let (iss, sub) = value.rsplit_once('/').unwrap_or((value, ""));
    let _ = rp.matches(Some(iss), Some(sub));
    let _ = rp.matches(None, Some(sub));
    // Cidr: a parsed range contains its own address; the value as an address.
    if let Ok(c) = Cidr::parse(pattern) {
        let addr = pattern.split_once('/').map_or(pattern, |(a, _)| a);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            assert!(
                c.contains(ip),
                "{pattern:?} does not contain its own address"
            );
        }
        if let Ok(ip) = value.parse::<IpAddr>() {
            let _ = c.contains(ip);
        }
    }
    // parse_port: decimal digits only, 0..=65535.
    let port = parse_port(pattern);
    let want = (!pattern.is_empty() && pattern.bytes().all(|c| c.is_ascii_digit())).then(|| {
        let digits = pattern.trim_start_matches('0');
        if digits.len() > 5 {
            None
        } else {
            digits
                .parse::<u32>()
                .ok()
                .or(Some(0))
                .filter(|&p| p <= 65535)
        }
    });
    assert_eq!(
        port.ok().map(u32::from),
        want.flatten(),
        "parse_port({pattern:?})"
    );

    if pattern.len() > REF_MAX || value.len() > 4 * REF_MAX {
        return;
    }
    let v = value.as_bytes();
    // Glob: `*` = `.*`, greedy-leftmost must equal the DP answer.
    assert_eq!(
        Glob::star(pattern).matches(value),
        full_match(&star_tokens(pattern), v),
        "Glob::star({pattern:?}) on {value:?}"
    );
    // IdMatch::namespace: `.*/ns/<pattern>/.*` with every `*` a gap.
    assert_eq!(
        IdMatch::namespace(pattern).matches(value),
        full_match(&star_tokens(&format!("*/ns/{pattern}/*")), v),
        "IdMatch::namespace({pattern:?}) on {value:?}"
    );
    // IdMatch::principal.
    let want = if pattern == "*" {
        !value.is_empty() && !value.contains('\n')
    } else if let Some(rest) = pattern.strip_prefix('*') {
        let toks: Vec<Tok> = lit("spiffe://").chain([ANY0]).chain(lit(rest)).collect();
        full_match(&toks, v)
    } else if let Some(rest) = pattern.strip_suffix('*') {
        value.starts_with(&format!("spiffe://{rest}"))
    } else {
        value == format!("spiffe://{pattern}")
    };
    assert_eq!(
        IdMatch::principal(pattern).matches(value),
        want,
        "IdMatch::principal({pattern:?}) on {value:?}"
    );
    // IdMatch::service_account: `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`.
    let (ns, sa) = pattern.split_once('/').unwrap_or(("foo", pattern));
    let mut want = false;
    for nested in [false, true] {
        for trailing in [false, true] {
            let mut toks: Vec<Tok> = lit("spiffe://").chain([ANY1]).collect();
            toks.extend(lit(&format!("/ns/{ns}/")));
            if nested {
                toks.push(ANY1);
                toks.extend(lit("/"));
            }
            toks.extend(lit(&format!("sa/{sa}")));
            if trailing {
                toks.extend(lit("/"));
                toks.push(ANY1);
            }
            want |= full_match(&toks, v);
        }
    }
    assert_eq!(
        IdMatch::service_account(pattern, "foo").matches(value),
        want,
        "IdMatch::service_account({pattern:?}) on {value:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let req = parse_request(&input);
    ENGINE.with(|engine| {
        KEYS.with(|keys| {
            let _ = engine.needs_for(&req);
            match engine.decide(&req, keys, NOW) {
                Outcome::Decided(d) => {
                    let _ = (d.allowed(), d.request_principal(), &d.reason, &d.audit);
                    let mut after = req.clone();
                    d.mutations.apply_to(&mut after);
                    // The request as forwarded is decided again (as a second filter would).
                    let _ = engine.decide(&after, keys, NOW);
                }
                Outcome::NeedKeys(_) => panic!("the fixture key store is always ready"),
                Outcome::NeedCheck(_) => {}
            }
        })
    });
    // Header lines as (pattern, value) pairs for the value matchers.
    for line in input.split('\n').skip(1).take(8) {
        if let Some((pattern, value)) = line.split_once(": ") {
            check_value_matchers(pattern, value);
        }
    }
});
