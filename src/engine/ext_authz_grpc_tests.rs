use super::*;
use crate::config::providers::{self, ProviderKind};
use crate::ext_authz::CheckVerdict;
use crate::proto::{Reader, Value};
use serde_json::json;
use std::collections::BTreeMap;

fn provider(extra: serde_json::Value) -> GrpcProvider {
    let mut g = json!({ "service": "authz.foo.svc.cluster.local", "port": 9000 });
    if let (Some(h), Some(e)) = (g.as_object_mut(), extra.as_object()) {
        h.extend(e.clone());
    }
    let list = [json!({ "name": "authz", "envoyExtAuthzGrpc": g })];
    let mut parsed = providers::parse(&list, "p", &BTreeMap::new()).unwrap();
    match parsed.remove(0).kind {
        ProviderKind::Grpc(g) => g,
        other => panic!("{other:?}"),
    }
}

fn req() -> RequestAttributes {
    RequestAttributes {
        method: "POST".into(),
        path: "/api/x?b=2&a=1&b=3".into(),
        host: "app.example".into(),
        scheme: "http".into(),
        headers: vec![
            ("authorization".into(), "Bearer t".into()),
            ("x-ext-authz".into(), "allow".into()),
            ("x-ext-authz".into(), "again".into()),
            ("x-envoy-auth-partial-body".into(), "forged".into()),
            ("x-keep".into(), "1".into()),
        ],
        direct_remote: Some("10.1.2.3:5555".parse().unwrap()),
        destination: Some("127.0.0.1:8080".parse().unwrap()),
        ..Default::default()
    }
}

fn check(p: &GrpcProvider) -> CheckRequest {
    CheckRequest::new_grpc(0, "authz", "foo/ext", p, &req())
}

/// Field `path` of nested messages, e.g. `[1, 4, 2]` = attributes.request.http.
fn sub<'a>(buf: &'a [u8], path: &[u32]) -> Vec<&'a [u8]> {
    let Some((first, rest)) = path.split_first() else {
        return vec![buf];
    };
    let mut out = Vec::new();
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field().unwrap() {
        if f == *first {
            if let Value::Bytes(b) = v {
                out.extend(sub(b, rest));
            }
        }
    }
    out
}

fn string_field(buf: &[u8], field: u32) -> String {
    sub(buf, &[field])
        .first()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .unwrap_or_default()
}

fn varint_field(buf: &[u8], field: u32) -> u64 {
    let mut r = Reader::new(buf);
    while let Some((f, v)) = r.next_field().unwrap() {
        if f == field {
            return v.varint().unwrap();
        }
    }
    0
}

fn header_map(http: &[u8]) -> BTreeMap<String, String> {
    sub(http, &[3])
        .into_iter()
        .map(|e| (string_field(e, 1), string_field(e, 2)))
        .collect()
}

