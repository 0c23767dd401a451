//! How the engine reached a decision, step by step: which stage ran, which policy and rule
//! matched, and for every rule that did not, the first clause that failed. `meshguard
//! explain` prints it; the decision log can carry it. Built only on request
//! ([`crate::Engine::decide_traced`]): the request path of [`crate::Engine::decide`] never
//! pays for it.

use crate::istio::authorization_policy::Action;
use std::fmt;

/// The steps of one decision, in the order the engine ran them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// PeerAuthentication: the mode in force, who set it, and the connection.
    pub peer: Option<PeerStep>,
    /// RequestAuthentication: one line (`principal iss/sub`, `no token`, `refused: ...`).
    /// None when the peer check refused first.
    pub authn: Option<String>,
    /// CUSTOM (ext_authz): whether and where the request was sent, and the answer. None
    /// when no CUSTOM rule matched.
    pub ext_authz: Option<String>,
    /// Every applicable AuthorizationPolicy, in Envoy's filter order (AUDIT, DENY, ALLOW,
    /// then the dry-run engines); empty when an earlier stage refused.
    pub policies: Vec<PolicyTrace>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerStep {
    pub mode: &'static str,
    /// The PeerAuthentication that set the mode; None = the mesh default (PERMISSIVE).
    pub policy: Option<String>,
    /// `mTLS as spiffe://...`, `plaintext`, ...
    pub connection: String,
    /// Why the request was refused here, if it was.
    pub refused: Option<String>,
}

/// One policy and its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyTrace {
    /// `namespace/name`.
    pub name: String,
    pub action: Action,
    pub dry_run: bool,
    /// False when Envoy would not run it (the ALLOW filter after an enforced DENY).
    pub evaluated: bool,
    pub rules: Vec<RuleTrace>,
}

impl PolicyTrace {
    /// The first rule that matched (the one the decision names).
    pub fn matched_rule(&self) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| r.mismatch.is_none())
            .map(|r| r.index)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleTrace {
    /// Index in the policy's `rules`.
    pub index: usize,
    /// None: the rule matches. Otherwise the first failing clause, e.g.
    /// `to: path "/health" does not match`.
    pub mismatch: Option<String>,
}

impl fmt::Display for Trace {
    /// One fact per line, for a person.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.peer {
            writeln!(
                f,
                "peer:      mTLS mode {} ({}), connection {}",
                p.mode,
                p.policy.as_deref().unwrap_or("default"),
                p.connection
            )?;
            if let Some(r) = &p.refused {
                writeln!(f, "           refused: {r}")?;
            }
        }
        if let Some(x) = &self.ext_authz {
            writeln!(f, "ext_authz: {x}")?;
        }
        if let Some(a) = &self.authn {
            writeln!(f, "principal: {a}")?;
        }
        for p in &self.policies {
            let kind = if p.dry_run { " (dry-run)" } else { "" };
            let head = format!("{} {}{kind}", p.action, p.name);
            if !p.evaluated {
                writeln!(
                    f,
                    "policy:    {head}: not evaluated (an enforced DENY matched)"
                )?;
                continue;
            }
            match p.matched_rule() {
                Some(i) => writeln!(f, "policy:    {head}: rule[{i}] matches")?,
                None if p.rules.is_empty() => {
                    writeln!(f, "policy:    {head}: no rules, never matches")?
                }
                None => writeln!(f, "policy:    {head}: no rule matches")?,
            }
            for r in &p.rules {
                if let Some(why) = &r.mismatch {
                    writeln!(f, "           rule[{}]: {why}", r.index)?;
                }
            }
        }
        Ok(())
    }
}
