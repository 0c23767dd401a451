//! Removes exports from a wasm module (`make wasm`). The proxy-wasm SDK exports every ABI
//! callback; Envoy calls each exported one for every request (about 2,000 instructions
//! each, measured with `make bench-instructions`) and skips the ones a module does not
//! export. meshguard has no use for the response body, trailers, metadata or access-log
//! callbacks, so they are unexported after linking; the functions stay, unreferenced. So are
//! the module's libc overrides, which only the module calls.

use crate::Result;

/// The callbacks meshguard does not implement (the SDK's defaults do nothing with them).
pub const UNUSED_CALLBACKS: &[&str] = &[
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_request_metadata",
    "proxy_on_response_metadata",
    "proxy_on_log",
];

/// The module's own `memcmp` and `bcmp` (src/wasm/word_compare.rs): the linker exports them
/// as it does every `#[no_mangle]` function, though only the module itself calls them.
pub const LIBC_OVERRIDES: &[&str] = &["memcmp", "bcmp"];

const EXPORT_SECTION: u8 = 7;

fn read_leb(b: &[u8], at: &mut usize) -> Result<u32> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*at).ok_or("wasm: truncated LEB128")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| "wasm: LEB128 over 32 bits".into());
        }
    }
    Err("wasm: LEB128 too long".into())
}

fn write_leb(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = at
        .checked_add(n)
        .filter(|&e| e <= b.len())
        .ok_or("wasm: truncated")?;
    let s = &b[*at..end];
    *at = end;
    Ok(s)
}

/// `module` without the exports named in `drop`; also the names it removed.
pub fn remove_exports(module: &[u8], drop: &[&str]) -> Result<(Vec<u8>, Vec<String>)> {
    remove_exports_matching(module, &|name| drop.contains(&name))
}

fn remove_exports_matching(
    module: &[u8],
    drop: &dyn Fn(&str) -> bool,
) -> Result<(Vec<u8>, Vec<String>)> {
    if module.len() < 8 || &module[..4] != b"\0asm" {
        return Err("not a wasm module".into());
    }
    let mut out = module[..8].to_vec();
    let mut removed = Vec::new();
    let mut at = 8;
    while at < module.len() {
        let id = module[at];
        at += 1;
        let size = read_leb(module, &mut at)? as usize;
        let body = take(module, &mut at, size)?;
        let body = if id == EXPORT_SECTION {
            let mut p = 0;
            let count = read_leb(body, &mut p)?;
            let mut kept = Vec::new();
            let mut n = 0u32;
            for _ in 0..count {
                let start = p;
                let len = read_leb(body, &mut p)? as usize;
                let name = std::str::from_utf8(take(body, &mut p, len)?)
                    .map_err(|_| "wasm: export name is not UTF-8")?
                    .to_string();
                take(body, &mut p, 1)?; // kind
                read_leb(body, &mut p)?; // index
                if drop(&name) {
                    removed.push(name);
                } else {
                    kept.extend_from_slice(&body[start..p]);
                    n += 1;
                }
            }
            if p != body.len() {
                return Err("wasm: trailing bytes in the export section".into());
            }
            let mut section = Vec::with_capacity(kept.len() + 5);
            write_leb(&mut section, n);
            section.extend_from_slice(&kept);
            section
        } else {
            body.to_vec()
        };
        out.push(id);
        write_leb(&mut out, u32::try_from(body.len())?);
        out.extend_from_slice(&body);
    }
    Ok((out, removed))
}

/// The names `module` exports.
pub fn export_names(module: &[u8]) -> Result<Vec<String>> {
    // Removing an export no module has lists every export on the way: reuse that walk.
    let (_, names) = remove_exports_matching(module, &|_| true)?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A module with a type, two functions and three exports (two functions, a memory).
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend([1, 4, 1, 0x60, 0, 0]); // type section: () -> ()
        m.extend([3, 3, 2, 0, 0]); // function section: two functions of type 0
        m.extend([5, 3, 1, 0, 1]); // memory section: one memory, min 1
        let mut exports = vec![3];
        for (name, kind, idx) in [("keep", 0u8, 0u8), ("gone", 0, 1), ("memory", 2, 0)] {
            exports.push(name.len() as u8);
            exports.extend(name.as_bytes());
            exports.extend([kind, idx]);
        }
        m.push(7);
        m.push(exports.len() as u8);
        m.extend(exports);
        m.extend([10, 7, 2, 2, 0, 0x0b, 2, 0, 0x0b]); // code section: two empty bodies
        m
    }

    #[test]
    fn removes_only_the_named_exports() {
        let (out, removed) = remove_exports(&module(), &["gone", "absent"]).unwrap();
        assert_eq!(removed, vec!["gone".to_string()]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("keep") && text.contains("memory") && !text.contains("gone"));
        // The result parses again, with the two other exports.
        let (again, removed) = remove_exports(&out, &["keep"]).unwrap();
        assert_eq!(removed, vec!["keep".to_string()]);
        assert_eq!(out.len() - again.len(), 1 + 4 + 2);
    }

    #[test]
    fn lists_the_exports() {
        assert_eq!(export_names(&module()).unwrap(), ["keep", "gone", "memory"]);
    }

    #[test]
    fn nothing_to_remove_is_the_same_module() {
        let (out, removed) = remove_exports(&module(), &[]).unwrap();
        assert!(removed.is_empty());
        assert_eq!(out, module());
    }

    #[test]
    fn refuses_what_is_not_a_module() {
        assert!(remove_exports(b"not wasm", &[]).is_err());
        let mut cut = module();
        cut.truncate(cut.len() - 3);
        assert!(remove_exports(&cut, &["gone"]).is_err());
        // A LEB128 that never ends.
        let mut bad = b"\0asm\x01\0\0\0".to_vec();
        bad.extend([7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(remove_exports(&bad, &[]).is_err());
    }
}
