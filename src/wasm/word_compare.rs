//! `memcmp` and `bcmp` for the module, eight bytes per step. Every `==` on strings or byte
//! slices, every map lookup by string, every `starts_with` ends in one of them; wasm has no
//! instruction for it and wasi-libc's is a byte loop (about nine instructions per byte under
//! V8). Linked ahead of wasi-libc's, which is then not pulled from the archive.
//!
//! No hostcalls: tests/word_compare.rs checks it natively against slice comparison.

/// `memcmp`: the sign of the first differing byte (as unsigned), 0 if the first `n` are equal.
///
/// # Safety
/// `a` and `b` are valid for reads of `n` bytes.
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n bytes are readable from both; unaligned reads are allowed.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // The first differing byte in memory order is the most significant one of the
            // big-endian view.
            return if u64::from_be(x) < u64::from_be(y) {
                -1
            } else {
                1
            };
        }
        i += 8;
    }
    if i + 4 <= n {
        // SAFETY: as above, four bytes.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u32>().read_unaligned(),
                b.add(i).cast::<u32>().read_unaligned(),
            )
        };
        if x != y {
            return if u32::from_be(x) < u32::from_be(y) {
                -1
            } else {
                1
            };
        }
        i += 4;
    }
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (a.add(i).read(), b.add(i).read()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

// Not inlined into each call site (LTO would: 40 KB more module).
#[cfg(target_arch = "wasm32")]
mod symbols {
    /// # Safety
    /// C's `memcmp` contract.
    #[no_mangle]
    #[inline(never)]
    unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's contract.
        unsafe { super::compare(a, b, n) }
    }

    /// # Safety
    /// C's `bcmp` contract (zero if equal, nonzero otherwise).
    #[no_mangle]
    #[inline(never)]
    unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller's contract.
        unsafe { super::compare(a, b, n) }
    }
}
