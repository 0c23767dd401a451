//! A real HTTP external authorizer (Envoy ext_authz `http_service` protocol) for the CUSTOM
//! tests, shaped like Istio's sample `ext-authz` server: the decision comes from the
//! request header `x-ext-authz`, and that header can also ask for a fault, so one server
//! serves every case of a differential to both Envoys.
//!
//! `x-ext-authz` value (or, without it, `x-prefix-ext-authz`'s: a name a provider's
//! `includeRequestHeadersInCheck: [x-prefix-*]` forwards, as istiod's builder golden files
//! configure it) -> answer:
//! - `allow`: 200, `x-ext-authz-check-result: allowed`, `x-auth-request-user: <x-user or
//!   alice>`, `x-downstream-ok: yes`, `x-not-listed: no`;
//! - `redirect`: 302 to a login page with `set-cookie`, body `to login` (oauth2-proxy's way);
//! - `unauthorized`: 401 with `www-authenticate`;
//! - `remove`: 200 with `x-envoy-auth-headers-to-remove: x-secret`;
//! - `slow`: waits 1.5 s, then allows;
//! - `5xx`: 503; `garbage`: bytes that are not HTTP, then close; `huge`: 200 with a
//!   100 KiB header; `drop`: closes without answering;
//! - anything else (or absent): 403, body `denied by ext_authz`, `x-ext-authz-check-result:
//!   denied`.
//!
//! Every check it receives is recorded (method, target, headers, body).

use super::http::{read_request, write_response, Request, Response};
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub struct Authorizer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Authorizer {
    pub fn start(bind: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("authorizer-{addr}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("authorizer-conn".into())
                        .spawn(move || serve(conn, &s));
                }
            })?;
        Ok(Self { addr, seen, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The checks received so far, in arrival order.
    pub fn checks(&self) -> Vec<Request> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the recorded checks.
    pub fn clear(&self) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for Authorizer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Request>>) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_request(&mut reader) {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(req.clone());
        let with = |status: u16, headers: &[(&str, String)], body: &str| {
            let mut r = Response::new(status, "text/plain", body.as_bytes().to_vec());
            r.headers
                .extend(headers.iter().map(|(k, v)| (k.to_string(), v.clone())));
            r
        };
        let allow = || {
            with(
                200,
                &[
                    ("x-ext-authz-check-result", "allowed".into()),
                    (
                        "x-auth-request-user",
                        req.header("x-user").unwrap_or("alice").to_string(),
                    ),
                    ("x-downstream-ok", "yes".into()),
                    ("x-not-listed", "no".into()),
                ],
                "",
            )
        };
        let decision = req
            .header("x-ext-authz")
            .or_else(|| req.header("x-prefix-ext-authz"))
            .unwrap_or("");
        let resp = match decision {
            "allow" => allow(),
            "slow" => {
                std::thread::sleep(Duration::from_millis(1500));
                allow()
            }
            "redirect" => with(
                302,
                &[
                    ("location", "https://login.example/start".into()),
                    ("set-cookie", "csrf=1; Path=/".into()),
                    ("x-not-listed", "no".into()),
                ],
                "to login",
            ),
            "unauthorized" => with(
                401,
                &[("www-authenticate", "Bearer realm=\"ext\"".into())],
                "who are you?",
            ),
            "remove" => with(
                200,
                &[("x-envoy-auth-headers-to-remove", "x-secret".into())],
                "",
            ),
            "5xx" => with(503, &[], "oops"),
            "huge" => with(200, &[("x-huge", "h".repeat(100 << 10))], ""),
            "garbage" => {
                let _ = writer.write_all(b"this is not HTTP at all\r\n\r\n\x00\x01\x02");
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            "drop" => {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            _ => with(
                403,
                &[("x-ext-authz-check-result", "denied".into())],
                "denied by ext_authz",
            ),
        };
        if write_response(&mut writer, &resp, false, false).is_err() {
            return;
        }
    }
}
