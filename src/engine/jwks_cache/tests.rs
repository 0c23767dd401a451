//! The JWKS lifecycle with a fake clock, a fake shared store (shared by several caches, as
//! the workers' VMs share Envoy's) and a fake fetcher that records dispatches.

use super::*;
use crate::authn::KeyStore;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

const URI: &str = "https://keys.example/jwks";
const REFRESH_MS: u64 = 60_000;
const COOLDOWN_MS: u64 = 30_000;

fn jwks_body(kid: &str) -> String {
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(b"a-secret-of-thirty-two-bytes-at-least");
    format!(r#"{{"keys":[{{"kty":"oct","alg":"HS256","kid":"{kid}","k":"{k}"}}]}}"#)
}

/// Envoy's shared data as proxy-wasm-cpp-host implements it (`SharedData::set`): one version
/// counter for the whole process; a write to an existing key with a version (`cas`) other than
/// its own is refused; a write to a missing key always creates it, whatever `cas` says.
/// Cloning gives another handle on the same data (one per VM).
#[derive(Default, Clone)]
struct Store(Rc<StoreData>);

#[derive(Default)]
struct StoreData {
    values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    last_cas: Cell<u32>,
}

impl Store {
    /// Every key with its version, sorted.
    fn versions(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self
            .0
            .values
            .borrow()
            .iter()
            .map(|(k, (_, c))| (k.clone(), *c))
            .collect();
        v.sort();
        v
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.0.values.borrow().get(key).map(|(v, _)| v.clone())
    }
}

/// Steps of another VM, run in the middle of this one's.
type OtherVm = Box<dyn FnOnce()>;

/// One VM's host: the process-wide store, its own callouts and reports.
struct Host {
    store: Store,
    dispatched: RefCell<Vec<(u32, String)>>,
    next_token: Cell<u32>,
    fail_dispatch: Cell<bool>,
    done: RefCell<Vec<bool>>,
    warnings: RefCell<Vec<String>>,
    /// Shared-data calls made so far.
    calls: Cell<usize>,
    /// Another VM's steps, run once just before this host's shared-data call number `.0`
    /// (from 0): an interleaving of two worker threads.
    before_call: RefCell<Option<(usize, OtherVm)>>,
}

impl Host {
    fn new(store: &Store) -> Self {
        Host {
            store: store.clone(),
            dispatched: RefCell::default(),
            next_token: Cell::new(1),
            fail_dispatch: Cell::new(false),
            done: RefCell::default(),
            warnings: RefCell::default(),
            calls: Cell::new(0),
            before_call: RefCell::default(),
        }
    }
    /// Runs `other` just before this host's shared-data call number `at` from now.
    fn interleave(&self, at: usize, other: impl FnOnce() + 'static) {
        *self.before_call.borrow_mut() = Some((self.calls.get() + at, Box::new(other)));
    }
    fn call(&self) {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let due = matches!(&*self.before_call.borrow(), Some((at, _)) if *at == n);
        if due {
            if let Some((_, other)) = self.before_call.borrow_mut().take() {
                other();
            }
        }
    }
    fn fetches(&self) -> usize {
        self.dispatched.borrow().len()
    }
    fn last_token(&self) -> u32 {
        self.dispatched.borrow().last().map(|(t, _)| *t).unwrap()
    }
}

impl SharedStore for Host {
    fn get(&self, key: &str) -> Option<(Option<Vec<u8>>, Option<u32>)> {
        self.call();
        Some(match self.store.0.values.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        self.call();
        let data = &self.store.0;
        let mut m = data.values.borrow_mut();
        if let (Some((_, current)), Some(cas)) = (m.get(key), cas) {
            if *current != cas {
                return false;
            }
        }
        let next = data.last_cas.get() + 1;
        data.last_cas.set(next);
        m.insert(key.to_string(), (value.to_vec(), next));
        true
    }
}

impl Fetcher for Host {
    fn dispatch(&self, remote: &RemoteJwks) -> Result<u32, String> {
        if self.fail_dispatch.get() {
            return Err("BadArgument".into());
        }
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        self.dispatched.borrow_mut().push((t, remote.uri.clone()));
        Ok(t)
    }
}

impl Report for Host {
    fn fetch_done(&self, _uri: &str, ok: bool) {
        self.done.borrow_mut().push(ok);
    }
    fn warn(&self, message: &str) {
        self.warnings.borrow_mut().push(message.to_string());
    }
}

fn remote() -> RemoteJwks {
    RemoteJwks {
        uri: URI.into(),
        cluster: "keys".into(),
        authority: "keys.example".into(),
        path: "/jwks".into(),
        timeout: Duration::from_secs(5),
        discovery: false,
    }
}

fn settings() -> JwksSettings {
    JwksSettings {
        refresh_interval: Duration::from_millis(REFRESH_MS),
        kid_refetch_cooldown: Duration::from_millis(COOLDOWN_MS),
        ..JwksSettings::default()
    }
}

fn cache() -> JwksCache {
    let mut c = JwksCache::default();
    c.configure(&[remote()], &settings());
    c
}

/// One Envoy process with `N` VMs: the shared store, each VM's host, each VM's cache (made
/// by `make`, e.g. [`cache`]).
fn vms<const N: usize>(make: fn() -> JwksCache) -> (Store, [Host; N], [JwksCache; N]) {
    let store = Store::default();
    let hosts = std::array::from_fn(|_| Host::new(&store));
    (store, hosts, std::array::from_fn(|_| make()))
}

fn answer(c: &mut JwksCache, h: &Host, now: u64, status: Option<&str>, body: &str) -> bool {
    let body = body.to_string();
    let size = body.len();
    c.on_response(
        h.last_token(),
        status,
        size,
        move || body.into_bytes(),
        now,
        h,
    )
}

fn state(c: &JwksCache) -> &'static str {
    match c.keys(URI) {
        KeyState::Ready(_) => "ready",
        KeyState::Pending => "pending",
        KeyState::Failed => "failed",
    }
}

#[test]
fn first_fetch_once_per_process_then_every_vm_loads_the_record() {
    let (store, [h1, h2], [mut vm1, mut vm2]) = vms(cache);
    assert_eq!(state(&vm1), "pending");
    assert!(vm1.waiting_for_first_keys());
    // Both VMs tick at the same instant: one lease, one fetch.
    vm1.tick(1_000, &h1);
    vm2.tick(1_000, &h2);
    assert_eq!((h1.fetches(), h2.fetches()), (1, 0));
    // Ticking again while in flight starts nothing.
    vm1.tick(1_100, &h1);
    vm2.tick(1_100, &h2);
    assert_eq!((h1.fetches(), h2.fetches()), (1, 0));
    assert!(answer(&mut vm1, &h1, 1_200, Some("200"), &jwks_body("a")));
    assert_eq!(state(&vm1), "ready");
    assert_eq!(*h1.done.borrow(), [true]);
    // The other VM picks the keys up from shared data on its next tick, without fetching.
    assert_eq!(state(&vm2), "pending");
    assert!(vm2.tick(1_300, &h2));
    assert_eq!(state(&vm2), "ready");
    assert_eq!(h2.fetches(), 0);
    // A VM that starts late gets them too.
    let h3 = Host::new(&store);
    let mut vm3 = cache();
    vm3.tick(5_000, &h3);
    assert_eq!((state(&vm3), h3.fetches()), ("ready", 0));
}

#[test]
fn refresh_once_per_interval_across_vms() {
    let (_, [h1, h2], [mut vm1, mut vm2]) = vms(cache);
    vm1.tick(0, &h1);
    answer(&mut vm1, &h1, 10, Some("200"), &jwks_body("a"));
    vm2.tick(20, &h2);
    for now in (1_000..REFRESH_MS).step_by(1_000) {
        vm1.tick(now, &h1);
        vm2.tick(now, &h2);
    }
    assert_eq!(
        h1.fetches() + h2.fetches(),
        1,
        "no refetch before the interval"
    );
    vm2.tick(REFRESH_MS + 10, &h2);
    vm1.tick(REFRESH_MS + 10, &h1);
    assert_eq!(h1.fetches() + h2.fetches(), 2, "one refresh for both");
}

#[test]
fn failures_fail_closed_with_backoff_then_recover() {
    let (_, [h], [mut vm]) = vms(cache);
    vm.tick(0, &h);
    answer(&mut vm, &h, 100, Some("500"), "");
    assert_eq!(state(&vm), "failed");
    assert!(!vm.waiting_for_first_keys());
    assert!(h.warnings.borrow().iter().any(|w| w.contains("status 500")));
    // Within the backoff nothing is retried, after it one attempt.
    vm.tick(100 + RETRY_BACKOFF_MS - 1, &h);
    assert_eq!(h.fetches(), 1);
    vm.tick(100 + RETRY_BACKOFF_MS, &h);
    assert_eq!(h.fetches(), 2);
    // Timeout / connection failure, garbage, too big: each a failed fetch.
    answer(&mut vm, &h, 3_000, None, "");
    vm.tick(6_000, &h);
    answer(&mut vm, &h, 6_000, Some("200"), "not json");
    vm.tick(9_000, &h);
    let huge = "x".repeat(JwksSettings::default().max_response_bytes + 1);
    answer(&mut vm, &h, 9_000, Some("200"), &huge);
    assert_eq!(*h.done.borrow(), [false, false, false, false]);
    assert_eq!(state(&vm), "failed");
    let w = h.warnings.borrow().join("\n");
    assert!(
        w.contains("connection failure or timeout") && w.contains("jwks.maxResponseBytes"),
        "{w}"
    );
    // Healthy again.
    vm.tick(12_000, &h);
    answer(&mut vm, &h, 12_000, Some("200"), &jwks_body("a"));
    assert_eq!(state(&vm), "ready");
}

#[test]
fn a_dispatch_that_cannot_start_is_a_failed_attempt() {
    let (_, [h], [mut vm]) = vms(cache);
    h.fail_dispatch.set(true);
    assert!(vm.tick(0, &h), "state changed: failed");
    assert_eq!(state(&vm), "failed");
    assert!(h.warnings.borrow()[0].contains("is the cluster defined?"));
    // The lease was released: the next attempt after the backoff may start at once.
    h.fail_dispatch.set(false);
    vm.tick(RETRY_BACKOFF_MS, &h);
    assert_eq!(h.fetches(), 1);
}

#[test]
fn stale_keys_serve_while_refreshes_fail_then_fail_closed() {
    let (_, [h], [mut vm]) = vms(cache);
    vm.tick(0, &h);
    answer(&mut vm, &h, 0, Some("200"), &jwks_body("a"));
    let mut now = REFRESH_MS;
    while now <= REFRESH_MS + MAX_STALE_MS {
        vm.tick(now, &h);
        if vm.in_flight(0) {
            answer(&mut vm, &h, now, Some("503"), "");
        }
        assert_eq!(state(&vm), "ready", "stale keys keep serving at {now}");
        now += 60_000;
    }
    vm.tick(REFRESH_MS + MAX_STALE_MS + 1, &h);
    assert_eq!(state(&vm), "failed");
    assert!(h
        .warnings
        .borrow()
        .iter()
        .any(|w| w.contains("stale beyond the limit")));
}

#[test]
fn kid_miss_refetch_respects_one_cooldown_across_vms() {
    let (_, [h1, h2], [mut vm1, mut vm2]) = vms(cache);
    vm1.tick(0, &h1);
    answer(&mut vm1, &h1, 0, Some("200"), &jwks_body("a"));
    vm2.tick(10, &h2);
    // Within the cooldown of the first fetch: no refetch, the request fails at once.
    assert!(!vm2.kid_refetch(URI) || vm2.in_flight(0));
    assert!(!vm2.request_fetch(&[0], COOLDOWN_MS - 1, &h2));
    // After it: the request waits and the next tick refetches (one VM).
    assert!(vm2.request_fetch(&[0], COOLDOWN_MS, &h2));
    assert!(vm2.kid_refetch(URI));
    vm2.tick(COOLDOWN_MS, &h2);
    assert_eq!(h2.fetches(), 1);
    answer(&mut vm2, &h2, COOLDOWN_MS + 5, Some("200"), &jwks_body("b"));
    // The other VM sees the new attempt in shared data: its own kid miss now is within
    // the cooldown, so it neither waits nor fetches.
    assert!(!vm1.request_fetch(&[0], COOLDOWN_MS + 10, &h1));
    vm1.tick(COOLDOWN_MS + 10, &h1);
    assert_eq!(h1.fetches(), 1, "only vm1's first fetch");
    match vm1.keys(URI) {
        KeyState::Ready(k) => assert!(k.has_kid("b"), "vm1 loaded the rotated keys"),
        _ => panic!("not ready"),
    }
}

#[test]
fn a_wanted_refetch_made_moot_by_another_vm_is_dropped() {
    let (_, [h1, h2], [mut vm1, mut vm2]) = vms(cache);
    vm1.tick(0, &h1);
    answer(&mut vm1, &h1, 0, Some("200"), &jwks_body("a"));
    vm2.tick(1, &h2);
    let t = COOLDOWN_MS + 100;
    assert!(vm2.request_fetch(&[0], t, &h2), "vm2 wants a refetch");
    // vm1 refetches first (its own kid miss) and records the attempt.
    assert!(vm1.request_fetch(&[0], t, &h1));
    vm1.tick(t, &h1);
    answer(&mut vm1, &h1, t + 1, Some("200"), &jwks_body("a"));
    // vm2's tick loads the record: its refetch is moot, dropped (requests decided again).
    assert!(vm2.tick(t + 2, &h2));
    assert_eq!(h2.fetches(), 0);
    assert!(!vm2.kid_refetch(URI));
}

#[test]
fn a_lease_held_by_another_vm_is_respected_until_it_expires() {
    let (_, [h1, h2], [mut vm1, mut vm2]) = vms(cache);
    vm1.tick(0, &h1);
    assert_eq!(h1.fetches(), 1);
    // vm1's callout never answers (its VM died): the lease expires after timeout + 1 s.
    vm2.tick(5_999, &h2);
    assert_eq!(h2.fetches(), 0);
    vm2.tick(6_001, &h2);
    assert_eq!(h2.fetches(), 1);
}

/// Two VMs ticking on two worker threads at once: the other VM's whole tick lands between
/// any two shared-data calls of this VM's tick, for every such point. One fetch, always,
/// whether the lease key is still missing (the first fetch) or exists (a refresh).
#[test]
fn two_vms_ticking_together_fetch_once_at_every_interleaving() {
    for refresh in [false, true] {
        let calls = {
            let (_, [h1], [mut vm1]) = vms(cache);
            let start = warm(&mut vm1, &h1, refresh);
            let before = h1.calls.get();
            vm1.tick(start, &h1);
            h1.calls.get() - before
        };
        assert!(
            calls >= 3,
            "{calls} shared-data calls in a tick that fetches"
        );
        for at in 0..calls {
            let (_, [h1, h2], [mut vm1, vm2]) = vms(cache);
            let start = warm(&mut vm1, &h1, refresh);
            let (h2, vm2) = (Rc::new(h2), Rc::new(RefCell::new(vm2)));
            let (h2c, vm2c) = (Rc::clone(&h2), Rc::clone(&vm2));
            h1.interleave(at, move || {
                vm2c.borrow_mut().tick(start, &*h2c);
            });
            let fetched_before = h1.fetches();
            vm1.tick(start, &h1);
            assert!(h1.before_call.borrow().is_none(), "call {at}: not run");
            assert_eq!(
                h1.fetches() - fetched_before + h2.fetches(),
                1,
                "refresh {refresh}: the other VM's tick before call {at} of {calls}"
            );
        }
    }
}

/// `vm` holds keys fetched at 0 when `refresh` (the next fetch is due at [`REFRESH_MS`]), else
/// nothing yet (the lease key does not exist): the time its next tick fetches.
fn warm(vm: &mut JwksCache, h: &Host, refresh: bool) -> u64 {
    if !refresh {
        return 1_000;
    }
    vm.tick(0, h);
    answer(vm, h, 0, Some("200"), &jwks_body("a"));
    REFRESH_MS
}

/// A VM that looked at shared data before another VM's fetch ended (record written, lease
/// released) and takes the lease after it: it finds the new record and fetches nothing, at
/// every point of its tick where the answer can land.
#[test]
fn a_fetch_ending_during_another_vms_tick_is_not_repeated() {
    // The calls of vm2's tick while vm1's fetch is out.
    let calls = {
        let (_, [h1, h2], [mut vm1, mut vm2]) = vms(cache);
        vm1.tick(1_000, &h1);
        vm2.tick(1_020, &h2);
        h2.calls.get()
    };
    for at in 0..=calls {
        let (_, [h1, h2], [vm1, mut vm2]) = vms(cache);
        let (h1, vm1) = (Rc::new(h1), Rc::new(RefCell::new(vm1)));
        vm1.borrow_mut().tick(1_000, &*h1);
        assert_eq!(h1.fetches(), 1);
        let (h1c, vm1c) = (Rc::clone(&h1), Rc::clone(&vm1));
        h2.interleave(at, move || {
            answer(
                &mut vm1c.borrow_mut(),
                &h1c,
                1_010,
                Some("200"),
                &jwks_body("a"),
            );
        });
        vm2.tick(1_020, &h2);
        vm2.tick(1_070, &h2);
        let when = format!("the answer before call {at} of vm2's {calls}");
        assert!(h2.before_call.borrow().is_none(), "{when}: not run");
        assert_eq!(h2.fetches(), 0, "{when}");
        assert_eq!(state(&vm2), "ready", "{when}");
    }
}

/// A lease that expired while its holder's callout was out (the holder is slow, not dead):
/// the late holder's release must not free the lease another VM took over meanwhile.
#[test]
fn a_late_release_leaves_the_next_holders_lease_alone() {
    let (_, [h1, h2, h3], [mut vm1, mut vm2, mut vm3]) = vms(cache);
    vm1.tick(0, &h1);
    vm2.tick(6_001, &h2);
    assert_eq!(
        (h1.fetches(), h2.fetches()),
        (1, 1),
        "vm2 took the expired lease"
    );
    // vm1's answer arrives late (a failure, so vm3 would want to fetch at once).
    answer(&mut vm1, &h1, 6_100, None, "");
    vm3.tick(8_200, &h3);
    assert_eq!(h3.fetches(), 0, "vm2's lease still holds");
}

/// The age gauge's series name comes with its source (built once, not per tick), with the
/// age of the keys in seconds once there are keys.
#[test]
fn key_ages_name_each_sources_gauge() {
    let (_, [h], [mut vm]) = vms(cache);
    let series = crate::stats::series_name("meshguard_jwks_age_seconds", &[("jwks", URI)]);
    assert_eq!(vm.key_ages(0).collect::<Vec<_>>(), [(&*series, None)]);
    vm.tick(0, &h);
    answer(&mut vm, &h, 1_000, Some("200"), &jwks_body("a"));
    assert_eq!(
        vm.key_ages(8_500).collect::<Vec<_>>(),
        [(&*series, Some(7))]
    );
}

#[test]
fn reconfigure_keeps_keys_of_uris_that_stay() {
    let (_, [h], [mut vm]) = vms(cache);
    vm.tick(0, &h);
    answer(&mut vm, &h, 0, Some("200"), &jwks_body("a"));
    let other = RemoteJwks {
        uri: "https://other.example/jwks".into(),
        ..remote()
    };
    vm.configure(&[other.clone(), remote()], &JwksSettings::default());
    assert_eq!(state(&vm), "ready");
    assert!(matches!(vm.keys(&other.uri), KeyState::Pending));
    vm.configure(&[other], &JwksSettings::default());
    assert!(
        matches!(vm.keys(URI), KeyState::Failed),
        "a URI no longer configured"
    );
}

/// A reload while the first fetch is out (the URI moves to another index): the answer is
/// still taken, and nothing is fetched twice.
#[test]
fn reconfigure_while_a_fetch_is_in_flight_takes_its_answer() {
    let (_, [h], [mut vm]) = vms(cache);
    vm.tick(0, &h);
    assert_eq!(h.fetches(), 1);
    let other = RemoteJwks {
        uri: "https://other.example/jwks".into(),
        ..remote()
    };
    let settings = JwksSettings {
        refresh_interval: Duration::from_millis(REFRESH_MS),
        ..JwksSettings::default()
    };
    vm.configure(&[other.clone(), remote()], &settings);
    assert!(vm.fetching(), "the fetch is still awaited");
    assert!(answer(&mut vm, &h, 100, Some("200"), &jwks_body("a")));
    assert!(!vm.fetching());
    assert_eq!(state(&vm), "ready");
    // Later ticks fetch only the new URI, once.
    for now in (200..5_000).step_by(100) {
        vm.tick(now, &h);
    }
    let uris: Vec<String> = h
        .dispatched
        .borrow()
        .iter()
        .map(|(_, u)| u.clone())
        .collect();
    assert_eq!(uris, [URI.to_string(), other.uri]);
}

/// `on_configure` twice with the same configuration (Envoy may call it again on a root
/// context it reuses): keys, fetch times and a refetch in flight all survive.
#[test]
fn the_same_configuration_twice_changes_nothing() {
    let (_, [h], [mut vm]) = vms(cache);
    let settings = settings();
    vm.tick(0, &h);
    answer(&mut vm, &h, 10, Some("200"), &jwks_body("a"));
    vm.configure(&[remote()], &settings);
    vm.configure(&[remote()], &settings);
    assert_eq!(state(&vm), "ready");
    for now in (1_000..REFRESH_MS).step_by(1_000) {
        vm.tick(now, &h);
    }
    assert_eq!(h.fetches(), 1, "no refetch before the interval");
    // The refresh goes out; a reload meanwhile keeps waiting for its answer.
    vm.tick(REFRESH_MS + 10, &h);
    assert_eq!(h.fetches(), 2);
    vm.configure(&[remote()], &settings);
    vm.tick(REFRESH_MS + 20, &h);
    assert_eq!(h.fetches(), 2, "the refresh in flight is not sent again");
    assert!(answer(
        &mut vm,
        &h,
        REFRESH_MS + 30,
        Some("200"),
        &jwks_body("b")
    ));
    assert_eq!(*h.done.borrow(), [true, true]);
}

/// A new configuration's cache (Envoy gives each configuration its own root context, on the
/// canary VM and on every worker) loads the keys the process already fetched at configure
/// time: ready before its first tick, with no fetch and no write to shared data.
#[test]
fn load_shared_takes_fetched_keys_without_fetching_or_writing() {
    let (store, [h1, h2], [mut vm1, mut reloaded]) = vms(cache);
    vm1.tick(0, &h1);
    answer(&mut vm1, &h1, 10, Some("200"), &jwks_body("a"));
    let before = store.versions();
    assert_eq!(state(&reloaded), "pending");
    assert!(reloaded.load_shared(20, &h2));
    assert_eq!(state(&reloaded), "ready");
    assert!(!reloaded.waiting_for_first_keys());
    assert_eq!(before, store.versions(), "nothing written");
    assert_eq!(h2.fetches(), 0);
    // Loading again is a no-op, and ticks fetch nothing until the refresh interval.
    assert!(!reloaded.load_shared(30, &h2));
    for now in (1_000..REFRESH_MS).step_by(1_000) {
        reloaded.tick(now, &h2);
    }
    assert_eq!(h2.fetches(), 0);
    // Nothing in shared data yet (the first configuration ever): still pending, no fetch.
    let (empty, [h3], [mut first]) = vms(cache);
    assert!(!first.load_shared(0, &h3));
    assert_eq!((state(&first), h3.fetches()), ("pending", 0));
    assert!(empty.versions().is_empty());
}

#[test]
fn record_round_trip_and_garbage() {
    let rec = Record {
        fetched_at_ms: 12,
        attempt_at_ms: 34,
        ok: true,
        body: "{\"keys\":[]}\nsecond line",
    };
    let bytes = rec.encode();
    assert_eq!(Record::parse(&bytes), Some(rec));
    for bad in [
        &b""[..],
        b"mg1 1 2 1",
        b"mg2 1 2 1\n{}",
        b"mg1 x 2 1\n{}",
        b"mg1 1\n{}",
        b"\xff\n",
    ] {
        assert_eq!(Record::parse(bad), None, "{bad:?}");
    }
    // A garbage record in shared data is ignored, never a panic: the VM fetches itself.
    let (_, [h], [mut vm]) = vms(cache);
    h.set(&format!("meshguard.jwks.{URI}"), b"garbage", None);
    vm.tick(0, &h);
    assert_eq!(h.fetches(), 1);
}

const DOC: &str = "https://idp.example/realms/istio/.well-known/openid-configuration";

fn discovery_cache() -> JwksCache {
    let mut c = JwksCache::default();
    let mut settings = JwksSettings {
        refresh_interval: Duration::from_millis(REFRESH_MS),
        kid_refetch_cooldown: Duration::from_millis(COOLDOWN_MS),
        ..JwksSettings::default()
    };
    settings
        .clusters
        .insert("keys.idp.example".into(), "idp_keys".into());
    c.configure(
        &[RemoteJwks {
            uri: DOC.into(),
            cluster: "idp".into(),
            authority: "idp.example".into(),
            path: "/realms/istio/.well-known/openid-configuration".into(),
            timeout: Duration::from_secs(5),
            discovery: true,
        }],
        &settings,
    );
    c
}

fn doc(jwks_uri: &str) -> String {
    format!(r#"{{"issuer":"https://idp.example/realms/istio","jwks_uri":"{jwks_uri}"}}"#)
}

fn doc_state(c: &JwksCache) -> &'static str {
    match c.keys(DOC) {
        KeyState::Ready(_) => "ready",
        KeyState::Pending => "pending",
        KeyState::Failed => "failed",
    }
}

/// Discovery: the document, then its jwks_uri, under one lease and as one attempt; every
/// refresh (and a kid refetch) reads the document again, so a moved jwks_uri is followed.
#[test]
fn discovery_fetches_the_document_then_its_jwks_uri() {
    let (_, [h1, h2], [mut vm1, mut vm2]) = vms(discovery_cache);
    vm1.tick(0, &h1);
    vm2.tick(0, &h2);
    assert_eq!((h1.fetches(), h2.fetches()), (1, 0), "one lease");
    assert_eq!(h1.dispatched.borrow()[0].1, DOC);
    // The document answers: nothing usable yet, the key set is fetched next.
    let uri = "https://keys.idp.example/certs";
    assert!(!answer(&mut vm1, &h1, 10, Some("200"), &doc(uri)));
    assert_eq!(doc_state(&vm1), "pending");
    assert_eq!(h1.dispatched.borrow()[1].1, uri);
    assert_eq!(vm1.resolved_uri(DOC), Some(uri));
    assert!(answer(&mut vm1, &h1, 20, Some("200"), &jwks_body("a")));
    assert_eq!(doc_state(&vm1), "ready");
    assert_eq!(*h1.done.borrow(), [true]);
    vm2.tick(30, &h2);
    assert_eq!((doc_state(&vm2), h2.fetches()), ("ready", 0));
    // Refresh: the document again; it now names another key set (rotation by moving it).
    vm1.tick(REFRESH_MS + 20, &h1);
    assert_eq!(h1.dispatched.borrow()[2].1, DOC);
    let moved = "https://keys.idp.example/certs-v2";
    answer(&mut vm1, &h1, REFRESH_MS + 30, Some("200"), &doc(moved));
    assert_eq!(h1.dispatched.borrow()[3].1, moved);
    answer(&mut vm1, &h1, REFRESH_MS + 40, Some("200"), &jwks_body("b"));
    assert_eq!((doc_state(&vm1), h1.fetches()), ("ready", 4));
}

#[test]
fn discovery_failures_fail_closed_and_keep_stale_keys() {
    let (store, [h], [mut vm]) = vms(discovery_cache);
    vm.tick(0, &h);
    // No document: fail closed, retried after the backoff.
    assert!(answer(&mut vm, &h, 10, Some("404"), "not found"));
    assert_eq!(doc_state(&vm), "failed");
    assert_eq!(*h.done.borrow(), [false]);
    vm.tick(10 + RETRY_BACKOFF_MS, &h);
    assert_eq!(h.fetches(), 2);
    // A document without jwks_uri, then one whose jwks_uri is not a URL: failed attempts.
    assert!(answer(&mut vm, &h, 2_100, Some("200"), r#"{"issuer":"x"}"#));
    assert!(h.warnings.borrow().last().unwrap().contains("no jwks_uri"));
    vm.tick(2_100 + RETRY_BACKOFF_MS, &h);
    assert!(answer(&mut vm, &h, 4_200, Some("200"), &doc("ftp://nope")));
    assert_eq!(doc_state(&vm), "failed");
    // Then it works; a later refresh whose document fails keeps the stale keys.
    vm.tick(4_200 + RETRY_BACKOFF_MS, &h);
    answer(
        &mut vm,
        &h,
        6_300,
        Some("200"),
        &doc("https://keys.idp.example/certs"),
    );
    answer(&mut vm, &h, 6_400, Some("200"), &jwks_body("a"));
    assert_eq!(doc_state(&vm), "ready");
    vm.tick(6_400 + REFRESH_MS, &h);
    answer(&mut vm, &h, 6_500 + REFRESH_MS, None, "");
    assert_eq!(doc_state(&vm), "ready", "stale keys keep serving");
    // The key-set step failing is a failed attempt too (the lease is released).
    vm.tick(6_500 + REFRESH_MS + RETRY_BACKOFF_MS, &h);
    answer(
        &mut vm,
        &h,
        9_000 + REFRESH_MS,
        Some("200"),
        &doc("https://keys.idp.example/certs"),
    );
    assert!(answer(&mut vm, &h, 9_100 + REFRESH_MS, Some("503"), "x"));
    assert_eq!(doc_state(&vm), "ready");
    let lease = store.value(&format!("meshguard.jwks.lease.{DOC}"));
    assert_eq!(lease.as_deref(), Some(&b"0"[..]));
}
