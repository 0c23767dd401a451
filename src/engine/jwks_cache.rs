//! The remote JWKS lifecycle: fetched once per refresh for the whole Envoy process, as a
//! state machine over `now` (milliseconds) that the adapter drives from its tick, its
//! requests and its callout answers. Everything it needs from the host is the small traits
//! below, so the lifecycle is unit-tested natively with a fake clock and a fake store.
//!
//! Every worker thread runs its own VM, so coordination goes through proxy-wasm shared data
//! (shared by all VMs with the same `vm_id`):
//! - `meshguard.jwks.<uri>` holds the last fetch record (times, outcome, last good body);
//!   each VM loads it when its CAS version changes.
//! - `meshguard.jwks.lease.<uri>` holds a lease expiry; a VM fetches only after winning it
//!   with a compare-and-swap, so one fetch serves every worker.
//!
//! Envoy's compare-and-swap (proxy-wasm-cpp-host `SharedData::set`) checks the version only
//! of a key that exists: a write to a missing key always succeeds. So the lease key is
//! created with the version of a write made before this VM saw it missing
//! ([`CLOCK_KEY`]): a key another VM created since has a later version, and the write fails.
//! The winner reads the record again before fetching (another VM's fetch may have ended,
//! record written and lease released, since this VM looked), and releases the lease with
//! the version it won, so a late release never frees another holder's lease.
//!
//! Rules: the first fetch is due at once; after a failed attempt the next waits
//! [`RETRY_BACKOFF_MS`] (process-wide: attempts are in the shared record); good keys are
//! refetched every refresh interval and keep serving while refreshes fail, for at most
//! [`MAX_STALE_MS`] past the interval; a token whose `kid` the keys lack may cause one
//! refetch per kid-refetch cooldown, measured from the last attempt of any VM
//! ([`JwksCache::kid_refetch_allowed`], the one cooldown rule).
//!
//! OpenID discovery (a rule with neither `jwksUri` nor `jwks`, [`RemoteJwks::discovery`]):
//! every fetch attempt is two callouts under the one lease, the issuer's discovery document
//! first, then the `jwks_uri` it names (through the cluster mapped for that URI's authority),
//! so refreshes, kid refetches and key rotation follow the document, and a changed
//! `jwks_uri` is picked up on the next fetch. Either step failing is a failed attempt (the
//! same backoff, stale keys, fail closed with `Jwks remote fetch is failed`).

use crate::authn::{KeyState, KeyStore, RemoteJwks};
use crate::config::JwksSettings;
use crate::jwt::Jwks;
use crate::stats::series_name;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// proxy-wasm shared data between the VMs of one `vm_id`.
pub trait SharedStore {
    /// The value under `key` and its version; `None` when the host could not answer.
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)>;
    /// Writes `value`; with `cas`, only while the version is still `cas`. True when written.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Envoy HTTP callouts.
pub trait Fetcher {
    /// Starts `GET` of `remote` through its cluster: the callout's token, or why it could
    /// not start. The answer comes back through [`JwksCache::on_response`].
    fn dispatch(&self, remote: &RemoteJwks) -> Result<u32, String>;
}

/// Where the lifecycle reports what happened.
pub trait Report {
    /// A fetch of `uri` ended (counted as `meshguard_jwks_fetch_total{jwks, result}`).
    fn fetch_done(&self, uri: &str, ok: bool);
    fn warn(&self, message: &str);
}

/// Everything the lifecycle needs from the host.
pub trait JwksHost: SharedStore + Fetcher + Report {}
impl<T: SharedStore + Fetcher + Report> JwksHost for T {}

/// A key whose only use is its version: written just before a VM creates a lease key.
const CLOCK_KEY: &str = "meshguard.jwks.clock";

/// Wait between failed attempts (process-wide, since attempts are recorded in shared data).
pub const RETRY_BACKOFF_MS: u64 = 2_000;
/// How long stale keys keep serving while every refresh fails, past the refresh interval.
pub const MAX_STALE_MS: u64 = 60 * 60 * 1000;

