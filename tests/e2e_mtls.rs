//! End-to-end: the shipped sidecar-inbound config (mTLS listener + PERMISSIVE plaintext
//! chain) with client certificates carrying SPIFFE URI SANs; requests sent with curl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use meshguard_devtools::certs::{self, Identity, MeshCa};
use meshguard_devtools::http::{Call, Response};
use serde_json::json;
use std::path::PathBuf;

/// The shipped cert set (ca, server for foo/httpbin, client foo/sleep) plus more clients:
/// bar/sleep, istio-system/ingressgateway, foo/admin, and foo/sleep from an untrusted CA.
fn cert_dir(name: &str) -> PathBuf {
    let dir = workdir(&format!("{name}-certs"));
    let ca = certs::write_demo_set(&dir).unwrap();
    for (ns, sa, file) in [
        ("bar", "sleep", "bar-sleep"),
        ("istio-system", "ingressgateway", "gateway"),
        ("foo", "admin", "admin"),
    ] {
        ca.issue(&Identity {
            namespace: ns,
            service_account: sa,
            ..Default::default()
        })
        .unwrap()
        .write(&dir, file)
        .unwrap();
    }
    let rogue = MeshCa::new("cluster.local").unwrap();
    rogue
        .issue(&Identity {
            namespace: "foo",
            service_account: "sleep",
            ..Default::default()
        })
        .unwrap()
        .write(&dir, "rogue-sleep")
        .unwrap();
    dir
}

struct Sidecar {
    group: Group,
    certs: PathBuf,
}

impl Sidecar {
    fn start(p: &Prereqs, name: &str, filter: Option<String>) -> Sidecar {
        let certs = cert_dir(name);
        let mut spec = Spec::new(name, Shipped::SidecarInbound);
        spec.filter = filter;
        spec.certs = Some(certs.clone());
        Sidecar {
            group: Group::start(p, spec),
            certs,
        }
    }

    /// A request over mTLS as `client` (file stem of its cert/key), or plain TLS for `None`.
    fn tls(&self, client: Option<&str>, method: &str, path: &str) -> Result<Response, String> {
        let files = client.map(|c| {
            (
                self.file(&format!("{c}.pem")),
                self.file(&format!("{c}-key.pem")),
            )
        });
        curl_tls(
            self.group.listener,
            path,
            &self.file("ca.pem"),
            files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            method,
        )
    }

    fn mtls(&self, client: &str, method: &str, path: &str) -> Response {
        self.tls(Some(client), method, path)
            .unwrap_or_else(|e| panic!("{client} {method} {path}: {e}"))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.certs.join(name)
    }
}

const DENIED: &str = "RBAC: access denied";

/// filters/sidecar.json as shipped: PeerAuthentication STRICT, ALLOW foo/sleep (GET, HEAD,
/// POST) and namespace istio-system (GET), DENY /admin except foo/admin.
#[test]
fn shipped_sidecar_policies() {
    let p = require!();
    let s = Sidecar::start(&p, "sidecar-shipped", None);

    let seen = expect_upstream(&s.mtls("sleep", "GET", "/headers"), "foo/sleep GET");
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/foo/sa/sleep"),
        "the app learns the verified caller from XFCC: {seen}"
    );
    expect_upstream(&s.mtls("sleep", "POST", "/post"), "foo/sleep POST");
    expect_reply(
        &s.mtls("sleep", "DELETE", "/x"),
        403,
        DENIED,
        "foo/sleep DELETE",
    );
    expect_reply(
        &s.mtls("bar-sleep", "GET", "/headers"),
        403,
        DENIED,
        "bar/sleep",
    );
    expect_upstream(
        &s.mtls("gateway", "GET", "/headers"),
        "namespace istio-system",
    );
    expect_reply(
        &s.mtls("gateway", "POST", "/post"),
        403,
        DENIED,
        "istio-system POST",
    );
    expect_reply(
        &s.mtls("sleep", "GET", "/admin"),
        403,
        DENIED,
        "DENY /admin for foo/sleep",
    );

    // Plaintext on the same port: refused by PeerAuthentication STRICT, whatever the path.
    let plain = s.group.get("/headers");
    expect_status(&plain, 403, "plaintext under STRICT");
    assert!(
        plain.text().to_lowercase().contains("mtls") || plain.text().contains("mutual TLS"),
        "the body says mTLS is required: {:?}",
        plain.text()
    );
    // TLS without a client certificate, or one from another CA: the handshake fails.
    assert!(
        s.tls(None, "GET", "/headers").is_err(),
        "no client certificate"
    );
    assert!(
        s.tls(Some("rogue-sleep"), "GET", "/headers").is_err(),
        "client certificate from an untrusted CA"
    );
    assert!(
        s.group.counter("peer.denied") >= 1,
        "{:?}",
        s.group.counters()
    );
}

