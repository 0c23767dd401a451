//! Dev servers: a JWKS endpoint with a hit counter and fault injection, and an echo upstream
//! that reports which request (line and headers) reached it.

use super::http::{Handler, Request, Response, Server};
use super::oidc::Realm;
use serde_json::{json, Map, Value};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How the JWKS server misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Serve the key set.
    #[default]
    None,
    /// Drop every connection without answering.
    Down,
    /// Answer with this status and a short text body.
    Status(u16),
    /// Wait, then serve the key set.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Garbage,
    /// 200 with a valid-looking JSON body of about this many bytes.
    Huge(usize),
}

#[derive(Default)]
struct JwksState {
    jwks: Mutex<String>,
    fault: Mutex<Fault>,
    hits: AtomicUsize,
    paths: Mutex<Vec<String>>,
    /// OpenID realms answered before the key set (the demo's Keycloak-shaped issuer).
    realms: Mutex<Vec<Arc<Realm>>>,
}

/// Serves a JWKS document at every path (but a mounted realm's).
pub struct JwksServer {
    server: Server,
    state: Arc<JwksState>,
}

impl JwksServer {
    /// Starts on `bind` (e.g. `127.0.0.1:0`) serving `jwks` (a JSON document).
    pub fn start(bind: &str, jwks: String) -> io::Result<Self> {
        let state = Arc::new(JwksState {
            jwks: Mutex::new(jwks),
            ..Default::default()
        });
        let st = state.clone();
        let handler: Handler = Arc::new(move |req: &Request| {
            st.hits.fetch_add(1, Ordering::SeqCst);
            lock(&st.paths).push(req.target.clone());
            let fault = lock(&st.fault).clone();
            let jwks = || Response::new(200, "application/json", lock(&st.jwks).clone());
            match fault {
                Fault::None => {
                    let realms = lock(&st.realms).clone();
                    Some(
                        realms
                            .iter()
                            .find_map(|r| r.handle(req))
                            .unwrap_or_else(jwks),
                    )
                }
                Fault::Down => None,
                Fault::Status(code) => Some(Response::new(code, "text/plain", "injected fault")),
                Fault::Slow(d) => {
                    std::thread::sleep(d);
                    Some(jwks())
                }
                Fault::Garbage => Some(Response::new(200, "application/json", "{not json")),
                Fault::Huge(n) => Some(Response::new(200, "application/json", huge_jwks(n))),
            }
        });
        Ok(Self {
            server: Server::start(bind, handler)?,
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// How many requests arrived (whatever the fault).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// The request targets seen, in order.
    pub fn paths(&self) -> Vec<String> {
        lock(&self.state.paths).clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
    }

    /// Answers `realm`'s discovery document and key set from now on.
    pub fn mount(&self, realm: Arc<Realm>) {
        lock(&self.state.realms).push(realm);
    }

    /// Replaces the served key set (key rotation).
    pub fn set_jwks(&self, jwks: String) {
        *lock(&self.state.jwks) = jwks;
    }
}

/// A poisoned lock only means another handler thread panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `{"keys":[{"kty":"oct","k":"AAAA..."}]}` of about `n` bytes.
fn huge_jwks(n: usize) -> String {
    let pad = n.saturating_sub(40);
    format!(r#"{{"keys":[{{"kty":"oct","k":"{}"}}]}}"#, "A".repeat(pad))
}

/// An upstream that answers 200 with a JSON description of the request it received:
/// `{"method","path","version","headers":{name: value},"body"}` (header names lower-cased,
/// repeated headers joined with `,`).
pub struct EchoUpstream {
    server: Server,
}

impl EchoUpstream {
    pub fn start(bind: &str) -> io::Result<Self> {
        let handler: Handler = Arc::new(|req: &Request| Some(Response::json(200, &echo(req))));
        Ok(Self {
            server: Server::start(bind, handler)?,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }
}

/// The echo document for `req`.
pub fn echo(req: &Request) -> Value {
    let mut headers = Map::new();
    for (k, v) in &req.headers {
        let joined = match headers.get(k).and_then(Value::as_str) {
            Some(prev) => format!("{prev},{v}"),
            None => v.clone(),
        };
        headers.insert(k.clone(), Value::String(joined));
    }
    json!({
        "method": req.method,
        "path": req.target,
        "version": req.version,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.body),
    })
}

#[cfg(test)]
mod tests {
    use super::super::http::{get, send, Call};
    use super::*;

    #[test]
    fn jwks_faults_and_hits() {
        let srv = JwksServer::start("127.0.0.1:0", r#"{"keys":[]}"#.into()).unwrap();
        assert_eq!(get(srv.addr(), "/jwks").unwrap().text(), r#"{"keys":[]}"#);
        srv.set_fault(Fault::Status(503));
        assert_eq!(get(srv.addr(), "/jwks").unwrap().status, 503);
        srv.set_fault(Fault::Garbage);
        assert!(get(srv.addr(), "/").unwrap().json_body().is_err());
        srv.set_fault(Fault::Huge(100_000));
        let big = get(srv.addr(), "/").unwrap();
        assert!(big.body.len() >= 99_000 && big.json_body().is_ok());
        srv.set_fault(Fault::Down);
        assert!(get(srv.addr(), "/").is_err());
        srv.set_fault(Fault::Slow(Duration::from_millis(50)));
        srv.set_jwks(r#"{"keys":[1]}"#.into());
        assert_eq!(get(srv.addr(), "/").unwrap().text(), r#"{"keys":[1]}"#);
        assert_eq!(srv.hits(), 6);
        assert_eq!(srv.paths()[0], "/jwks");
    }

    #[test]
    fn echo_reports_the_request() {
        let srv = EchoUpstream::start("127.0.0.1:0").unwrap();
        let resp = send(
            srv.addr(),
            &Call::get("/p?q=1")
                .header("x-a", "1")
                .header("x-a", "2")
                .method("PUT")
                .body(b"b"),
        )
        .unwrap();
        let v = resp.json_body().unwrap();
        assert_eq!(v["method"], "PUT");
        assert_eq!(v["path"], "/p?q=1");
        assert_eq!(v["headers"]["x-a"], "1,2");
        assert_eq!(v["body"], "b");
    }
}