#[test]
fn check_request_carries_what_envoy_sends() {
    let p = provider(json!({}));
    let c = check(&p);
    let g = c.grpc.as_ref().unwrap();
    // GrpcService.envoy_grpc { cluster_name, authority }.
    let eg = sub(&g.service, &[1])[0];
    assert_eq!(
        string_field(eg, 1),
        "outbound|9000||authz.foo.svc.cluster.local"
    );
    assert_eq!(string_field(eg, 2), "authz.foo.svc.cluster.local");
    let env = CallEnv {
        now_ms: 1_700_000_000_123,
        stream_id: 42,
        protocol: "HTTP/1.1",
        received: 0,
    };
    let msg = c.grpc_message(None, &env);
    let http = sub(&msg, &[1, 4, 2])[0];
    assert_eq!(string_field(http, 1), "42");
    assert_eq!(string_field(http, 2), "POST");
    assert_eq!(string_field(http, 4), "/api/x?b=2&a=1&b=3");
    assert_eq!(string_field(http, 5), "app.example");
    assert_eq!(string_field(http, 6), "http");
    assert_eq!(string_field(http, 10), "HTTP/1.1");
    assert_eq!(varint_field(http, 9), 0);
    let h = header_map(http);
    assert_eq!(h[":authority"], "app.example");
    assert_eq!(h[":method"], "POST");
    assert_eq!(h["x-ext-authz"], "allow,again");
    assert_eq!(h["authorization"], "Bearer t");
    assert!(!h.contains_key("x-envoy-auth-partial-body"));
    assert!(sub(http, &[11]).is_empty());
    let time = sub(&msg, &[1, 4, 1])[0];
    assert_eq!(
        (varint_field(time, 1), varint_field(time, 2)),
        (1_700_000_000, 123_000_000)
    );
    let src = sub(&msg, &[1, 1, 1, 1])[0];
    assert_eq!(
        (string_field(src, 2), varint_field(src, 3)),
        ("10.1.2.3".into(), 5555)
    );
    let dst = sub(&msg, &[1, 2, 1, 1])[0];
    assert_eq!(varint_field(dst, 3), 8080);
    // Plaintext: no principal. mTLS: the first URI SAN, else the subject.
    assert_eq!(string_field(sub(&msg, &[1, 1])[0], 4), "");
    let mut tls = req();
    tls.connection.mtls = true;
    tls.connection.peer_subject = Some("CN=client".into());
    let principal = |r: &RequestAttributes| {
        let m = CheckRequest::new_grpc(0, "authz", "foo/ext", &p, r).grpc_message(None, &env);
        string_field(sub(&m, &[1, 1])[0], 4)
    };
    assert_eq!(principal(&tls), "CN=client");
    tls.connection.peer_uri_sans = vec!["spiffe://td/ns/a/sa/b".into(), "spiffe://x".into()];
    assert_eq!(principal(&tls), "spiffe://td/ns/a/sa/b");

    let env = CallEnv { received: 5, ..env };
    let with_body = c.grpc_message(Some((b"hello", true)), &env);
    let http = sub(&with_body, &[1, 4, 2])[0];
    assert_eq!(string_field(http, 11), "hello");
    assert_eq!(header_map(http)["x-envoy-auth-partial-body"], "true");
    assert_eq!(varint_field(http, 9), 5);
    let packed = provider(json!({ "includeRequestBodyInCheck": { "packAsBytes": true } }));
    let m = check(&packed).grpc_message(Some((b"\xff\x00", false)), &env);
    let http = sub(&m, &[1, 4, 2])[0];
    assert_eq!(sub(http, &[12]), [b"\xff\x00".as_slice()]);
    assert!(sub(http, &[11]).is_empty());
}

fn hv(w: &mut Writer, field: u32, key: &str, value: &str, append: Option<bool>, action: u64) {
    w.message(field, |o| {
        o.message(1, |h| {
            h.string(1, key).string(2, value);
        });
        if let Some(a) = append {
            o.message(2, |b| {
                b.bool(1, a);
            });
        }
        o.varint(3, action);
    });
}

fn ok_response(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(1, |_| {});
    w.message(3, f);
    w.into_bytes()
}

fn denied_response(code: i32, f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    w.message(1, |s| {
        s.varint(1, code as i64 as u64).string(2, "no");
    });
    w.message(2, f);
    w.into_bytes()
}

