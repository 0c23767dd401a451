//! The names of a client certificate in the order Envoy RBAC's `authenticated` principal
//! matcher tries them (source/extensions/filters/common/rbac/matchers.cc,
//! `AuthenticatedMatcher::matches`): every URI SAN, then every DNS SAN, then the subject.
//! A policy on any of them matches, so reading only the first URI SAN (all that
//! `connection.uri_san_peer_certificate` gives) would let a second SAN escape a DENY.
//!
//! The adapter reads the whole leaf from `connection.peer_certificate` (URL-encoded PEM,
//! Envoy 1.39+) and this module takes the SANs out of it. Envoy has already validated the
//! certificate; a document that does not parse yields no names (fail closed: principals do
//! not match, DENY on `notPrincipals` does).

use crate::jwt::der::{Der, CONTEXT_0, INTEGER, OID, SEQUENCE};
use crate::jwt::jwks::pem_decode;

/// `[3] EXPLICIT` around the extensions of a v3 certificate.
const CONTEXT_3: u8 = 0xa3;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
/// GeneralName `[2] IMPLICIT IA5String` and `[6] IMPLICIT IA5String`.
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;

/// SANs of one certificate, each list in certificate order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerSans {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
}

/// The SANs of the leaf in `connection.peer_certificate`'s value (percent-encoded PEM).
pub fn sans_from_url_encoded_pem(value: &[u8]) -> Option<PeerSans> {
    let pem = percent_decode(value)?;
    let der = pem_decode(std::str::from_utf8(&pem).ok()?, "CERTIFICATE")?;
    sans_from_der(&der)
}

/// The SANs of a DER X.509 certificate; `None` when it is not one.
pub fn sans_from_der(der: &[u8]) -> Option<PeerSans> {
    let mut outer = Der(der);
    let mut cert = outer.expect(SEQUENCE)?;
    let mut tbs = cert.expect(SEQUENCE)?;
    if tbs.peek_tag() == Some(CONTEXT_0) {
        tbs.any()?;
    }
    tbs.expect(INTEGER)?;
    for _ in 0..5 {
        // signature, issuer, validity, subject, subjectPublicKeyInfo
        tbs.expect(SEQUENCE)?;
    }
    let mut sans = PeerSans::default();
    while let Some((tag, contents)) = tbs.any() {
        if tag != CONTEXT_3 {
            continue; // issuerUniqueID / subjectUniqueID
        }
        let mut exts = Der(contents).expect(SEQUENCE)?;
        while !exts.is_empty() {
            let mut ext = exts.expect(SEQUENCE)?;
            let oid = ext.expect(OID)?.0;
            if ext.peek_tag() == Some(BOOLEAN) {
                ext.any()?;
            }
            let value = ext.expect(OCTET_STRING)?.0;
            if oid == SUBJECT_ALT_NAME {
                let mut names = Der(value).expect(SEQUENCE)?;
                while !names.is_empty() {
                    let (tag, name) = names.any()?;
                    let name = || String::from_utf8_lossy(name).into_owned();
                    match tag {
                        URI => sans.uris.push(name()),
                        DNS_NAME => sans.dns.push(name()),
                        _ => {}
                    }
                }
            }
        }
    }
    if !tbs.is_empty() {
        return None;
    }
    Some(sans)
}

/// `%XX` sequences decoded; anything else kept as it is. A malformed escape is an error.
fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if b == b'%' {
            let hi = hex(*value.get(i + 1)?)?;
            let lo = hex(*value.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshguard_devtools::certs::{Identity, IssueOptions, MeshCa};

    fn url_encode(pem: &str) -> String {
        pem.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn every_uri_and_dns_san_in_certificate_order() {
        let ca = MeshCa::new("cluster.local").unwrap();
        let opts = IssueOptions {
            uri_sans_before: vec!["https://not.spiffe/first".into()],
            uri_sans_after: vec!["spiffe://cluster.local/ns/admin/sa/root".into()],
            ..Default::default()
        };
        let issued = ca
            .issue_with(
                &Identity {
                    namespace: "foo",
                    service_account: "sleep",
                    dns_names: &["a.example", "b.example"],
                    ips: &["127.0.0.1".parse().unwrap()],
                },
                &opts,
            )
            .unwrap();
        let sans = sans_from_url_encoded_pem(url_encode(&issued.cert_pem).as_bytes()).unwrap();
        assert_eq!(
            sans.uris,
            [
                "https://not.spiffe/first",
                "spiffe://cluster.local/ns/foo/sa/sleep",
                "spiffe://cluster.local/ns/admin/sa/root"
            ]
        );
        assert_eq!(sans.dns, ["a.example", "b.example"]);
    }

    #[test]
    fn a_certificate_without_sans_has_none() {
        let ca = MeshCa::new("cluster.local").unwrap();
        let opts = IssueOptions {
            omit_spiffe: true,
            ..Default::default()
        };
        let id = Identity {
            namespace: "foo",
            service_account: "legacy",
            ..Default::default()
        };
        let issued = ca.issue_with(&id, &opts).unwrap();
        let sans = sans_from_url_encoded_pem(url_encode(&issued.cert_pem).as_bytes()).unwrap();
        assert_eq!(sans, PeerSans::default());
    }

    #[test]
    fn garbage_is_no_certificate() {
        for bad in [
            &b""[..],
            b"%",
            b"%4",
            b"%zz",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            b"not a pem",
        ] {
            assert_eq!(sans_from_url_encoded_pem(bad), None, "{bad:?}");
        }
        // Every truncation of a real certificate is refused, never a panic.
        let ca = MeshCa::new("cluster.local").unwrap();
        let issued = ca
            .issue(&Identity {
                namespace: "foo",
                service_account: "sleep",
                ..Default::default()
            })
            .unwrap();
        let der = pem_decode(&issued.cert_pem, "CERTIFICATE").unwrap();
        assert!(sans_from_der(&der).is_some());
        for n in 0..der.len() {
            assert_eq!(sans_from_der(&der[..n]), None, "{n}");
        }
    }
}
