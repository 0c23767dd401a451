//! The decision log: one JSON line per denial, AUDIT mark and matching dry-run policy, and a sample
//! of allowed requests when asked (`decisionLog`). A line names what decided and for whom:
//! policy, rule, action, Envoy's reason code, peer and request principal, method, host,
//! path without the query, request id. Never a token; claim values only those configured.

use crate::attrs::RequestAttributes;
use crate::config::DecisionLogSettings;
use crate::decision::{Decision, Stage, Verdict};
use serde_json::{json, Map, Value};
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
        Some(self.line(d, req).to_string())
    }

    fn line(&self, d: &Decision, req: &RequestAttributes) -> Value {
        let (decision, status, code) = match &d.verdict {
            Verdict::Allow => ("allow", 200, "allowed".to_string()),
            Verdict::Deny(r) => ("deny", r.status, r.details.clone()),
        };
        let stage = match d.stage {
            Stage::Peer => "peer",
            Stage::Authn => "authn",
            Stage::Authz => "authz",
        };
        // The deciding policy's action: a denying policy at authz is a DENY policy, an
        // allowing one an ALLOW policy; the peer stage's is the STRICT PeerAuthentication.
        let action = match (d.stage, &d.policy, d.allowed()) {
            (Stage::Authz, Some(_), false) => Some("DENY"),
            (Stage::Authz, Some(_), true) => Some("ALLOW"),
            (Stage::Peer, Some(_), _) => Some("STRICT"),
            _ => None,
        };
        let mut line = json!({
            "decision": decision,
            "status": status,
            "code": code,
            "stage": stage,
            "policy": d.policy,
            "rule": d.rule,
            "action": action,
            "reason": d.reason,
            "peer": req.peer_principal(),
            "principal": d.request_principal(),
            "method": req.method,
            "host": req.host,
            "path": req.path_only(),
            "request_id": req.header("x-request-id"),
        });
        let Some(obj) = line.as_object_mut() else {
            return line;
        };
        if let Some(a) = &d.audit {
            obj.insert("audit".into(), Value::from(a.as_str()));
        }
        if d.dry_run.iter().any(|r| r.rule.is_some()) {
            let dry: Vec<Value> = d
                .dry_run
                .iter()
                .filter(|r| r.rule.is_some())
                .map(|r| {
                    json!({
                        "policy": r.policy,
                        "action": r.action.as_str(),
                        "rule": r.rule,
                        "result": if r.would_allow { "would_allow" } else { "would_deny" },
                    })
                })
                .collect();
            obj.insert("dry_run".into(), Value::from(dry));
        }
        if let (Some(jwt), false) = (&d.jwt, self.settings.claims.is_empty()) {
            let claims: Map<String, Value> = self
                .settings
                .claims
                .iter()
                .filter_map(|c| Some((c.clone(), jwt.claims.get(c)?.clone())))
                .collect();
            obj.insert("claims".into(), Value::Object(claims));
        }
        line
    }
}
