//! Load whose every answer is checked: keep-alive HTTP/1.1 connections, each in a closed
//! loop over a *phase*'s cases (a request and the status it must get), a *plan* that moves
//! from phase to phase while the load runs (a key rotation changes the requests, a policy
//! reload the expected statuses), and a sampler of VM memory and Envoy RSS. Shared by the
//! reload end-to-end test and `make soak`.
//!
//! During a policy change both the old and the new phase's status are accepted for a bounded
//! window (the time the new policies are allowed to take, e.g. one second), and only the new
//! one after it: a request the old policies still decide after the window is wrong.

use super::http::{self, Response};
use super::Result;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `GET path` with an optional bearer token, keep-alive.
pub fn get_request(path: &str, host: &str, token: Option<&str>) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n");
    if let Some(t) = token {
        r.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// A keep-alive client connection, one request in flight at a time.
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    /// Connections opened again after the server closed an idle one.
    pub reconnects: u64,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            conn: None,
            buf: Vec::with_capacity(8192),
            reconnects: 0,
        }
    }

    /// Sends `request` and reads the whole response. A reused connection that the server
    /// closed before answering is opened again and the (idempotent) request sent once more,
    /// as HTTP clients do; any other failure is an error.
    pub fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.exchange(request) {
            Err((e, false)) if reused => {
                self.reconnects += 1;
                self.exchange(request).map_err(|(e2, _)| {
                    io::Error::new(
                        e2.kind(),
                        format!("{e2} (after {e} on a reused connection)"),
                    )
                })
            }
            other => other.map_err(|(e, _)| e),
        }
    }

    /// The error carries whether any response byte had arrived.
    fn exchange(&mut self, request: &[u8]) -> std::result::Result<Response, (io::Error, bool)> {
        if self.conn.is_none() {
            let c = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(|e| (e, false))?;
            let _ = c.set_nodelay(true);
            c.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| (e, false))?;
            self.conn = Some(c);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err((io::Error::other("no connection"), false));
        };
        if let Err(e) = conn.write_all(request) {
            self.conn = None;
            return Err((e, false));
        }
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match conn.read(&mut chunk) {
                Ok(0) => {
                    self.conn = None;
                    let got = !self.buf.is_empty();
                    return Err((
                        io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
                        got,
                    ));
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(resp) = http::complete_response(&self.buf) {
                        if resp
                            .header("connection")
                            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                        {
                            self.conn = None;
                        }
                        return Ok(resp);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.conn = None;
                    let got = !self.buf.is_empty();
                    return Err((e, got));
                }
            }
        }
    }
}

/// One kind of request and the status it must get.
#[derive(Debug, Clone)]
pub struct Case {
    /// What it is, e.g. `valid /headers` (never the token).
    pub kind: String,
    pub request: Vec<u8>,
    pub expect: u16,
}

/// The cases the load cycles through while the phase is current.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub cases: Vec<Case>,
}

impl Phase {
    /// The same requests with other expected statuses (`expect(kind, old)`), for a policy
    /// change: the requests stay comparable case by case.
    pub fn with_expectations(&self, name: &str, expect: impl Fn(&Case) -> u16) -> Phase {
        Phase {
            name: name.to_string(),
            cases: self
                .cases
                .iter()
                .map(|c| Case {
                    expect: expect(c),
                    ..c.clone()
                })
                .collect(),
        }
    }
}

/// The current phase, and during a change the next one, whose statuses are also accepted.
pub struct Plan {
    state: RwLock<(Arc<Phase>, Option<Arc<Phase>>)>,
    /// When the change in progress began.
    changed_at: RwLock<Option<Instant>>,
}

impl Plan {
    pub fn new(phase: Phase) -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::new((Arc::new(phase), None)),
            changed_at: RwLock::new(None),
        })
    }

    fn snapshot(&self) -> (Arc<Phase>, Option<Arc<Phase>>) {
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        (Arc::clone(&st.0), st.1.clone())
    }

    fn changed_at(&self) -> Option<Instant> {
        *self
            .changed_at
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn current(&self) -> Arc<Phase> {
        self.snapshot().0
    }

    /// From now on `next`'s statuses are accepted as well as the current ones.
    pub fn begin_change(&self, next: Phase) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        st.1 = Some(Arc::new(next));
        *self
            .changed_at
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// The change is over: only the next phase's statuses are accepted.
    pub fn end_change(&self) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(next) = st.1.take() {
            st.0 = next;
        }
    }

    /// Switches at once (the requests change, the statuses do not).
    pub fn set(&self, phase: Phase) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        *st = (Arc::new(phase), None);
    }
}

