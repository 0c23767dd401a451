//! Verified-token cache, like Envoy's `jwt_cache_config`: a bounded LRU of tokens whose
//! signature verified, per VM (wasm is single-threaded per VM, so no locking). A hit skips
//! parsing and the signature only; time, issuer and audience are checked on every request.
//! An entry holds the key set it verified against: it only counts while the rule still
//! has that very key set (so a rotated-out key stops verifying at once).

use crate::attrs::VerifiedJwt;
use crate::fast_hash::{bytes_equal, token_hash};
use crate::jwt::{Jwks, Jwt};
use hashbrown::HashTable;
use std::fmt;
use std::sync::Arc;

/// Entries kept by default. Envoy's `jwt_cache_config` defaults to 100; a gateway with
/// thousands of active users misses at that size (README, "Caches"), so meshguard keeps more.
pub(crate) const DEFAULT_CAPACITY: usize = 1000;
/// Longer tokens are not cached (Envoy's default).
pub(crate) const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;

struct Entry {
    rule: usize,
    jwt: Arc<Jwt>,
    view: Arc<VerifiedJwt>,
    keys: Arc<Jwks>,
}

/// One slot of the LRU list (indices into `slots`; `NIL` ends the list).
struct Slot {
    token: Box<str>,
    entry: Entry,
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;

/// What a hit gives back: the parsed token, the rule and key set it verified with.
pub(crate) struct Hit {
    pub rule: usize,
    pub jwt: Arc<Jwt>,
    /// Authorization's view of the token under `rule` (space-delimited claims split).
    pub view: Arc<VerifiedJwt>,
    pub keys: Arc<Jwks>,
}

/// An exact LRU with O(1) lookup, insert and eviction at any size: a hash table of slot
/// indices (hashed and compared by the slots' tokens), and the slots linked from most to
/// least recently used.
pub(crate) struct TokenCache {
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    capacity: usize,
    max_token_bytes: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_TOKEN_BYTES)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TokenCache({}/{} entries)",
            self.index.len(),
            self.capacity
        )
    }
}

impl TokenCache {
    /// `capacity` 0 disables the cache (as Envoy's `jwt_cache_size: 0` does not: Envoy takes
    /// 0 as its default; the config layer maps that).
    pub(crate) fn new(capacity: usize, max_token_bytes: usize) -> Self {
        // u32 slot indices; the config bounds the size far below.
        let capacity = capacity.min(NIL as usize - 1);
        TokenCache {
            index: HashTable::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
            max_token_bytes,
        }
    }

    fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize)
    }

    /// The slot holding `raw`.
    fn find(&self, raw: &str) -> Option<u32> {
        let slots = &self.slots;
        let holds = |i: &u32| {
            slots
                .get(*i as usize)
                .is_some_and(|s| bytes_equal(s.token.as_bytes(), raw.as_bytes()))
        };
        self.index.find(token_hash(raw.as_bytes()), holds).copied()
    }

    /// Indexes slot `i` (which holds its token already).
    fn index_slot(&mut self, i: u32) {
        let Some(token) = self.slot(i).map(|s| token_hash(s.token.as_bytes())) else {
            return;
        };
        let slots = &self.slots;
        let rehash = |j: &u32| {
            slots
                .get(*j as usize)
                .map_or(0, |s| token_hash(s.token.as_bytes()))
        };
        self.index.insert_unique(token, i, rehash);
    }

    /// Drops slot `i` (holding `token`) from the index.
    fn unindex(&mut self, i: u32, token: &str) {
        if let Ok(entry) = self
            .index
            .find_entry(token_hash(token.as_bytes()), |j| *j == i)
        {
            entry.remove();
        }
    }

    fn unlink(&mut self, i: u32) {
        let Some((prev, next)) = self.slot(i).map(|s| (s.prev, s.next)) else {
            return;
        };
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.prev = NIL;
            s.next = old;
        }
        match self.slots.get_mut(old as usize) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    pub(crate) fn get(&mut self, raw: &str) -> Option<Hit> {
        if raw.len() > self.max_token_bytes {
            return None;
        }
        let i = self.find(raw)?;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        let e = &self.slot(i)?.entry;
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
        if raw.len() > self.max_token_bytes || self.capacity == 0 {
            return;
        }
        let entry = Entry {
            rule,
            jwt: Arc::clone(jwt),
            view: Arc::clone(view),
            keys: Arc::clone(keys),
        };
        if let Some(i) = self.find(raw) {
            if let Some(s) = self.slots.get_mut(i as usize) {
                s.entry = entry;
            }
            self.unlink(i);
            self.push_front(i);
            return;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Slot {
                token: raw.into(),
                entry,
                prev: NIL,
                next: NIL,
            });
            (self.slots.len() - 1) as u32
        } else {
            // Full: the least recently used slot takes the new token.
            let i = self.tail;
            self.unlink(i);
            let Some(s) = self.slots.get_mut(i as usize) else {
                return;
            };
            let old = std::mem::replace(&mut s.token, raw.into());
            s.entry = entry;
            self.unindex(i, &old);
            i
        };
        self.index_slot(i);
        self.push_front(i);
    }
    /// The rule's key set is now `current`: entries verified with another set are dropped
    /// (rare: a key rotation), by rebuilding the list in recency order.
    pub(crate) fn keys_changed(&mut self, rule: usize, current: &Arc<Jwks>) {
        let stale = |s: &Slot| s.entry.rule == rule && !Arc::ptr_eq(&s.entry.keys, current);
        if !self.slots.iter().any(stale) {
            return;
        }
        let mut order = Vec::with_capacity(self.slots.len());
        let mut i = self.head;
        while let Some(s) = self.slot(i) {
            order.push(i);
            i = s.next;
        }
        let mut slots: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        self.index.clear();
        self.head = NIL;
        self.tail = NIL;
        // Re-insert from least to most recent, so push_front restores the order.
        for i in order.into_iter().rev() {
            let Some(s) = slots.get_mut(i as usize).and_then(Option::take) else {
                continue;
            };
            if stale(&s) {
                continue;
            }
            let at = self.slots.len() as u32;
            self.slots.push(s);
            self.index_slot(at);
            self.push_front(at);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCT: &str =
        r#"{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMy"}]}"#;

    fn entry_parts() -> (Arc<Jwt>, Arc<VerifiedJwt>, Arc<Jwks>) {
        let jwt = Arc::new(Jwt::parse("eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJpIn0.c2ln").unwrap());
        let keys = Arc::new(Jwks::parse(OCT).unwrap());
        let view = VerifiedJwt {
            issuer: "i".into(),
            subject: String::new(),
            claims: Default::default(),
        };
        (jwt, Arc::new(view), keys)
    }

    /// Exact LRU: a lookup refreshes an entry; the least recently used one goes first.
    #[test]
    fn evicts_the_least_recently_used() {
        let (jwt, view, keys) = entry_parts();
        let mut c = TokenCache::new(3, 64);
        for t in ["a", "b", "c"] {
            c.insert(t, 0, &jwt, &view, &keys);
        }
        assert!(c.get("a").is_some()); // order now a, c, b
        c.insert("d", 0, &jwt, &view, &keys); // evicts b
        assert!(c.get("b").is_none());
        for t in ["a", "c", "d"] {
            assert!(c.get(t).is_some(), "{t}");
        }
        c.insert("c", 1, &jwt, &view, &keys); // an update, not a new entry
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("c").map(|h| h.rule), Some(1));
        // Order now c, d, a: two new tokens evict a then d.
        c.insert("e", 0, &jwt, &view, &keys);
        c.insert("f", 0, &jwt, &view, &keys);
        assert!(c.get("a").is_none() && c.get("d").is_none());
        assert!(c.get("c").is_some() && c.get("e").is_some() && c.get("f").is_some());
    }

    /// Tokens with the same length and signature tail hash alike: each still finds its own
    /// entry, and a forged one with that tail finds none.
    #[test]
    fn same_tail_tokens_are_told_apart() {
        let (jwt, view, keys) = entry_parts();
        let tail = "s".repeat(40);
        let mut c = TokenCache::new(10, 4096);
        c.insert(&format!("aaa.{tail}"), 1, &jwt, &view, &keys);
        c.insert(&format!("bbb.{tail}"), 2, &jwt, &view, &keys);
        assert_eq!(c.get(&format!("aaa.{tail}")).map(|h| h.rule), Some(1));
        assert_eq!(c.get(&format!("bbb.{tail}")).map(|h| h.rule), Some(2));
        assert!(c.get(&format!("ccc.{tail}")).is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn size_zero_and_long_tokens_are_not_cached() {
        let (jwt, view, keys) = entry_parts();
        let mut c = TokenCache::new(0, 64);
        c.insert("a", 0, &jwt, &view, &keys);
        assert!(c.get("a").is_none());
        let mut c = TokenCache::new(10, 4);
        c.insert("12345", 0, &jwt, &view, &keys);
        assert!(c.get("12345").is_none());
        c.insert("1234", 0, &jwt, &view, &keys);
        assert!(c.get("1234").is_some());
    }

    /// A key rotation drops that rule's stale entries and keeps the others in LRU order.
    #[test]
    fn keys_changed_keeps_order() {
        let (jwt, view, old) = entry_parts();
        let new = Arc::new(Jwks::parse(OCT).unwrap());
        let mut c = TokenCache::new(3, 64);
        c.insert("x", 0, &jwt, &view, &old);
        c.insert("y", 1, &jwt, &view, &old);
        c.insert("z", 1, &jwt, &view, &new);
        c.keys_changed(1, &new);
        assert_eq!(c.len(), 2);
        assert!(c.get("y").is_none());
        // x is least recent: a new token fills the free slot, the next one evicts x.
        c.insert("p", 0, &jwt, &view, &new);
        c.insert("q", 0, &jwt, &view, &new);
        assert!(c.get("x").is_none());
        assert!(c.get("z").is_some() && c.get("p").is_some() && c.get("q").is_some());
    }
}