#[derive(Debug)]
struct Source {
    remote: RemoteJwks,
    keys: Option<Arc<Jwks>>,
    /// The body the keys were parsed from, written back with failure records so other VMs
    /// that start late still get the last good keys.
    body: Option<Rc<str>>,
    fetched_at_ms: u64,
    last_attempt_ms: u64,
    /// The last attempt failed and no keys are usable: requests fail closed.
    failed: bool,
    /// A token's kid is missing from the keys: refetch (once the lease is won), unless
    /// another VM attempted a fetch within the cooldown meanwhile.
    refetch_wanted: bool,
    /// Shared-data version last loaded.
    seen_cas: Option<u32>,
    /// The lease's version while this VM holds it (released with a CAS on it).
    lease_cas: Option<u32>,
    /// For a discovery source: the key set its document named last.
    resolved: Option<RemoteJwks>,
    /// The `meshguard_jwks_age_seconds{jwks}` series name, built once: the adapter records
    /// it on every tick.
    age_series: Box<str>,
}

impl Source {
    fn new(remote: RemoteJwks) -> Self {
        Source {
            age_series: series_name("meshguard_jwks_age_seconds", &[("jwks", &remote.uri)]).into(),
            remote,
            keys: None,
            body: None,
            fetched_at_ms: 0,
            last_attempt_ms: 0,
            failed: false,
            refetch_wanted: false,
            seen_cas: None,
            lease_cas: None,
            resolved: None,
        }
    }

    fn data_key(&self) -> String {
        format!("meshguard.jwks.{}", self.remote.uri)
    }

    fn lease_key(&self) -> String {
        format!("meshguard.jwks.lease.{}", self.remote.uri)
    }
}

/// The remote key sets of one VM.
#[derive(Debug, Default)]
pub struct JwksCache {
    sources: Vec<Source>,
    refresh_ms: u64,
    /// Least time between a fetch attempt and a kid-miss refetch (process-wide: attempt
    /// times are shared).
    kid_cooldown_ms: u64,
    /// Largest response body accepted (`jwks.maxResponseBytes`).
    max_body_bytes: usize,
    /// The time of the last call that brought this cache up to date, for [`KeyStore`].
    now_ms: u64,
    /// Callout token -> source index and which step it is.
    in_flight: BTreeMap<u32, (usize, Step)>,
    /// `jwks.clusters`: the cluster of a `jwks_uri` learned from a discovery document.
    clusters: JwksSettings,
}

/// What a callout fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// An OpenID discovery document.
    Discovery,
    /// A key set.
    Keys,
}

/// The `jwks_uri` of an OpenID discovery document, as a key set to fetch.
fn discovered(
    body: &[u8],
    doc: &RemoteJwks,
    settings: &JwksSettings,
) -> Result<RemoteJwks, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the discovery document is not JSON: {e}"))?;
    let uri = v
        .get("jwks_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or("the discovery document has no jwks_uri")?;
    let (authority, path) = crate::authn::split_uri(uri).ok_or_else(|| {
        format!("the discovery document's jwks_uri {uri:?} is not an http(s) URL")
    })?;
    Ok(RemoteJwks {
        uri: uri.to_string(),
        cluster: settings.cluster_for(&authority),
        authority,
        path,
        timeout: doc.timeout,
        discovery: false,
    })
}

impl KeyStore for JwksCache {
    fn keys(&self, uri: &str) -> KeyState {
        match self.sources.iter().find(|s| s.remote.uri == uri) {
            Some(Source { keys: Some(k), .. }) => KeyState::Ready(Arc::clone(k)),
            Some(Source { failed: true, .. }) | None => KeyState::Failed,
            Some(_) => KeyState::Pending,
        }
    }

    fn kid_refetch(&self, uri: &str) -> bool {
        let Some(idx) = self.sources.iter().position(|s| s.remote.uri == uri) else {
            return false;
        };
        self.in_flight(idx)
            || self
                .sources
                .get(idx)
                .is_some_and(|s| s.refetch_wanted || self.kid_refetch_allowed(s, self.now_ms))
    }
}

/// A fetch record as stored in shared data: `mg1 <fetched_at> <attempt_at> <ok>\n<body>`.
#[derive(Debug, PartialEq, Eq)]
struct Record<'a> {
    fetched_at_ms: u64,
    attempt_at_ms: u64,
    ok: bool,
    body: &'a str,
}

