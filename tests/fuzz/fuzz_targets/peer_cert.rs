//! The client certificate's SANs as the adapter reads them from Envoy's
//! `connection.peer_certificate` (URL-encoded PEM) and from raw DER: arbitrary bytes must give
//! names or `None`, never a panic or a hang.
//!
//! Oracle: the URL-encoded path and the DER path agree on a DER document wrapped as PEM and
//! percent-encoded here; every name is one the DER contains.

#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use meshguard_engine::{sans_from_der, sans_from_url_encoded_pem};

fuzz_target!(|data: &[u8]| {
    let _ = sans_from_url_encoded_pem(data);
    let from_der = sans_from_der(data);
    // The same bytes as Envoy would hand them over: PEM, then percent-encoded.
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let encoded: String = pem
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let from_pem = sans_from_url_encoded_pem(encoded.as_bytes());
    if !data.is_empty() {
        assert_eq!(from_der, from_pem, "DER and URL-encoded PEM disagree");
    }
    if let Some(sans) = from_der {
        for name in sans.uris.iter().chain(&sans.dns) {
            assert!(
                data.windows(name.len().max(1)).any(|w| String::from_utf8_lossy(w) == *name)
                    || name.contains('\u{fffd}'),
                "a name that is not in the certificate: {name:?}"
            );
        }
    }
});
