//! Envoy's `verify_signature` foreign function (BoringSSL) as the engine's
//! [`SignatureHost`]: RS256/384/512 and ES256/384/512 checks run natively instead of in
//! wasm. Installed once per VM; an Envoy without the function, or whose answers fail a
//! known-answer test, leaves every check in wasm for the VM's life.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};

use super::host;
use super::metrics::Metrics;
use crate::jwt::host_verify::{self, Hash, SignatureHost};

const FUNCTION: &str = "verify_signature";

struct EnvoyCrypto {
    /// Counted when the host answered / could not answer a check.
    answered: Option<u32>,
    declined: Option<u32>,
    /// Set while the known-answer test runs, so it is not counted.
    probing: Cell<bool>,
}

impl SignatureHost for EnvoyCrypto {
    fn verify(&self, hash: Hash, spki_der: &[u8], sig: &[u8], msg: &[u8]) -> Option<bool> {
        let args = host_verify::encode_arguments(hash, spki_der, sig, msg);
        // BadArgument: the host could not load the key; anything else: no answer either.
        let answer = match hostcalls::call_foreign_function(FUNCTION, Some(&args)) {
            Ok(Some(result)) => host_verify::decode_result(&result),
            Ok(None) | Err(_) => None,
        };
        if !self.probing.get() {
            Metrics::inc(if answer.is_some() {
                self.answered
            } else {
                self.declined
            });
        }
        answer
    }
}

/// Probes the host and installs it as this VM's signature host if it passes; logs which
/// backend verifies RS*/ES* signatures.
pub(crate) fn install(metrics: &Metrics) {
    let crypto = EnvoyCrypto {
        answered: metrics.jwt_host_verifications,
        declined: metrics.jwt_host_fallbacks,
        probing: Cell::new(true),
    };
    // An Envoy without the function answers NotFound; with it, these arguments (no key)
    // are a BadArgument.
    let probe = host_verify::encode_arguments(Hash::Sha256, &[], &[], &[]);
    let backend = match hostcalls::call_foreign_function(FUNCTION, Some(&probe)) {
        Err(Status::NotFound) => Err("Envoy has no verify_signature foreign function"),
        _ if !host_verify::self_test(&crypto) => Err("verify_signature failed its self-test"),
        _ => Ok(()),
    };
    crypto.probing.set(false);
    match backend {
        Ok(()) => {
            host_verify::install_signature_host(Some(Rc::new(crypto)));
            host::log(
                LogLevel::Info,
                "meshguard: JWT signatures: RS256/384/512 and ES256/384/512 verified by Envoy \
                 (verify_signature, BoringSSL); PS*, HS*, EdDSA in wasm",
            );
        }
        Err(why) => {
            host_verify::install_signature_host(None);
            host::log(
                LogLevel::Info,
                &format!("meshguard: JWT signatures: all verified in wasm ({why})"),
            );
        }
    }
}
