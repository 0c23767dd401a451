//! The decision log: one JSON line per denial, AUDIT mark and matching dry-run policy, and a sample
//! of allowed requests when asked (`decisionLog`). A line names what decided and for whom:
//! policy, rule, action, Envoy's reason code, peer and request principal, method, host,
//! path without the query, request id. Never a token; claim values only those configured.

use crate::attrs::RequestAttributes;
use crate::config::DecisionLogSettings;
use crate::decision::{Decision, Stage, Verdict};
use crate::json_string::{push_json_string, Escapes};
use std::cell::Cell;

#[derive(Debug, Default)]
pub(crate) struct DecisionLog {
    settings: DecisionLogSettings,
    /// Log every `allow_every`-th allowed request (0: none).
    allow_every: u64,
    allowed_seen: Cell<u64>,
}

impl DecisionLog {
    pub(crate) fn new(settings: DecisionLogSettings) -> Self {
        let rate = settings.allow_sample_rate;
        let allow_every = if rate > 0.0 {
            (1.0 / rate).round().max(1.0) as u64
        } else {
            0
        };
        DecisionLog {
            settings,
            allow_every,
            allowed_seen: Cell::new(0),
        }
    }

    /// The line for this decision, or None when it is not logged.
    pub(crate) fn record(&self, d: &Decision, req: &RequestAttributes) -> Option<String> {
        if !self.settings.enabled {
            return None;
        }
        // A dry-run result is news when a dry-run policy matched (it names the policy that
        // would have decided); "no dry-run policy matched" is every other request.
        let notable =
            !d.allowed() || d.audit.is_some() || d.dry_run.iter().any(|r| r.rule.is_some());
        if !notable {
            if self.allow_every == 0 {
                return None;
            }
            let n = self.allowed_seen.get() + 1;
            self.allowed_seen.set(n);
            if n % self.allow_every != 0 {
                return None;
            }
        }
        Some(self.line(d, req))
    }

    /// The line, written by hand (a `serde_json::Value` and its serializer would add tens of
    /// KiB to the wasm module for one log line). Keys in a fixed order.
    fn line(&self, d: &Decision, req: &RequestAttributes) -> String {
        let (decision, status, code) = match &d.verdict {
            Verdict::Allow => ("allow", 200, "allowed"),
            Verdict::Deny(r) => ("deny", r.status, r.details.as_str()),
        };
        let stage = match d.stage {
            Stage::Peer => "peer",
            Stage::ExtAuthz => "ext_authz",
            Stage::Authn => "authn",
            Stage::Authz => "authz",
        };
        // The deciding policy's action: a denying policy at authz is a DENY policy, an
        // allowing one an ALLOW policy; the peer stage's is the STRICT PeerAuthentication.
        let action = match (d.stage, &d.policy, d.allowed()) {
            (Stage::Authz, Some(_), false) => Some("DENY"),
            (Stage::Authz, Some(_), true) => Some("ALLOW"),
            (Stage::Peer, Some(_), _) => Some("STRICT"),
            (Stage::ExtAuthz, _, _) => Some("CUSTOM"),
            _ => None,
        };
        let principal = d.request_principal();
        let mut w = JsonObject::new();
        w.str("decision", Some(decision));
        w.num("status", Some(u64::from(status)));
        w.str("code", Some(code));
        w.str("stage", Some(stage));
        w.str("policy", d.policy.as_deref());
        w.num("rule", d.rule.map(|r| r as u64));
        w.str("action", action);
        w.str("reason", Some(&d.reason));
        w.str("peer", req.peer_principal());
        w.str("principal", principal.as_deref());
        w.str("method", Some(&req.method));
        w.str("host", Some(&req.host));
        w.str("path", Some(req.path_only()));
        w.str("request_id", req.header("x-request-id"));
        if let Some(a) = &d.audit {
            w.str("audit", Some(a));
        }
        let matched: Vec<_> = d.dry_run.iter().filter(|r| r.rule.is_some()).collect();
        if !matched.is_empty() {
            w.key("dry_run");
            w.out.push('[');
            for (i, r) in matched.iter().enumerate() {
                if i > 0 {
                    w.out.push(',');
                }
                let mut o = JsonObject::new();
                o.str("policy", Some(&r.policy));
                o.str("action", Some(r.action.as_str()));
                o.num("rule", r.rule.map(|x| x as u64));
                o.str(
                    "result",
                    Some(if r.would_allow {
                        "would_allow"
                    } else {
                        "would_deny"
                    }),
                );
                w.out.push_str(&o.finish());
            }
            w.out.push(']');
        }
        if let (Some(jwt), false) = (&d.jwt, self.settings.claims.is_empty()) {
            let mut o = JsonObject::new();
            for c in &self.settings.claims {
                if let Some(v) = jwt.claims.get(c) {
                    o.key(c);
                    o.out.push_str(&v.to_string());
                }
            }
            w.key("claims");
            w.out.push_str(&o.finish());
        }
        w.finish()
    }
}

/// A JSON object written in order.
struct JsonObject {
    out: String,
    first: bool,
}

impl JsonObject {
    fn new() -> Self {
        JsonObject {
            out: String::from("{"),
            first: true,
        }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        push_json_string(&mut self.out, k, Escapes::Json);
        self.out.push(':');
    }

    fn str(&mut self, k: &str, v: Option<&str>) {
        self.key(k);
        match v {
            Some(v) => push_json_string(&mut self.out, v, Escapes::Json),
            None => self.out.push_str("null"),
        }
    }

    fn num(&mut self, k: &str, v: Option<u64>) {
        self.key(k);
        match v {
            Some(v) => self.out.push_str(&v.to_string()),
            None => self.out.push_str("null"),
        }
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}
