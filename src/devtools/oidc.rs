//! A Keycloak-shaped OpenID issuer for the discovery tests and the demo: a realm path
//! (`/auth/realms/<realm>`), its discovery document at `.well-known/openid-configuration`
//! naming `jwks_uri` = `<realm>/protocol/openid-connect/certs` (as Istio's Keycloak
//! examples configure it), a key set that can be rotated, per-path hit counts, and a switch
//! that makes the discovery document fail.

use super::http::{Handler, Request, Response, Server};
use serde_json::json;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

struct State {
    jwks: Mutex<String>,
    hits: Mutex<BTreeMap<String, usize>>,
    doc_fails: AtomicBool,
    /// The `jwks_uri` the document names (absolute).
    jwks_uri: Mutex<String>,
}

/// One realm: its discovery document and key set, answered from any server that mounts it
/// (its own in [`OidcIssuer`], or the demo's JWKS server: [`super::servers::JwksServer::mount`]).
pub struct Realm {
    state: State,
    /// `http://<host>/auth/realms/<realm>` as tokens carry it.
    pub issuer: String,
    realm_path: String,
}

impl Realm {
    /// Realm `realm` of issuer host `host` (host[:port], what tokens and URIs name) with key
    /// set `jwks`.
    pub fn new(host: &str, realm: &str, jwks: String) -> Arc<Self> {
        let issuer = format!("http://{host}/auth/realms/{realm}");
        Arc::new(Self {
            state: State {
                jwks: Mutex::new(jwks),
                hits: Mutex::new(BTreeMap::new()),
                doc_fails: AtomicBool::new(false),
                jwks_uri: Mutex::new(format!("{issuer}{CERTS}")),
            },
            issuer,
            realm_path: format!("/auth/realms/{realm}"),
        })
    }

    /// The answer for `req` when it is this realm's document or key set (counted either way).
    pub fn handle(&self, req: &Request) -> Option<Response> {
        let st = &self.state;
        *lock(&st.hits).entry(req.target.clone()).or_default() += 1;
        if req.target == format!("{}{DISCOVERY}", self.realm_path) {
            if st.doc_fails.load(Ordering::SeqCst) {
                return Some(Response::new(404, "text/plain", "no such realm"));
            }
            let iss = &self.issuer;
            return Some(Response::json(
                200,
                &json!({
                    "issuer": iss,
                    "authorization_endpoint": format!("{iss}/protocol/openid-connect/auth"),
                    "token_endpoint": format!("{iss}/protocol/openid-connect/token"),
                    "jwks_uri": *lock(&st.jwks_uri),
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }),
            ));
        }
        let uri = lock(&st.jwks_uri).clone();
        if uri.ends_with(&req.target) {
            return Some(Response::new(
                200,
                "application/json",
                lock(&st.jwks).clone(),
            ));
        }
        None
    }

    /// Requests seen for `path` (exact target).
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.state.hits).get(path).copied().unwrap_or(0)
    }

    /// The issuer's path (`/auth/realms/<realm>`).
    pub fn realm_path(&self) -> String {
        self.realm_path.clone()
    }

    /// Key rotation: the key set served from now on.
    pub fn set_jwks(&self, jwks: String) {
        *lock(&self.state.jwks) = jwks;
    }

    /// Moves the key set to another `jwks_uri` (the document names the new one).
    pub fn set_jwks_uri(&self, uri: String) {
        *lock(&self.state.jwks_uri) = uri;
    }

    /// Makes the discovery document answer 404 (or work again).
    pub fn fail_discovery(&self, fail: bool) {
        self.state.doc_fails.store(fail, Ordering::SeqCst);
    }
}

/// A realm on a server of its own (404 for anything else).
pub struct OidcIssuer {
    server: Server,
    realm: Arc<Realm>,
    /// `http://<host>/auth/realms/<realm>` as tokens carry it.
    pub issuer: String,
}

/// The discovery document's path under an issuer path.
pub const DISCOVERY: &str = "/.well-known/openid-configuration";
/// Keycloak's key-set path under a realm.
pub const CERTS: &str = "/protocol/openid-connect/certs";

impl OidcIssuer {
    /// Serves realm `realm` for issuer host `host` (what tokens and URIs name; the test maps
    /// it to this server's cluster) with key set `jwks`.
    pub fn start(bind: &str, host: &str, realm: &str, jwks: String) -> io::Result<Self> {
        let realm = Realm::new(host, realm, jwks);
        let r = realm.clone();
        let handler: Handler = Arc::new(move |req: &Request| {
            Some(
                r.handle(req)
                    .unwrap_or_else(|| Response::new(404, "text/plain", "not found")),
            )
        });
        Ok(Self {
            server: Server::start(bind, handler)?,
            issuer: realm.issuer.clone(),
            realm,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn hits(&self, path: &str) -> usize {
        self.realm.hits(path)
    }

    pub fn realm_path(&self) -> String {
        self.realm.realm_path()
    }

    pub fn set_jwks(&self, jwks: String) {
        self.realm.set_jwks(jwks);
    }

    pub fn set_jwks_uri(&self, uri: String) {
        self.realm.set_jwks_uri(uri);
    }

    pub fn fail_discovery(&self, fail: bool) {
        self.realm.fail_discovery(fail);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
