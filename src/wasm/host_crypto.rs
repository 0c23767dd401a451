//! Envoy's `verify_signature` foreign function (BoringSSL) as the engine's
//! [`SignatureHost`]: RS256/384/512 and ES256/384/512 checks run natively instead of in
//! wasm. Installed once per VM; an Envoy without the function, or whose answers fail a
//! known-answer test, leaves every check in wasm for the VM's life.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use super::host;
use super::metrics::Metrics;
use meshguard_engine::host_verify::{self, Hash, SignatureHost};

const FUNCTION: &str = "verify_signature";

#[link(wasm_import_module = "env")]
extern "C" {
    // The SDK's `call_foreign_function` panics on a status it does not list (a panic kills
    // the VM); this one returns the raw status, whatever the host says.
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
}

/// The host's `NotFound`: no foreign function of that name.
const NOT_FOUND: u32 = 1;

/// Calls a foreign function: the result bytes on success (`Ok`, 0), else the host's status.
fn call_foreign_function(name: &str, args: &[u8]) -> Result<Option<Vec<u8>>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: name and args are live for the call; on success the host stores a buffer it
    // allocated in this module through `proxy_on_memory_allocate` (the global allocator),
    // which we then own, as the SDK does.
    let status = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            args.as_ptr(),
            args.len(),
            &mut data,
            &mut size,
        )
    };
    match status {
        0 if data.is_null() => Ok(None),
        // SAFETY: see above; `size` is the allocation's length.
        0 => Ok(Some(unsafe { Vec::from_raw_parts(data, size, size) })),
        other => Err(other),
    }
}

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
        let answer = match call_foreign_function(FUNCTION, &args) {
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
    let backend = match call_foreign_function(FUNCTION, &probe) {
        Err(NOT_FOUND) => Err("Envoy has no verify_signature foreign function"),
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
