//! The policies of one action (or one dry-run shadow engine) with a path index built at
//! config time, so that a request evaluates only the policies that can match its path
//! instead of every policy: 1,000 per-service policies cost about what 10 do.
//!
//! For each policy we derive a necessary condition on the path. When every `to` alternative
//! of every rule has positive `paths` that are all exact (`/a`), prefix (`/a/*`) or a path
//! template with a leading literal (`/a/{*}`: the path starts with `/a/`), the policy can
//! only match a path that equals one of its exact keys or starts with one of its prefix keys.
//! Every other policy (a rule without `to`, an operation without `paths` or with only
//! `notPaths`, a `*x` suffix, `*`) is evaluated for every request.
//!
//! The per-request work is one exact lookup, then one lookup per distinct prefix length
//! (longest first) until a hit: each key's list is precomputed as the union of every key
//! the path then necessarily hits, so the request merges just that list with the
//! always-evaluated one. Candidates are evaluated in config order and the first match wins,
//! which is exactly the linear scan's answer. No allocation per request.

use super::matcher::{PathMatch, StrMatch};
use super::model::{Cond, Ctx, Policy, Rule};
use crate::attrs::Needs;
use crate::fast_hash::FastBuildHasher;
use std::collections::HashMap;

/// A policy's position in its set (config order).
type Id = u32;

/// Above this many precomputed list entries (nested prefixes make the lists overlap) the
/// index is not built and the set is scanned linearly: memory stays bounded for any config.
fn entry_budget(policies: usize) -> usize {
    policies.saturating_mul(64).saturating_add(1 << 16)
}

/// The compiled policies of one action, in config order.
#[derive(Debug, Default)]
pub(crate) struct PolicySet {
    policies: Vec<Policy>,
    /// None when there is nothing to gain (no policy has an indexable path) or the lists
    /// would exceed the budget: then every policy is evaluated.
    index: Option<PathIndex>,
    /// Per policy, the connection facts it reads; and their union over the policies
    /// evaluated for every request (all of them without an index).
    needs: Box<[Needs]>,
    always_needs: Needs,
}

impl PolicySet {
    pub fn new(policies: Vec<Policy>) -> Self {
        let index = PathIndex::build(&policies);
        let needs: Box<[Needs]> = policies.iter().map(Policy::needs).collect();
        let always_needs = match &index {
            Some(ix) => ix
                .always
                .iter()
                .filter_map(|&id| needs.get(usize::try_from(id).ok()?))
                .fold(Needs::default(), |a, &n| a.union(n)),
            None => needs.iter().fold(Needs::default(), |a, &n| a.union(n)),
        };
        PolicySet {
            policies,
            index,
            needs,
            always_needs,
        }
    }

    /// The connection facts evaluating a request on `path` (without query) may read: only
    /// the candidate policies' (the index makes this a lookup, not a scan).
    pub fn needs_for(&self, path: &str) -> Needs {
        let Some(index) = &self.index else {
            return self.always_needs;
        };
        index
            .candidates(path.as_bytes())
            .iter()
            .filter_map(|&id| self.needs.get(usize::try_from(id).ok()?))
            .fold(self.always_needs, |a, &n| a.union(n))
    }

    /// The policies, in evaluation order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The first policy in config order with a matching rule, and that rule.
    pub fn first_match<'p>(&'p self, ctx: &Ctx) -> Option<(&'p Policy, &'p Rule)> {
        let Some(index) = &self.index else {
            return self.first_match_linear(ctx);
        };
        let hits = index.candidates(ctx.path().as_bytes());
        let (mut a, mut b) = (hits.iter().peekable(), index.always.iter().peekable());
        loop {
            // The smaller head of the two ascending lists; an id in both is taken once.
            let id = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x == y => {
                    a.next();
                    b.next();
                    x
                }
                (Some(&&x), Some(&&y)) if x < y => {
                    a.next();
                    x
                }
                (_, Some(&&y)) => {
                    b.next();
                    y
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, None) => return None,
            };
            if let Some(p) = usize::try_from(id).ok().and_then(|i| self.policies.get(i)) {
                if let Some(r) = p.matching_rule(ctx) {
                    return Some((p, r));
                }
            }
        }
    }

    /// Every policy in order: the reference the index must agree with.
    pub fn first_match_linear<'p>(&'p self, ctx: &Ctx) -> Option<(&'p Policy, &'p Rule)> {
        self.policies
            .iter()
            .find_map(|p| p.matching_rule(ctx).map(|r| (p, r)))
    }

    #[cfg(test)]
    pub fn is_indexed(&self) -> bool {
        self.index.is_some()
    }

    /// How many policies a request on `path` evaluates at most.
    #[cfg(test)]
    pub fn candidate_count(&self, path: &str) -> usize {
        match &self.index {
            None => self.policies.len(),
            Some(index) => index.candidates(path.as_bytes()).len() + index.always.len(),
        }
    }
}

