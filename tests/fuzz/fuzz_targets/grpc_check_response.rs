//! The gRPC ext_authz answer on arbitrary bytes: `Engine::check_answer_grpc` with a
//! CheckResponse from the fuzzer (the first byte picks the call's gRPC status: below 200 it
//! is OK, else `byte - 200`), applied to the checked request, then the decision after it.
//!
//! Oracle: a failed call is an error (`statusOnError` 503, empty body); an allowed answer
//! puts only lower-case token names and CR/LF/NUL-free values on the request; a denial's
//! status is in 200..=599.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshguard_engine::parts::InlineKeysOnly;
use meshguard_engine::{CheckRequest, CheckVerdict, Engine, Outcome, RequestAttributes};

const CONFIG: &str = r#"{
  "workload": { "namespace": "foo" },
  "extensionProviders": [{ "name": "g", "envoyExtAuthzGrpc": {
    "service": "authz.foo.svc.cluster.local", "port": 9000, "statusOnError": "503",
    "includeRequestBodyInCheck": { "maxRequestBytes": 64 } } }],
  "policies": [
    { "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
      "metadata": { "name": "ext", "namespace": "foo" },
      "spec": { "action": "CUSTOM", "provider": { "name": "g" }, "rules": [{}] } },
    { "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
      "metadata": { "name": "alice", "namespace": "foo" },
      "spec": { "action": "ALLOW", "rules": [{ "when": [
        { "key": "request.headers[x-user]", "values": ["alice"] }] }] } }
  ]
}"#;

fn request() -> RequestAttributes {
    RequestAttributes {
        method: "POST".into(),
        path: "/api/x?b=1&a=2&b=3".into(),
        host: "app.example".into(),
        scheme: "http".into(),
        headers: vec![
            ("x-user".into(), "bob".into()),
            ("x-keep".into(), "1".into()),
            ("authorization".into(), "Bearer t".into()),
        ],
        ..Default::default()
    }
}

fn setup() -> (Engine, CheckRequest) {
    let engine = Engine::from_json(CONFIG).expect("the fixed config compiles");
    let Outcome::NeedCheck(check) = engine.decide(&request(), &InlineKeysOnly, 0) else {
        panic!("the CUSTOM rule asks for a check")
    };
    (engine, *check)
}

thread_local! {
    // The engine is per thread (it is not `Sync`), built once.
    static SETUP: (Engine, CheckRequest) = setup();
}

fn token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b":!#$%&'*+-.^_`|~".contains(&b)
        })
}

fuzz_target!(|data: &[u8]| SETUP.with(|(engine, check)| run(engine, check, data)));

fn run(engine: &Engine, check: &CheckRequest, data: &[u8]) {
    let (status, message) = match data.split_first() {
        Some((&b, rest)) if b >= 200 => (u32::from(b - 200), rest),
        Some((_, rest)) => (0, rest),
        None => (0, data),
    };
    let answer = engine.check_answer_grpc(check, Some(status), message);
    if status != 0 {
        let CheckVerdict::Deny(reply) = &answer.verdict else {
            panic!("a failed call allowed: {answer:?}")
        };
        assert_eq!((reply.status, reply.body.as_str()), (503, ""));
    }
    match &answer.verdict {
        CheckVerdict::Allow => {
            for (n, v) in answer.upstream_set.iter().chain(&answer.upstream_add) {
                assert!(token(n), "upstream header name {n:?}");
                assert!(!v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{v:?}");
            }
            for (_, n, v) in &answer.downstream_ops {
                assert!(token(n) && !v.contains(['\r', '\n', '\0']), "{n:?}: {v:?}");
            }
        }
        CheckVerdict::Deny(reply) => {
            assert!((200..=599).contains(&reply.status), "{}", reply.status);
            for (n, _) in &reply.headers {
                assert!(token(n), "reply header name {n:?}");
            }
        }
    }
    let mut req = request();
    answer.apply_to(&mut req);
    let _ = engine.decide_checked(&req, &answer, &InlineKeysOnly, 0);
    let _ = check.grpc_message(Some((message, true)), &Default::default());
}
