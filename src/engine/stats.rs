//! The engine's counters, with Prometheus labels. The engine decides what to count (it
//! alone knows which policy, rule, issuer and status decided); the filter only adds the
//! pending counts to Envoy's stats, in a batch, off the request path.
//!
//! Every label set is known from the configuration when it compiles: a label value never
//! comes from the request (an unknown issuer is `issuer="unknown"`), so cardinality is
//! bounded by the config. Labels travel in the stat name with Istio's tag convention
//! (`policy=.=foo/deny-admin;.;action=.=DENY;.;result=.=denied;.;meshguard_policy_total`),
//! which `stats_config.stats_tags` in every shipped Envoy config turns into real labels.

use crate::fast_hash::FastBuildHasher;
use crate::istio::authorization_policy::Action;
use crate::jwt::JwtStatus;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Maps keyed by policy name (from the config; looked up on the request path).
type ByName<V> = HashMap<String, V, FastBuildHasher>;

/// The tag names the shipped configs' `stats_tags` extract, each with its regex.
pub const TAGS: [&str; 6] = ["policy", "action", "result", "issuer", "status", "jwks"];

/// An Envoy stat name carrying `tags` by Istio's convention, e.g.
/// `result=.=hit;.;meshguard_jwt_cache_total`. `;` in a value (never in a Kubernetes name,
/// possible in an issuer URL) would end the tag early, so it becomes `_`.
pub fn series_name(family: &str, tags: &[(&str, &str)]) -> String {
    let mut name = String::new();
    for (k, v) in tags {
        name.push_str(k);
        name.push_str("=.=");
        name.push_str(&v.replace(';', "_"));
        name.push_str(";.;");
    }
    name.push_str(family);
    name
}

fn action_label(a: Action) -> &'static str {
    a.as_str()
}

/// Pending counts of one compiled configuration (one per VM: interior mutability, no
/// locking, like the token cache).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    names: Vec<Box<str>>,
    counts: RefCell<Vec<u64>>,
    /// Enforced DENY / ALLOW policy -> its series when it decides.
    deciding: ByName<u32>,
    /// `policy="none"`: no ALLOW policy applies (allowed) / none matched (denied).
    none_allowed: u32,
    none_denied: u32,
    audit: ByName<u32>,
    /// CUSTOM policy -> [allowed, denied] by its external authorizer (or by its own rules
    /// when the provider is unusable).
    custom: ByName<[u32; 2]>,
    /// Dry-run policy -> [would allow, would deny].
    dry_run: ByName<[u32; 2]>,
    /// Per dry-run action, when no dry-run policy of that action matched.
    dry_run_none: Vec<(Action, [u32; 2])>,
    /// Configured issuers; a token's series is `jwt_base + issuer * statuses + code`.
    issuers: Vec<String>,
    jwt_base: u32,
    cache_hit: u32,
    cache_miss: u32,
    /// Cache lookups already counted (the authenticator counts them cumulatively).
    cache_seen: Cell<(u64, u64)>,
    /// PeerAuthentication that refused (or `default`) -> series.
    peer: ByName<u32>,
}

/// Which issuer label a token gets.
pub(crate) enum IssuerLabel<'a> {
    /// A configured issuer (its `iss`).
    Known(&'a str),
    /// A token whose issuer no rule names, or that could not be parsed.
    Unknown,
    /// No token at all.
    None,
}