/// A necessary condition of one `paths` value.
#[derive(Clone, Copy)]
enum Key<'a> {
    /// The path equals this.
    Exact(&'a str),
    /// The path starts with this.
    Prefix(&'a str),
}

fn path_key(m: &PathMatch) -> Option<Key<'_>> {
    match m {
        PathMatch::Str(StrMatch::Exact(e)) => Some(Key::Exact(e)),
        PathMatch::Str(StrMatch::Prefix(p)) => Some(Key::Prefix(p)),
        PathMatch::Str(StrMatch::Suffix(_) | StrMatch::NonEmpty) => None,
        PathMatch::Template(t) => t.literal_prefix().map(Key::Prefix),
    }
}

/// The keys one of which the path must hit for the policy to match, or None when the policy
/// has no such condition. A policy without rules never matches: no keys, never a candidate.
fn policy_keys(p: &Policy) -> Option<Vec<Key<'_>>> {
    let mut keys = Vec::new();
    for rule in &p.rules {
        // A rule without `to` matches any path.
        if rule.to.is_empty() {
            return None;
        }
        // `to` alternatives are an OR: each one needs its own path condition. Within one, the
        // conditions are an AND, so its positive `paths` alone are necessary.
        for op in rule.to.iter() {
            let paths = op.iter().find_map(|c| match c {
                Cond::Path(f) if !f.any.is_empty() => Some(&f.any),
                _ => None,
            })?;
            for m in paths.iter() {
                keys.push(path_key(m)?);
            }
        }
    }
    Some(keys)
}

type Map<V> = HashMap<Box<[u8]>, V, FastBuildHasher>;

#[derive(Debug)]
struct PathIndex {
    /// Exact path -> every indexed policy that can match that path: those with this exact
    /// key and those with a prefix key that is a prefix of it. Ascending ids.
    exact: Map<Box<[Id]>>,
    /// Prefix key -> every indexed policy with a prefix key that is a prefix of this one
    /// (itself included): what a path whose LONGEST matching prefix key is this one can hit.
    prefix: Map<Box<[Id]>>,
    /// The distinct lengths of the prefix keys, longest first.
    prefix_lens: Box<[usize]>,
    /// Policies without a path condition, evaluated for every request. Ascending ids.
    always: Box<[Id]>,
}

impl PathIndex {
    fn build(policies: &[Policy]) -> Option<Self> {
        let mut exact: Map<Vec<Id>> = Map::default();
        let mut prefix: Map<Vec<Id>> = Map::default();
        let mut always = Vec::new();
        for (i, p) in policies.iter().enumerate() {
            let id = Id::try_from(i).ok()?;
            match policy_keys(p) {
                None => always.push(id),
                Some(keys) => {
                    for key in keys {
                        let (map, k) = match key {
                            Key::Exact(k) => (&mut exact, k),
                            Key::Prefix(k) => (&mut prefix, k),
                        };
                        let ids = map.entry(k.as_bytes().into()).or_default();
                        // Ids arrive in ascending order: a repeat is the last one.
                        if ids.last() != Some(&id) {
                            ids.push(id);
                        }
                    }
                }
            }
        }
        if exact.is_empty() && prefix.is_empty() {
            // Nothing indexed: the linear scan is the same work without the lookups.
            return None;
        }
        let mut prefix_lens: Vec<usize> = prefix.keys().map(|k| k.len()).collect();
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();
        // The ids of every prefix key that `s` starts with, plus `own`.
        let closure = |s: &[u8], own: &[Id]| -> Box<[Id]> {
            let mut ids = own.to_vec();
            for len in &prefix_lens {
                if let Some(more) = s.get(..*len).and_then(|head| prefix.get(head)) {
                    ids.extend_from_slice(more);
                }
            }
            ids.sort_unstable();
            ids.dedup();
            ids.into()
        };
        let exact: Map<Box<[Id]>> = exact
            .iter()
            .map(|(k, own)| (k.clone(), closure(k, own)))
            .collect();
        let prefix_closed: Map<Box<[Id]>> = prefix
            .keys()
            .map(|k| (k.clone(), closure(k, &[])))
            .collect();
        let entries: usize = exact
            .values()
            .chain(prefix_closed.values())
            .map(|l| l.len())
            .sum();
        if entries > entry_budget(policies.len()) {
            return None;
        }
        Some(PathIndex {
            exact,
            prefix: prefix_closed,
            prefix_lens: prefix_lens.into(),
            always: always.into(),
        })
    }

    /// The indexed policies `path` can match, ascending.
    fn candidates(&self, path: &[u8]) -> &[Id] {
        if let Some(ids) = self.exact.get(path) {
            return ids;
        }
        for len in self.prefix_lens.iter() {
            if let Some(ids) = path.get(..*len).and_then(|head| self.prefix.get(head)) {
                return ids;
            }
        }
        &[]
    }
}