/// `principals` and `namespaces` (and `notPrincipals`) against the certificate's SPIFFE ID;
/// the same requests in plaintext (PERMISSIVE here) have no principal and are denied.
#[test]
fn principals_and_namespaces() {
    let p = require!();
    let workload = json!({ "namespace": "foo", "labels": { "app": "httpbin" } });
    let allow = authz(
        "allow",
        "foo",
        "ALLOW",
        json!([
            { "from": [{ "source": { "principals": ["cluster.local/ns/foo/sa/sleep"] } }],
              "to": [{ "operation": { "paths": ["/by-principal"] } }] },
            { "from": [{ "source": { "namespaces": ["bar"] } }],
              "to": [{ "operation": { "paths": ["/by-namespace"] } }] },
            { "from": [{ "source": { "principals": ["*"] } }],
              "to": [{ "operation": { "paths": ["/any-peer"] } }] },
            { "from": [{ "source": { "notPrincipals": ["*"] } }],
              "to": [{ "operation": { "paths": ["/anonymous"] } }] },
            { "from": [{ "source": { "principals": ["cluster.local/ns/istio-system/*"] } }],
              "to": [{ "operation": { "paths": ["/prefix"] } }] },
            { "from": [{ "source": { "ipBlocks": ["127.0.0.1"] } }],
              "to": [{ "operation": { "paths": ["/by-tcp-peer"] } }] },
            { "from": [{ "source": { "remoteIpBlocks": ["192.0.2.0/24"] } }],
              "to": [{ "operation": { "paths": ["/by-xff-client"] } }] }
        ]),
    );
    // The TCP peer is 127.0.0.1: a spoofed x-forwarded-for must not make this fire.
    let deny_ten = authz(
        "deny-ten",
        "foo",
        "DENY",
        json!([{ "from": [{ "source": { "ipBlocks": ["10.0.0.0/8"] } }] }]),
    );
    let permissive = resource(
        "PeerAuthentication",
        "default",
        "istio-system",
        json!({ "mtls": { "mode": "PERMISSIVE" } }),
    );
    let s = Sidecar::start(
        &p,
        "sidecar-principals",
        Some(filter(workload, vec![permissive, allow, deny_ten])),
    );

    // ipBlocks read the TCP peer (the shipped set_filter_state filter), remoteIpBlocks the
    // x-forwarded-for client (use_remote_address: false, as Istio's inbound listener).
    let xff = |path: &str, client: &str| {
        s.group
            .send(&Call::get(path).header("x-forwarded-for", client.to_string()))
    };
    expect_upstream(
        &xff("/by-tcp-peer", "10.9.9.9"),
        "ipBlocks: XFF is not the peer",
    );
    expect_upstream(&s.group.get("/by-tcp-peer"), "ipBlocks: the TCP peer");
    expect_upstream(
        &xff("/by-xff-client", "192.0.2.7"),
        "remoteIpBlocks: XFF client",
    );
    expect_reply(
        &xff("/by-xff-client", "198.51.100.1"),
        403,
        DENIED,
        "remoteIpBlocks: other client",
    );
    expect_upstream(
        &xff("/by-tcp-peer", "127.0.0.1"),
        "ipBlocks with a matching XFF",
    );

    expect_upstream(
        &s.mtls("sleep", "GET", "/by-principal"),
        "foo/sleep by principal",
    );
    expect_reply(
        &s.mtls("bar-sleep", "GET", "/by-principal"),
        403,
        DENIED,
        "bar/sleep by principal",
    );
    expect_upstream(
        &s.mtls("bar-sleep", "GET", "/by-namespace"),
        "bar/sleep by namespace",
    );
    expect_reply(
        &s.mtls("sleep", "GET", "/by-namespace"),
        403,
        DENIED,
        "foo/sleep by namespace",
    );
    expect_upstream(
        &s.mtls("admin", "GET", "/any-peer"),
        "principals * with mTLS",
    );
    expect_reply(
        &s.mtls("admin", "GET", "/anonymous"),
        403,
        DENIED,
        "notPrincipals * with mTLS",
    );
    expect_upstream(
        &s.mtls("gateway", "GET", "/prefix"),
        "principal prefix match",
    );

    // The same requests in plaintext: no peer identity.
    for path in ["/by-principal", "/by-namespace", "/any-peer", "/prefix"] {
        expect_reply(
            &s.group.get(path),
            403,
            DENIED,
            &format!("plaintext {path}"),
        );
    }
    expect_upstream(
        &s.group.get("/anonymous"),
        "plaintext matches notPrincipals *",
    );
    // A forged XFCC header from a plaintext client neither reaches the app nor counts.
    let seen = expect_upstream(
        &s.group.send(&Call::get("/anonymous").header(
            "x-forwarded-client-cert",
            "By=x;URI=spiffe://cluster.local/ns/foo/sa/sleep",
        )),
        "plaintext with forged XFCC",
    );
    assert!(
        seen["headers"].get("x-forwarded-client-cert").is_none(),
        "{seen}"
    );
    expect_reply(
        &s.group.send(&Call::get("/by-principal").header(
            "x-forwarded-client-cert",
            "By=x;URI=spiffe://cluster.local/ns/foo/sa/sleep",
        )),
        403,
        DENIED,
        "forged XFCC gives no principal",
    );
}