#[test]
fn allowed_answers_change_the_upstream_request_as_envoy_does() {
    let p = provider(json!({}));
    let c = check(&p);
    let msg = ok_response(|o| {
        hv(o, 2, "x-keep", "appended", Some(true), 0); // after every set
        hv(o, 2, "x-absent", "appended", Some(true), 0); // nothing: absent
        hv(o, 2, "X-User", "alice", None, 0); // set
        hv(o, 2, "x-ext-authz", "set", None, 0); // both values go
        hv(o, 2, "x-keep", "set", None, 3); // append_action plays no part
        hv(o, 2, "x-new", "yes", None, 1);
        o.string(5, "authorization")
            .string(5, ":path")
            .string(5, "host");
        o.message(7, |q| {
            q.string(1, "c").string(2, "9");
        });
        o.string(8, "b");
        hv(o, 6, "x-down-set", "2", Some(false), 0);
        hv(o, 6, "x-down", "1", None, 0);
    });
    let a = answer(&p, &c, Some(0), &msg);
    assert_eq!(a.verdict, CheckVerdict::Allow, "{}", a.reason);
    let mut r = req();
    a.apply_to(&mut r);
    assert_eq!(r.header("x-user"), Some("alice"));
    assert_eq!(r.header_values("x-ext-authz").collect::<Vec<_>>(), ["set"]);
    assert_eq!(r.header("x-keep"), Some("set,appended"));
    assert_eq!(r.header("x-absent"), None);
    assert_eq!(r.header("x-new"), Some("yes"));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.path, "/api/x?a=1&c=9");
    assert_eq!(
        a.upstream_set,
        [(":path".to_string(), "/api/x?a=1&c=9".to_string())]
    );
    assert_eq!(
        a.downstream_ops,
        [
            (HeaderAction::Add, "x-down".into(), "1".into()),
            (HeaderAction::Set, "x-down-set".into(), "2".into())
        ]
    );
    // Nothing asked: allowed, unchanged.
    let mut plain = Writer::new();
    plain.message(1, |_| {});
    let a = answer(&p, &c, Some(0), &plain.into_bytes());
    assert_eq!(a.verdict, CheckVerdict::Allow);
    assert!(a.upstream_remove.is_empty() && a.upstream_set.is_empty());
    // Removing every query parameter drops the `?`.
    assert_eq!(rewrite_query("/p?a=1", &[], &["a".into()]), "/p");
    assert_eq!(rewrite_query("/p?x&a=1", &[], &[]), "/p?a=1&x=");
    assert_eq!(
        rewrite_query("/p?z=1&b=2&a=3&b=1&z=0&c", &[], &[]),
        "/p?a=3&b=2&b=1&c=&z=1&z=0"
    );
    // A hostile query: 30,000 parameters sort in O(n log n).
    let long: String = (0..30_000).map(|i| format!("k{}=v&", 30_000 - i)).collect();
    let started = std::time::Instant::now();
    let out = rewrite_query(&format!("/p?{long}"), &[("k1".into(), "x".into())], &[]);
    assert!(out.starts_with("/p?k1=x&k10=v&k100=v&k1000=v&k10000=v&k10001=v"));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn denied_answers_carry_status_headers_body() {
    let p = provider(json!({}));
    let c = check(&p);
    let msg = denied_response(7, |d| {
        d.message(1, |s| {
            s.varint(1, 302);
        });
        hv(d, 2, "location", "https://login", None, 0);
        hv(d, 2, "set-cookie", "a=1", None, 0);
        hv(d, 2, "set-cookie", "b=2", Some(true), 0);
        d.string(3, "go away");
    });
    let CheckVerdict::Deny(reply) = answer(&p, &c, Some(0), &msg).verdict else {
        panic!("denied")
    };
    assert_eq!((reply.status, reply.body.as_str()), (302, "go away"));
    assert_eq!(reply.details, "ext_authz_denied");
    // `append: true` is dropped from a denial, as Envoy 1.40 does.
    assert_eq!(
        reply.headers,
        [
            ("location".to_string(), "https://login".to_string()),
            ("set-cookie".into(), "a=1".into()),
        ]
    );
    // A non-OK status with no denied_response (or even an ok_response): 403, empty body.
    let mut w = Writer::new();
    w.message(1, |s| {
        s.varint(1, 16);
    });
    w.message(3, |o| hv(o, 2, "x-user", "alice", None, 0));
    let CheckVerdict::Deny(reply) = answer(&p, &c, Some(0), &w.into_bytes()).verdict else {
        panic!("denied")
    };
    assert_eq!((reply.status, reply.body.as_str()), (403, ""));
    // A negative status code is not OK either.
    let CheckVerdict::Deny(_) = answer(&p, &c, Some(0), &denied_response(-1, |_| {})).verdict
    else {
        panic!("denied")
    };
}

fn is_error(a: &CheckAnswer, status: u16) -> bool {
    matches!(&a.verdict, CheckVerdict::Deny(r) if r.status == status && r.details == "ext_authz_error" && r.body.is_empty())
}