/// What the load saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: u64,
    /// Answered with the expected status.
    pub right: u64,
    /// Answered with another status (5xx included).
    pub wrong: u64,
    /// Answered 5xx.
    pub server_errors: u64,
    /// No answer (connection refused, reset, timeout).
    pub transport_errors: u64,
    pub reconnects: u64,
    /// Requests answered with the status of the phase being changed to, during a change.
    pub answered_by_next: u64,
    /// The latest answer, after a change began, that only the old phase explains (how long
    /// the old policies kept deciding some request), over all changes.
    pub last_old_answer: Option<Duration>,
    /// kind -> (right, wrong).
    pub by_kind: BTreeMap<String, (u64, u64)>,
    /// The first few failures, described.
    pub examples: Vec<String>,
}

impl Tally {
    /// Wrong answers and unanswered requests.
    pub fn failed(&self) -> u64 {
        self.wrong + self.transport_errors
    }

    fn merge(&mut self, o: Tally) {
        self.sent += o.sent;
        self.right += o.right;
        self.wrong += o.wrong;
        self.server_errors += o.server_errors;
        self.transport_errors += o.transport_errors;
        self.reconnects += o.reconnects;
        self.answered_by_next += o.answered_by_next;
        self.last_old_answer = self.last_old_answer.max(o.last_old_answer);
        for (k, (r, w)) in o.by_kind {
            let e = self.by_kind.entry(k).or_default();
            e.0 += r;
            e.1 += w;
        }
        for ex in o.examples {
            if self.examples.len() < 20 {
                self.examples.push(ex);
            }
        }
    }
}

/// Closed-loop load on `connections` keep-alive connections until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    handles: Vec<JoinHandle<Tally>>,
    started: Instant,
}

impl Load {
    pub fn start(addr: SocketAddr, plan: Arc<Plan>, connections: usize) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for c in 0..connections {
            let (stop, sent, failed, plan) = (
                Arc::clone(&stop),
                Arc::clone(&sent),
                Arc::clone(&failed),
                Arc::clone(&plan),
            );
            handles.push(
                std::thread::Builder::new()
                    .name(format!("load-{c}"))
                    .spawn(move || run_connection(addr, &plan, c, &stop, &sent, &failed))?,
            );
        }
        Ok(Self {
            stop,
            sent,
            failed,
            handles,
            started: Instant::now(),
        })
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Wrong or unanswered so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every connection and adds up what they saw.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for h in self.handles {
            match h.join() {
                Ok(t) => total.merge(t),
                Err(_) => {
                    total.transport_errors += 1;
                    total.examples.push("a load thread panicked".into());
                }
            }
        }
        total
    }
}