impl Stats {
    pub(crate) fn new(
        policies: &[(&str, Action, bool)],
        dry_run_actions: &[Action],
        issuers: Vec<String>,
        peer_policies: &[String],
    ) -> Self {
        let mut s = Stats::default();
        let add = |names: &mut Vec<Box<str>>, family: &str, tags: &[(&str, &str)]| {
            names.push(series_name(family, tags).into());
            (names.len() - 1) as u32
        };
        let mut names = Vec::new();
        for &(name, action, dry) in policies {
            if dry {
                let allow = add(
                    &mut names,
                    "meshguard_dry_run_total",
                    &[
                        ("policy", name),
                        ("action", action_label(action)),
                        ("result", "allowed"),
                    ],
                );
                let deny = add(
                    &mut names,
                    "meshguard_dry_run_total",
                    &[
                        ("policy", name),
                        ("action", action_label(action)),
                        ("result", "denied"),
                    ],
                );
                s.dry_run.insert(name.to_string(), [allow, deny]);
            } else if action == Action::Custom {
                let ids = ["allowed", "denied"].map(|result| {
                    add(
                        &mut names,
                        "meshguard_custom_total",
                        &[("policy", name), ("result", result)],
                    )
                });
                s.custom.insert(name.to_string(), ids);
            } else if action == Action::Audit {
                let id = add(&mut names, "meshguard_audit_total", &[("policy", name)]);
                s.audit.insert(name.to_string(), id);
            } else {
                let result = if action == Action::Deny {
                    "denied"
                } else {
                    "allowed"
                };
                let id = add(
                    &mut names,
                    "meshguard_policy_total",
                    &[
                        ("policy", name),
                        ("action", action_label(action)),
                        ("result", result),
                    ],
                );
                s.deciding.insert(name.to_string(), id);
            }
        }
        let none = |names: &mut Vec<Box<str>>, result| {
            add(
                names,
                "meshguard_policy_total",
                &[("policy", "none"), ("action", "ALLOW"), ("result", result)],
            )
        };
        s.none_allowed = none(&mut names, "allowed");
        s.none_denied = none(&mut names, "denied");
        for &action in dry_run_actions {
            let ids = ["allowed", "denied"].map(|result| {
                add(
                    &mut names,
                    "meshguard_dry_run_total",
                    &[
                        ("policy", "none"),
                        ("action", action_label(action)),
                        ("result", result),
                    ],
                )
            });
            s.dry_run_none.push((action, ids));
        }
        s.jwt_base = names.len() as u32;
        for issuer in issuers
            .iter()
            .map(String::as_str)
            .chain(["unknown", "none"])
        {
            for status in JwtStatus::ALL {
                add(
                    &mut names,
                    "meshguard_jwt_total",
                    &[("issuer", issuer), ("status", status.name())],
                );
            }
        }
        s.issuers = issuers;
        s.cache_hit = add(
            &mut names,
            "meshguard_jwt_cache_total",
            &[("result", "hit")],
        );
        s.cache_miss = add(
            &mut names,
            "meshguard_jwt_cache_total",
            &[("result", "miss")],
        );
        for p in peer_policies.iter().map(String::as_str).chain(["default"]) {
            let id = add(&mut names, "meshguard_peer_denied_total", &[("policy", p)]);
            s.peer.insert(p.to_string(), id);
        }
        s.counts = RefCell::new(vec![0; names.len()]);
        s.names = names;
        s
    }

    fn bump(&self, id: u32) {
        if let Some(c) = self.counts.borrow_mut().get_mut(id as usize) {
            *c += 1;
        }
    }

    /// The deciding policy of an authorization decision (`None`: no policy matched).
    pub(crate) fn authz(&self, policy: Option<&str>, allowed: bool) {
        let id = match policy.and_then(|p| self.deciding.get(p)) {
            Some(&id) => id,
            None if allowed => self.none_allowed,
            None => self.none_denied,
        };
        self.bump(id);
    }

    /// A CUSTOM check's outcome for the policy that sent it.
    pub(crate) fn custom(&self, policy: &str, allowed: bool) {
        if let Some(&[allow, deny]) = self.custom.get(policy) {
            self.bump(if allowed { allow } else { deny });
        }
    }

    pub(crate) fn audit(&self, policy: &str) {
        if let Some(&id) = self.audit.get(policy) {
            self.bump(id);
        }
    }

    /// A dry-run result: `matched` names the policy when one matched.
    pub(crate) fn dry_run(&self, action: Action, matched: Option<&str>, would_allow: bool) {
        let ids = match matched {
            Some(p) => self.dry_run.get(p).copied(),
            None => self
                .dry_run_none
                .iter()
                .find(|(a, _)| *a == action)
                .map(|(_, ids)| *ids),
        };
        if let Some([allow, deny]) = ids {
            self.bump(if would_allow { allow } else { deny });
        }
    }

    /// One request's token outcome.
    pub(crate) fn jwt(&self, issuer: IssuerLabel<'_>, status: JwtStatus) {
        let n = self.issuers.len();
        let row = match issuer {
            IssuerLabel::Known(iss) => self.issuers.iter().position(|i| i == iss).unwrap_or(n),
            IssuerLabel::Unknown => n,
            IssuerLabel::None => n + 1,
        };
        let per_issuer = JwtStatus::ALL.len();
        let id = self.jwt_base as usize + row * per_issuer + status.code() as usize;
        self.bump(id as u32);
    }

    pub(crate) fn peer_denied(&self, policy: Option<&str>) {
        let key = policy.unwrap_or("default");
        if let Some(&id) = self.peer.get(key).or_else(|| self.peer.get("default")) {
            self.bump(id);
        }
    }

    /// Hands every pending count to `add` (stat name, delta) and clears them. `cache` is
    /// the authenticator's cumulative (hits, misses).
    pub(crate) fn drain(&self, cache: (u64, u64), mut add: impl FnMut(&str, u64)) {
        let (seen_hits, seen_misses) = self.cache_seen.replace(cache);
        {
            let mut counts = self.counts.borrow_mut();
            for (id, delta) in [
                (self.cache_hit, cache.0.saturating_sub(seen_hits)),
                (self.cache_miss, cache.1.saturating_sub(seen_misses)),
            ] {
                if let Some(c) = counts.get_mut(id as usize) {
                    *c += delta;
                }
            }
        }
        let mut counts = self.counts.borrow_mut();
        for (name, count) in self.names.iter().zip(counts.iter_mut()) {
            if *count > 0 {
                add(name, *count);
                *count = 0;
            }
        }
    }
}
