//! docs/configuration.md is the configuration reference: each `<!-- fields: NAME -->` table
//! lists the fields of one object. For each, a document with an unknown field at that object
//! must be refused, naming exactly the documented fields as the accepted ones: every
//! documented field is accepted and every accepted field is documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

/// Where each documented object is, as a document with `"PROBE": 0` inside that object.
fn probes() -> BTreeMap<&'static str, String> {
    let ap = |spec: &str| {
        format!(
            r#"{{"policies":[{{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy",
                "metadata":{{"name":"p","namespace":"foo"}},"spec":{spec}}}]}}"#
        )
    };
    let ra = |rule: &str| {
        format!(
            r#"{{"policies":[{{"apiVersion":"security.istio.io/v1","kind":"RequestAuthentication",
                "metadata":{{"name":"r","namespace":"foo"}},"spec":{{"jwtRules":[{rule}]}}}}]}}"#
        )
    };
    let pa = |spec: &str| {
        format!(
            r#"{{"policies":[{{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication",
                "metadata":{{"name":"d","namespace":"foo"}},"spec":{spec}}}]}}"#
        )
    };
    let rule = r#"{"issuer":"https://i","jwks":"{\"keys\":[]}""#;
    BTreeMap::from([
        ("root", r#"{"PROBE":0}"#.to_string()),
        ("workload", r#"{"workload":{"PROBE":0}}"#.to_string()),
        (
            "service",
            r#"{"workload":{"services":[{"name":"a","PROBE":0}]}}"#.to_string(),
        ),
        ("jwks", r#"{"jwks":{"PROBE":0}}"#.to_string()),
        ("jwtCache", r#"{"jwtCache":{"PROBE":0}}"#.to_string()),
        ("decisionLog", r#"{"decisionLog":{"PROBE":0}}"#.to_string()),
        (
            "resource",
            r#"{"policies":[{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication",
                "metadata":{"name":"d"},"spec":{},"PROBE":0}]}"#
                .to_string(),
        ),
        (
            "metadata",
            r#"{"policies":[{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication",
                "metadata":{"name":"d","PROBE":0},"spec":{}}]}"#
                .to_string(),
        ),
        ("selector", pa(r#"{"selector":{"PROBE":0}}"#)),
        ("targetRef", ap(r#"{"targetRef":{"PROBE":0}}"#)),
        ("authorizationPolicy", ap(r#"{"PROBE":0}"#)),
        ("provider", ap(r#"{"provider":{"PROBE":0}}"#)),
        ("rule", ap(r#"{"rules":[{"PROBE":0}]}"#)),
        ("from", ap(r#"{"rules":[{"from":[{"PROBE":0}]}]}"#)),
        ("to", ap(r#"{"rules":[{"to":[{"PROBE":0}]}]}"#)),
        (
            "source",
            ap(r#"{"rules":[{"from":[{"source":{"PROBE":0}}]}]}"#),
        ),
        (
            "operation",
            ap(r#"{"rules":[{"to":[{"operation":{"PROBE":0}}]}]}"#),
        ),
        (
            "condition",
            ap(r#"{"rules":[{"when":[{"key":"source.ip","PROBE":0}]}]}"#),
        ),
        (
            "requestAuthentication",
            r#"{"policies":[{"apiVersion":"security.istio.io/v1","kind":"RequestAuthentication",
                "metadata":{"name":"r"},"spec":{"PROBE":0}}]}"#
                .to_string(),
        ),
        ("jwtRule", ra(&format!(r#"{rule},"PROBE":0}}"#))),
        (
            "fromHeader",
            ra(&format!(
                r#"{rule},"fromHeaders":[{{"name":"x","PROBE":0}}]}}"#
            )),
        ),
        (
            "claimToHeader",
            ra(&format!(
                r#"{rule},"outputClaimToHeaders":[{{"header":"x","claim":"c","PROBE":0}}]}}"#
            )),
        ),
        (
            "envoyExtAuthzHttp",
            r#"{"extensionProviders":[{"name":"a","envoyExtAuthzHttp":{"service":"s","port":1,"PROBE":0}}]}"#
                .to_string(),
        ),
        (
            "envoyExtAuthzGrpc",
            r#"{"extensionProviders":[{"name":"a","envoyExtAuthzGrpc":{"service":"s","port":1,"PROBE":0}}]}"#
                .to_string(),
        ),
        (
            "includeRequestBodyInCheck",
            r#"{"extensionProviders":[{"name":"a","envoyExtAuthzHttp":{"service":"s","port":1,
                "includeRequestBodyInCheck":{"PROBE":0}}}]}"#
                .to_string(),
        ),
        ("peerAuthentication", pa(r#"{"PROBE":0}"#)),
        ("mtls", pa(r#"{"mtls":{"PROBE":0}}"#)),
    ])
}

/// The documented fields per `<!-- fields: NAME -->` table.
fn documented() -> BTreeMap<String, Vec<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("<!-- fields: ")
            .and_then(|r| r.strip_suffix(" -->"))
        {
            assert!(
                out.insert(name.to_string(), Vec::new()).is_none(),
                "{name} twice"
            );
            current = Some(name.to_string());
        } else if let Some(name) = &current {
            if let Some(field) = line
                .strip_prefix("| `")
                .and_then(|r| r.split_once('`'))
                .map(|(f, _)| f)
            {
                out.get_mut(name).unwrap().push(field.to_string());
            } else if !line.starts_with('|') {
                current = None;
            }
        }
    }
    out
}

#[test]
fn the_reference_lists_exactly_the_accepted_fields() {
    let docs = documented();
    let probes = probes();
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        probes.keys().collect::<Vec<_>>(),
        "every documented table has a probe and every probe a table"
    );
    let mut mismatches = Vec::new();
    for (name, doc) in &probes {
        let json = doc.replace("\"PROBE\"", "\"zzzUnknownField\"");
        let err = match meshguard_engine::config::parse(&json) {
            Ok(_) => panic!("{name}: an unknown field was accepted: {json}"),
            Err(e) => e,
        };
        assert!(
            err.path.ends_with("zzzUnknownField") && err.message.starts_with("unknown field"),
            "{name}: the probe did not reach its object: {err}"
        );
        let mut accepted = err.known_fields.clone();
        let mut listed = docs[*name].clone();
        accepted.sort();
        listed.sort();
        if accepted != listed {
            mismatches.push(format!(
                "{name}: accepted {accepted:?}, documented {listed:?}"
            ));
        }
        // Each documented field is also accepted by itself (as a field, whatever its value).
        for field in &docs[*name] {
            let with = doc.replace("\"PROBE\":0", &format!("\"{field}\":null"));
            if let Err(e) = meshguard_engine::config::parse(&with) {
                assert!(
                    !e.message.starts_with("unknown field"),
                    "{name}.{field}: {e}"
                );
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