fn run_connection(
    addr: SocketAddr,
    plan: &Plan,
    offset: usize,
    stop: &AtomicBool,
    sent: &AtomicU64,
    failed: &AtomicU64,
) -> Tally {
    let mut conn = KeepAlive::new(addr);
    let mut t = Tally::default();
    let mut k = offset;
    while !stop.load(Ordering::Relaxed) {
        let (cur, next) = plan.snapshot();
        let Some(case) = cur.cases.get(k % cur.cases.len().max(1)) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let alt = next
            .as_ref()
            .and_then(|n| n.cases.get(k % n.cases.len().max(1)));
        k = k.wrapping_add(1);
        t.sent += 1;
        sent.fetch_add(1, Ordering::Relaxed);
        let entry = t.by_kind.entry(case.kind.clone()).or_default();
        match conn.send(&case.request) {
            Ok(resp) => {
                let by_next = alt.is_some_and(|a| a.expect == resp.status);
                if resp.status >= 500 {
                    t.server_errors += 1;
                }
                if resp.status == case.expect || by_next {
                    t.right += 1;
                    entry.0 += 1;
                    if by_next && resp.status != case.expect {
                        t.answered_by_next += 1;
                    }
                    let old_only = alt.is_some_and(|a| a.expect != resp.status);
                    if let (true, Some(at)) = (old_only, plan.changed_at()) {
                        t.last_old_answer = t.last_old_answer.max(Some(at.elapsed()));
                    }
                } else {
                    t.wrong += 1;
                    entry.1 += 1;
                    failed.fetch_add(1, Ordering::Relaxed);
                    if t.examples.len() < 20 {
                        let body = resp.text();
                        t.examples.push(format!(
                            "{} (phase {}): got {}, want {}{}: {}",
                            case.kind,
                            cur.name,
                            resp.status,
                            case.expect,
                            alt.map(|a| format!(" or {}", a.expect)).unwrap_or_default(),
                            body.chars().take(120).collect::<String>()
                        ));
                    }
                }
            }
            Err(e) => {
                t.transport_errors += 1;
                entry.1 += 1;
                failed.fetch_add(1, Ordering::Relaxed);
                if t.examples.len() < 20 {
                    t.examples.push(format!(
                        "{} (phase {}): no answer: {e}",
                        case.kind, cur.name
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    t.reconnects = conn.reconnects;
    t
}

/// One memory reading.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since sampling started.
    pub secs: f64,
    /// The `meshguard.vm.memory_bytes` gauge (0 if unreadable).
    pub vm_bytes: u64,
    /// Envoy's resident set (kB, /proc/PID/status VmRSS; 0 if unreadable).
    pub rss_kb: u64,
}

/// The resident set of `pid` in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// meshguard's VM memory gauge from the admin interface.
pub fn vm_memory_bytes(admin: SocketAddr) -> Option<u64> {
    let resp = http::get(admin, "/stats?filter=meshguard.vm.memory_bytes").ok()?;
    resp.text()
        .lines()
        .find(|l| l.contains("meshguard.vm.memory_bytes"))
        .and_then(|l| l.rsplit_once(": "))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Samples VM memory and Envoy RSS every `every` until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    pub fn start(admin: SocketAddr, pid: u32, every: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let t0 = Instant::now();
                let mut out = Vec::new();
                let mut next = t0;
                while !flag.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        out.push(Sample {
                            secs: t0.elapsed().as_secs_f64(),
                            vm_bytes: vm_memory_bytes(admin).unwrap_or(0),
                            rss_kb: rss_kb(pid).unwrap_or(0),
                        });
                        next += every;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                out
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    pub fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// Whether a memory curve is flat: the largest value in the last 30% of the run is at most
/// the largest value in the window from 10% to 40% of it (after warm-up) plus `slack`
/// (a fraction of that value) plus `abs`. Returns (baseline, end, flat).
pub fn flat(values: &[u64], slack: f64, abs: u64) -> (u64, u64, bool) {
    let n = values.len();
    if n < 5 {
        return (0, 0, false);
    }
    let window = |from: f64, to: f64| {
        let (a, b) = (
            (n as f64 * from) as usize,
            ((n as f64 * to) as usize).max(1),
        );
        values
            .get(a..b.min(n))
            .and_then(|s| s.iter().max().copied())
            .unwrap_or(0)
    };
    let base = window(0.1, 0.4);
    let end = window(0.7, 1.0);
    let limit = base as f64 * (1.0 + slack) + abs as f64;
    (base, end, base > 0 && end as f64 <= limit)
}

#[cfg(test)]
mod tests {
    use super::super::http::{Request, Server};
    use super::*;

    #[test]
    fn checks_answers_across_a_change() {
        // A server answering 200 on /a and 403 on /b.
        let srv = Server::start(
            "127.0.0.1:0",
            Arc::new(|req: &Request| {
                let status = if req.target == "/a" { 200 } else { 403 };
                Some(Response::new(status, "text/plain", "x"))
            }),
        )
        .unwrap();
        let case = |kind: &str, path: &str, expect| Case {
            kind: kind.into(),
            request: get_request(path, "h", None),
            expect,
        };
        let phase = Phase {
            name: "one".into(),
            cases: vec![case("a", "/a", 200), case("b", "/b", 403)],
        };
        let plan = Plan::new(phase.clone());
        let load = Load::start(srv.addr(), Arc::clone(&plan), 2).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // Expect /b to turn 200: accepted both ways during the change, wrong after it.
        plan.begin_change(phase.with_expectations("two", |_| 200));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(load.failed(), 0);
        plan.end_change();
        std::thread::sleep(Duration::from_millis(100));
        let t = load.stop();
        assert!(t.sent > 20, "{t:?}");
        assert_eq!(t.transport_errors, 0, "{t:?}");
        assert!(t.wrong > 0 && t.by_kind["b"].1 == t.wrong, "{t:?}");
        assert_eq!(t.by_kind["a"].1, 0);
        assert!(
            t.examples[0].contains("got 403, want 200"),
            "{:?}",
            t.examples
        );
    }

    #[test]
    fn flat_or_growing() {
        let flat_curve: Vec<u64> = (0..20).map(|i| if i < 2 { 50 } else { 100 }).collect();
        assert!(flat(&flat_curve, 0.05, 0).2);
        let growing: Vec<u64> = (0..20).map(|i| 100 + i * 10).collect();
        assert!(!flat(&growing, 0.05, 0).2);
        assert!(!flat(&[1, 2], 0.0, 0).2);
    }
}
