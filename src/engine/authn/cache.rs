//! Verified-token cache, like Envoy's `jwt_cache_config`: a bounded LRU of tokens whose
//! signature verified, per VM (wasm is single-threaded per VM, so no locking). A hit skips
//! parsing and the signature only; time, issuer and audience are checked on every request.
//! An entry holds the key set it verified against: it only counts while the rule still
//! has that very key set (so a rotated-out key stops verifying at once).

use crate::attrs::VerifiedJwt;
use crate::fast_hash::FastBuildHasher;
use crate::jwt::{Jwks, Jwt};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Entries kept (Envoy's default).
pub(crate) const CAPACITY: usize = 100;
/// Longer tokens are not cached (Envoy's default).
pub(crate) const MAX_TOKEN_BYTES: usize = 4096;

struct Entry {
    rule: usize,
    jwt: Arc<Jwt>,
    view: Arc<VerifiedJwt>,
    keys: Arc<Jwks>,
    last_used: u64,
}

/// What a hit gives back: the parsed token, the rule and key set it verified with.
pub(crate) struct Hit {
    pub rule: usize,
    pub jwt: Arc<Jwt>,
    /// Authorization's view of the token under `rule` (space-delimited claims split).
    pub view: Arc<VerifiedJwt>,
    pub keys: Arc<Jwks>,
}

#[derive(Default)]
pub(crate) struct TokenCache {
    entries: HashMap<String, Entry, FastBuildHasher>,
    clock: u64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenCache({} entries)", self.entries.len())
    }
}

impl TokenCache {
    pub(crate) fn get(&mut self, raw: &str) -> Option<Hit> {
        if raw.len() > MAX_TOKEN_BYTES {
            return None;
        }
        self.clock += 1;
        let clock = self.clock;
        let e = self.entries.get_mut(raw)?;
        e.last_used = clock;
        Some(Hit {
            rule: e.rule,
            jwt: Arc::clone(&e.jwt),
            view: Arc::clone(&e.view),
            keys: Arc::clone(&e.keys),
        })
    }

    pub(crate) fn insert(
        &mut self,
        raw: &str,
        rule: usize,
        jwt: &Arc<Jwt>,
        view: &Arc<VerifiedJwt>,
        keys: &Arc<Jwks>,
    ) {
        if raw.len() > MAX_TOKEN_BYTES {
            return;
        }
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(raw) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.clock += 1;
        self.entries.insert(
            raw.to_string(),
            Entry {
                rule,
                jwt: Arc::clone(jwt),
                view: Arc::clone(view),
                keys: Arc::clone(keys),
                last_used: self.clock,
            },
        );
    }

    /// The rule's key set is now `current`: entries verified with another set are dropped.
    pub(crate) fn keys_changed(&mut self, rule: usize, current: &Arc<Jwks>) {
        self.entries
            .retain(|_, e| e.rule != rule || Arc::ptr_eq(&e.keys, current));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