#[test]
fn errors_follow_status_on_error_and_fail_open() {
    let p = provider(json!({ "statusOnError": "503" }));
    let open = provider(json!({ "failOpen": true }));
    let c = check(&p);
    let good = ok_response(|o| hv(o, 2, "x-user", "alice", None, 0));
    let bad_action = ok_response(|o| hv(o, 6, "x-user", "alice", None, 9));
    let cases: Vec<(Option<u32>, Vec<u8>)> = vec![
        (None, Vec::new()),
        (Some(14), Vec::new()),  // UNAVAILABLE
        (Some(7), good.clone()), // PERMISSION_DENIED as the call's status
        (Some(4), Vec::new()),   // DEADLINE_EXCEEDED
        (Some(0), b"\xff\xff\xff garbage".to_vec()),
        (Some(0), good[..good.len() - 3].to_vec()),
        (Some(0), bad_action),
        (Some(0), ok_response(|o| hv(o, 2, "bad name", "v", None, 0))),
        (Some(0), ok_response(|o| hv(o, 2, "x-v", "a\r\nb", None, 0))),
        (Some(0), ok_response(|o| hv(o, 2, "", "v", None, 0))),
        (
            Some(0),
            ok_response(|o| {
                o.message(7, |q| {
                    q.string(1, "a\nb").string(2, "1");
                });
            }),
        ),
        (
            Some(0),
            ok_response(|o| {
                o.message(7, |q| {
                    q.string(1, "a").string(2, "x y");
                });
            }),
        ),
        (
            Some(0),
            denied_response(7, |d| {
                d.message(1, |s| {
                    s.varint(1, 1000);
                });
            }),
        ),
        (Some(0), {
            // A string field that is not UTF-8.
            let mut w = Writer::new();
            w.message(1, |s| {
                s.varint(1, 7);
            });
            w.message(2, |d| {
                d.bytes(3, b"\xff\xfe");
            });
            w.into_bytes()
        }),
    ];
    for (status, msg) in &cases {
        let a = answer(&p, &c, *status, msg);
        assert!(is_error(&a, 503), "{status:?} {msg:?}: {a:?}");
        let a = answer(&open, &c, *status, msg);
        assert_eq!(a.verdict, CheckVerdict::Allow, "{status:?}");
        assert!(a.upstream_add.is_empty() && a.reason.contains("failOpen"));
    }
    assert!(answer(&p, &c, Some(0), &good).verdict == CheckVerdict::Allow);
}

#[test]
fn hostile_responses_never_panic() {
    let p = provider(json!({}));
    let c = check(&p);
    // Huge fields decode (no length is trusted before it is checked against the input).
    let huge = "h".repeat(4 << 20);
    let msg = ok_response(|o| hv(o, 2, "x-huge", &huge, None, 0));
    let a = answer(&p, &c, Some(0), &msg);
    assert_eq!(a.upstream_add, [("x-huge".to_string(), huge.clone())]);
    let msg = denied_response(7, |d| {
        d.string(3, &huge);
    });
    let CheckVerdict::Deny(reply) = answer(&p, &c, Some(0), &msg).verdict else {
        panic!("denied")
    };
    assert_eq!(reply.body.len(), 4 << 20);
    // Every truncation of a rich answer, and random bytes, give an answer.
    let rich = ok_response(|o| {
        hv(o, 2, "x-a", "1", Some(true), 0);
        o.string(5, "x-b");
        o.message(7, |q| {
            q.string(1, "k").string(2, "v");
        });
        hv(o, 6, "x-c", "3", None, 2);
    });
    for i in 0..rich.len() {
        let _ = answer(&p, &c, Some(0), &rich[..i]);
    }
    let mut x: u64 = 7;
    for n in 0..3000 {
        let junk: Vec<u8> = (0..(n % 97))
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 33) as u8
            })
            .collect();
        let _ = answer(&p, &c, Some(0), &junk);
        let mut flipped = rich.clone();
        let i = (x as usize) % flipped.len();
        flipped[i] ^= (x >> 40) as u8 | 1;
        let _ = answer(&p, &c, Some(0), &flipped);
    }
}

#[test]
fn oneof_last_member_wins_and_repeats_merge() {
    let p = provider(json!({}));
    let c = check(&p);
    let mut w = Writer::new();
    w.message(1, |s| {
        s.varint(1, 7);
    });
    w.message(3, |o| hv(o, 2, "x-user", "alice", None, 0));
    w.message(2, |d| {
        d.string(3, "first");
    });
    w.message(2, |d| {
        d.message(1, |s| {
            s.varint(1, 401);
        });
    });
    let CheckVerdict::Deny(reply) = answer(&p, &c, Some(0), &w.into_bytes()).verdict else {
        panic!("denied")
    };
    assert_eq!((reply.status, reply.body.as_str()), (401, "first"));
}
