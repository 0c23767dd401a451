//! The `paths` matcher with Istio's path templates (`{*}`, `{**}`, Envoy `uri_template`):
//! template from the input's first line (or first half), request path from the rest.
//!
//! 1. Directly: `check_path_template` (admission), then `PathMatch::new(..).matches(..)`.
//!    The matcher module is private to the crate, so it is compiled here from
//!    `src/engine/authz/matcher.rs` itself (`#[path]`; std-only, nothing in src/ changes).
//!    Oracles: a template's verdict equals an independent dynamic-programming match of
//!    the `uri_template` semantics (`{*}` = `[pchar*]+`, `{**}` = `[pchar*/]*`, as Envoy 1.40
//!    behaves); a matching
//!    path starts with the template's `literal_prefix` (the path index relies on it).
//! 2. Through the engine: an ALLOW policy with `paths: [template]` next to an unrelated
//!    indexed one, and one with `notPaths: [template]`; the decision for the path (query and
//!    fragment stripped) must agree with the matcher — this covers validation, compilation
//!    and the policy path index.

#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../../src/engine/authz/matcher.rs"]
mod matcher;

use libfuzzer_sys::fuzz_target;
use meshguard_engine::RequestAttributes;
use meshguard_engine::parts::InlineKeysOnly;
use meshguard_engine::{Engine, Outcome};
use meshguard_fuzz::{full_match, template_tokens, text, NOW};
use serde_json::json;

use matcher::{check_path_template, contains_path_template, PathMatch};

const FILLER: &str = "/fuzz-filler/";

fn engine(paths_field: &str, template: &str) -> Option<Engine> {
    let mut policies = vec![json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "t", "namespace": "foo"},
        "spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {paths_field: [template]}}]}]}
    })];
    if paths_field == "paths" {
        policies.push(json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "filler", "namespace": "foo"},
            "spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/fuzz-filler/*", "/exact"]}}]}]}
        }));
    }
    let cfg = json!({"workload": {"namespace": "foo"}, "policies": policies});
    Engine::from_json(&cfg.to_string()).ok()
}

fn allowed(engine: &Engine, path: &str) -> bool {
    let req = RequestAttributes {
        method: "GET".into(),
        path: path.into(),
        host: "h".into(),
        ..Default::default()
    };
    match engine.decide(&req, &InlineKeysOnly, NOW) {
        Outcome::Decided(d) => d.allowed(),
        Outcome::NeedKeys(_) => panic!("no RequestAuthentication, yet keys are needed"),
        Outcome::NeedCheck(_) => panic!("no CUSTOM policy, yet a check is asked for"),
    }
}

fuzz_target!(|data: &[u8]| {
    let input = text(data);
    let (template, path) = match input.split_once('\n') {
        Some(tp) => tp,
        None => {
            let mut mid = input.len() / 2;
            while !input.is_char_boundary(mid) {
                mid -= 1;
            }
            input.split_at(mid)
        }
    };
    let is_template = contains_path_template(template);
    if check_path_template(template).is_err() {
        // Rejected at admission: the engine must reject the policy too.
        assert!(
            engine("paths", template).is_none(),
            "engine accepted a path the admission check rejects: {template:?}"
        );
        return;
    }
    let m = PathMatch::new(template);
    let path_only = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    let got = m.matches(path_only);
    let _ = m.matches(path);
    if let PathMatch::Template(t) = &m {
        assert!(is_template);
        if template.len() <= 512 {
            let want = full_match(&template_tokens(template), path_only.as_bytes());
            assert_eq!(
                got, want,
                "template {template:?} on {path_only:?}: matcher says {got}, uri_template semantics say {want}"
            );
        }
        if got {
            if let Some(prefix) = t.literal_prefix() {
                assert!(
                    path_only.starts_with(prefix),
                    "{path_only:?} matches {template:?} without its literal prefix {prefix:?}"
                );
            }
        }
    }
    // The engine's decision must agree with the matcher.
    if let Some(e) = engine("paths", template) {
        let filler = path_only.starts_with(FILLER) || path_only == "/exact";
        let decided = allowed(&e, path);
        assert_eq!(
            decided,
            got || filler,
            "ALLOW paths [{template:?}]: engine says {decided} for {path:?}, matcher says {got}"
        );
    }
    if let Some(e) = engine("notPaths", template) {
        let decided = allowed(&e, path);
        assert_eq!(
            decided, !got,
            "ALLOW notPaths [{template:?}]: engine says {decided} for {path:?}, matcher says {got}"
        );
    }
});