impl<'a> Record<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once('\n')?;
        let mut parts = head.split(' ');
        if parts.next()? != "mg1" {
            return None;
        }
        Some(Record {
            fetched_at_ms: parts.next()?.parse().ok()?,
            attempt_at_ms: parts.next()?.parse().ok()?,
            ok: parts.next()? == "1",
            body,
        })
    }

    fn encode(&self) -> Vec<u8> {
        format!(
            "mg1 {} {} {}\n{}",
            self.fetched_at_ms,
            self.attempt_at_ms,
            u8::from(self.ok),
            self.body
        )
        .into_bytes()
    }
}

impl JwksCache {
    /// Takes the remote key sets of a new configuration, keeping what is known of URIs that
    /// stay: their keys, fetch times, shared-data version and a fetch in flight (its answer
    /// is still taken, so a reload while a fetch is out never fetches twice). Only URIs
    /// that are new start empty; the same configuration twice changes nothing.
    pub fn configure(&mut self, remotes: &[RemoteJwks], settings: &JwksSettings) {
        let mut old: Vec<Option<Source>> = std::mem::take(&mut self.sources)
            .into_iter()
            .map(Some)
            .collect();
        // Old index -> new index, for the callouts in flight.
        let mut moved = BTreeMap::new();
        self.sources = remotes
            .iter()
            .enumerate()
            .map(|(new_idx, r)| {
                let kept = old
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|s| s.remote.uri == r.uri))
                    .and_then(|i| old.get_mut(i).and_then(Option::take).map(|s| (i, s)));
                match kept {
                    Some((old_idx, mut s)) => {
                        moved.insert(old_idx, new_idx);
                        s.remote = r.clone();
                        s
                    }
                    None => Source::new(r.clone()),
                }
            })
            .collect();
        self.refresh_ms = settings.refresh_interval.as_millis() as u64;
        self.kid_cooldown_ms = settings.kid_refetch_cooldown.as_millis() as u64;
        self.max_body_bytes = settings.max_response_bytes;
        self.clusters = settings.clone();
        // A callout for a URI that went away is forgotten: its answer is ignored and its
        // lease expires on its own.
        self.in_flight = std::mem::take(&mut self.in_flight)
            .into_iter()
            .filter_map(|(token, (idx, step))| moved.get(&idx).map(|&n| (token, (n, step))))
            .collect();
    }

    /// Loads every key set another VM (or an earlier configuration of this one) already
    /// fetched from shared data, without fetching or writing anything: safe in
    /// `on_configure`, including on Envoy's canary VM, which is discarded right after. A
    /// reloaded configuration decides its first requests with the keys the process already
    /// has instead of waiting for a tick. True when some key set became usable.
    pub fn load_shared(&mut self, now: u64, host: &(impl SharedStore + Report)) -> bool {
        self.now_ms = now;
        let mut changed = false;
        for idx in 0..self.sources.len() {
            changed |= self.sync(idx, now, host);
        }
        changed
    }

    /// True while a fetch this cache started has not been answered. A root context that
    /// Envoy retires (a reload replaced its configuration) waits for it: a cancelled fetch
    /// would hold the process-wide lease until it expires and stall every VM's first keys.
    pub fn fetching(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Each key set's `meshguard_jwks_age_seconds{jwks}` series name and the age in seconds
    /// of the keys this VM holds (None: no keys).
    pub fn key_ages(&self, now: u64) -> impl Iterator<Item = (&str, Option<u64>)> {
        self.sources.iter().map(move |s| {
            let age = s
                .keys
                .as_ref()
                .map(|_| now.saturating_sub(s.fetched_at_ms) / 1000);
            (&*s.age_series, age)
        })
    }

    /// True while some key set has neither keys nor a final failure.
    pub fn waiting_for_first_keys(&self) -> bool {
        self.sources.iter().any(|s| s.keys.is_none() && !s.failed)
    }

    /// Reloads from shared data the key sets this VM holds as failed, so a request on this
    /// worker sees keys another worker fetched since the last tick instead of failing
    /// closed for up to a tick. Costs a shared-data read per failed set only.
    pub fn sync_failed(&mut self, now: u64, host: &impl JwksHost) {
        self.now_ms = now;
        for idx in 0..self.sources.len() {
            if self.sources.get(idx).is_some_and(|s| s.failed) {
                self.sync(idx, now, host);
            }
        }
    }

    /// The one cooldown rule: a kid-miss refetch is allowed once the last fetch attempt of
    /// any VM (the shared record's) is at least `jwks.kidRefetchCooldown` old.
    fn kid_refetch_allowed(&self, src: &Source, now: u64) -> bool {
        now.saturating_sub(src.last_attempt_ms) >= self.kid_cooldown_ms
    }

    fn in_flight(&self, idx: usize) -> bool {
        self.in_flight.values().any(|&(i, _)| i == idx)
    }

    /// A request wants these key sets. Those that have keys lack the request's kid: they are
    /// first reloaded from shared data (another VM may have fetched or tried since this
    /// VM's last tick), then marked for a refetch (by the next tick) when the cooldown allows;
    /// the first fetch of the others is already due. Returns false when nothing is left to
    /// wait for (decide the request again now), true when it must wait.
    pub fn request_fetch(&mut self, needed: &[usize], now: u64, host: &impl JwksHost) -> bool {
        self.now_ms = now;
        let mut wait = false;
        for &idx in needed {
            if self.sources.get(idx).is_some_and(|s| s.keys.is_some()) {
                self.sync(idx, now, host);
            }
            let due = self
                .sources
                .get(idx)
                .is_some_and(|s| s.keys.is_some() && self.kid_refetch_allowed(s, now));
            if let (true, Some(src)) = (due, self.sources.get_mut(idx)) {
                src.refetch_wanted = true;
            }
            wait |= self.in_flight(idx)
                || self
                    .sources
                    .get(idx)
                    .is_some_and(|s| s.keys.is_none() || s.refetch_wanted);
        }
        wait
    }

    /// Loads newer records from shared data, expires stale keys, starts due fetches.
    /// Returns true when some key set became usable or failed (paused requests can go on).
    pub fn tick(&mut self, now: u64, host: &impl JwksHost) -> bool {
        self.now_ms = now;
        let mut changed = false;
        for idx in 0..self.sources.len() {
            changed |= self.sync(idx, now, host);
            changed |= self.drop_satisfied_refetch(idx, now);
            if self.fetch_due(idx, now) && self.try_lease(idx, now, host) {
                // Another VM's fetch may have ended between the sync above and the lease.
                changed |= self.sync(idx, now, host);
                changed |= self.drop_satisfied_refetch(idx, now);
                if self.fetch_due(idx, now) {
                    changed |= self.dispatch(idx, now, host);
                } else {
                    self.release_lease(idx, host);
                }
            }
        }
        changed
    }

    fn sync(&mut self, idx: usize, now: u64, host: &(impl SharedStore + Report)) -> bool {
        let Some(src) = self.sources.get_mut(idx) else {
            return false;
        };
        let mut changed = false;
        if let Some((Some(bytes), cas)) = host.get(&src.data_key()) {
            if cas != src.seen_cas {
                src.seen_cas = cas;
                if let Some(rec) = Record::parse(&bytes) {
                    src.last_attempt_ms = rec.attempt_at_ms;
                    let newer = rec.fetched_at_ms > src.fetched_at_ms || src.keys.is_none();
                    if !rec.body.is_empty() && newer {
                        if let Ok(keys) = Jwks::parse(rec.body) {
                            src.keys = Some(Arc::new(keys));
                            src.body = Some(Rc::from(rec.body));
                            src.fetched_at_ms = rec.fetched_at_ms;
                            src.failed = false;
                            changed = true;
                        }
                    }
                    if !rec.ok && src.keys.is_none() && !src.failed {
                        src.failed = true;
                        changed = true;
                    }
                }
            }
        }
        // Bounded staleness: keys that could not be refreshed for too long stop serving.
        if src.keys.is_some()
            && now.saturating_sub(src.fetched_at_ms) > self.refresh_ms + MAX_STALE_MS
        {
            host.warn(&format!(
                "meshguard: JWKS {} is stale beyond the limit; failing closed",
                src.remote.uri
            ));
            src.keys = None;
            src.failed = true;
            changed = true;
        }
        changed
    }

    /// A wanted kid-miss refetch that another VM's attempt (seen in shared data) made moot:
    /// dropped, and true so the requests waiting for it are decided again.
    fn drop_satisfied_refetch(&mut self, idx: usize, now: u64) -> bool {
        let moot = self
            .sources
            .get(idx)
            .is_some_and(|s| s.refetch_wanted && !self.kid_refetch_allowed(s, now));
        if let (true, Some(src)) = (moot, self.sources.get_mut(idx)) {
            src.refetch_wanted = false;
        }
        moot
    }

    fn fetch_due(&self, idx: usize, now: u64) -> bool {
        let Some(src) = self.sources.get(idx) else {
            return false;
        };
        if self.in_flight(idx) {
            return false;
        }
        if src.refetch_wanted {
            return true;
        }
        let backoff_over = now.saturating_sub(src.last_attempt_ms) >= RETRY_BACKOFF_MS;
        match &src.keys {
            None if !src.failed && src.last_attempt_ms == 0 => true,
            None => backoff_over,
            Some(_) => now.saturating_sub(src.fetched_at_ms) >= self.refresh_ms && backoff_over,
        }
    }

    /// Compare-and-swap on the lease key; true when this VM won it and may fetch.
    fn try_lease(&mut self, idx: usize, now: u64, host: &impl JwksHost) -> bool {
        let Some(src) = self.sources.get(idx) else {
            return false;
        };
        let key = src.lease_key();
        // A discovery source makes two callouts per attempt.
        let steps = if src.remote.discovery { 2 } else { 1 };
        let expires = (now + steps * src.remote.timeout.as_millis() as u64 + 1_000).to_string();
        let Some((mut value, mut cas)) = host.get(&key) else {
            return false;
        };
        if cas.is_none() {
            // Missing: a version from before this look makes the creating write conditional
            // (any key created after the look has a later one).
            if !host.set(CLOCK_KEY, b"", None) {
                return false;
            }
            let Some((_, Some(before))) = host.get(CLOCK_KEY) else {
                return false;
            };
            let Some(again) = host.get(&key) else {
                return false;
            };
            (value, cas) = again;
            if cas.is_none() {
                cas = Some(before);
            }
        }
        let held_until = value
            .and_then(|v| {
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            })
            .unwrap_or(0);
        if held_until > now || !host.set(&key, expires.as_bytes(), cas) {
            return false;
        }
        // Nobody writes a held lease but its holder: this is the version just written.
        let won = host.get(&key).and_then(|(_, c)| c);
        if let Some(src) = self.sources.get_mut(idx) {
            src.lease_cas = won;
        }
        true
    }

    fn release_lease(&mut self, idx: usize, host: &impl JwksHost) {
        if let Some(src) = self.sources.get_mut(idx) {
            // `None` (the host did not answer after the win): unconditional, as before.
            let cas = src.lease_cas.take();
            host.set(&src.lease_key(), b"0", cas);
        }
    }

    /// Starts the callout. Returns true when it failed at once (state changed).
    fn dispatch(&mut self, idx: usize, now: u64, host: &impl JwksHost) -> bool {
        let Some(src) = self.sources.get_mut(idx) else {
            return false;
        };
        src.refetch_wanted = false;
        let step = if src.remote.discovery {
            Step::Discovery
        } else {
            Step::Keys
        };
        match host.dispatch(&src.remote) {
            Ok(token) => {
                self.in_flight.insert(token, (idx, step));
                false
            }
            Err(why) => {
                host.warn(&format!(
                    "meshguard: cannot fetch JWKS {} through cluster {:?}: {why} (is the cluster defined?)",
                    src.remote.uri, src.remote.cluster
                ));
                self.record_failure(idx, now, host);
                self.release_lease(idx, host);
                true
            }
        }
    }

    /// Handles a callout response. Returns true when paused requests can be decided.
    /// `status` is the answer's `:status` (`None`: connection failure or timeout);
    /// `read_body` is called only for a 200 within the size limit.
    pub fn on_response(
        &mut self,
        token: u32,
        status: Option<&str>,
        body_size: usize,
        read_body: impl FnOnce() -> Vec<u8>,
        now: u64,
        host: &impl JwksHost,
    ) -> bool {
        self.now_ms = now;
        let Some((idx, step)) = self.in_flight.remove(&token) else {
            return false;
        };
        if step == Step::Discovery {
            return self.on_discovery(idx, status, body_size, read_body, now, host);
        }
        let uri = self
            .sources
            .get(idx)
            .map(|s| s.remote.uri.clone())
            .unwrap_or_default();
        let outcome = if status != Some("200") {
            Err(format!(
                "status {}",
                status.unwrap_or("none (connection failure or timeout)")
            ))
        } else if body_size > self.max_body_bytes {
            Err(format!(
                "body of {body_size} bytes exceeds the {}-byte limit (jwks.maxResponseBytes)",
                self.max_body_bytes
            ))
        } else {
            let body = read_body();
            match std::str::from_utf8(&body) {
                Err(_) => Err("body is not UTF-8".to_string()),
                Ok(text) => match Jwks::parse(text) {
                    Ok(keys) => Ok((keys, Rc::<str>::from(text))),
                    Err(s) => Err(s.message().to_string()),
                },
            }
        };
        match outcome {
            Ok((keys, body)) => {
                host.fetch_done(&uri, true);
                if let Some(src) = self.sources.get_mut(idx) {
                    src.keys = Some(Arc::new(keys));
                    src.fetched_at_ms = now;
                    src.last_attempt_ms = now;
                    src.failed = false;
                    let rec = Record {
                        fetched_at_ms: now,
                        attempt_at_ms: now,
                        ok: true,
                        body: &body,
                    };
                    host.set(&src.data_key(), &rec.encode(), None);
                    src.seen_cas = host.get(&src.data_key()).and_then(|(_, c)| c);
                    src.body = Some(body);
                }
            }
            Err(why) => {
                host.warn(&format!("meshguard: JWKS fetch from {uri} failed: {why}"));
                self.record_failure(idx, now, host);
            }
        }
        self.release_lease(idx, host);
        true
    }

    /// The discovery document arrived: fetch the key set it names (the lease stays held), or
    /// record a failed attempt. Returns true when the state changed (a failure).
    fn on_discovery(
        &mut self,
        idx: usize,
        status: Option<&str>,
        body_size: usize,
        read_body: impl FnOnce() -> Vec<u8>,
        now: u64,
        host: &impl JwksHost,
    ) -> bool {
        let Some(src) = self.sources.get(idx) else {
            return false;
        };
        let doc = src.remote.clone();
        let next = if status != Some("200") {
            Err(format!(
                "status {}",
                status.unwrap_or("none (connection failure or timeout)")
            ))
        } else if body_size > self.max_body_bytes {
            Err(format!("body of {body_size} bytes exceeds the limit"))
        } else {
            discovered(&read_body(), &doc, &self.clusters)
        };
        let dispatched = next.and_then(|keys| match host.dispatch(&keys) {
            Ok(token) => Ok((token, keys)),
            Err(why) => Err(format!(
                "cannot fetch {} through cluster {:?}: {why} (is the cluster defined?)",
                keys.uri, keys.cluster
            )),
        });
        match dispatched {
            Ok((token, keys)) => {
                self.in_flight.insert(token, (idx, Step::Keys));
                if let Some(src) = self.sources.get_mut(idx) {
                    src.resolved = Some(keys);
                }
                false
            }
            Err(why) => {
                host.warn(&format!(
                    "meshguard: OpenID discovery from {} failed: {why}",
                    doc.uri
                ));
                self.record_failure(idx, now, host);
                self.release_lease(idx, host);
                true
            }
        }
    }

    /// For a discovery source, the key set its document named last (for the log and tests).
    pub fn resolved_uri(&self, discovery_uri: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|s| s.remote.uri == discovery_uri)
            .and_then(|s| s.resolved.as_ref())
            .map(|r| r.uri.as_str())
    }

    fn record_failure(&mut self, idx: usize, now: u64, host: &impl JwksHost) {
        let Some(src) = self.sources.get_mut(idx) else {
            return;
        };
        host.fetch_done(&src.remote.uri, false);
        src.last_attempt_ms = now;
        if src.keys.is_none() {
            src.failed = true;
        }
        let body = src.body.clone();
        let rec = Record {
            fetched_at_ms: src.fetched_at_ms,
            attempt_at_ms: now,
            ok: false,
            body: body.as_deref().unwrap_or(""),
        };
        host.set(&src.data_key(), &rec.encode(), None);
        src.seen_cas = host.get(&src.data_key()).and_then(|(_, c)| c);
    }
}

#[cfg(test)]
mod tests;
