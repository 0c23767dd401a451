//! The module's `memcmp` (src/wasm/word_compare.rs) natively: the same sign as slice
//! comparison at every length around the word sizes, for a difference at every position,
//! in either direction, with the high bit set or not, from any alignment.

#[path = "../src/wasm/word_compare.rs"]
mod word_compare;

use std::cmp::Ordering;

fn sign(a: &[u8], b: &[u8]) -> i32 {
    assert_eq!(a.len(), b.len());
    // SAFETY: both slices hold a.len() bytes.
    unsafe { word_compare::compare(a.as_ptr(), b.as_ptr(), a.len()) }.signum()
}

fn expected(a: &[u8], b: &[u8]) -> i32 {
    match a.cmp(b) {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

#[test]
fn agrees_with_slice_ordering() {
    let base: Vec<u8> = (0..64u32).map(|i| (i * 73 + 11) as u8).collect();
    for offset in 0..8 {
        for len in 0..40 {
            let a = &base[offset..offset + len];
            assert_eq!(sign(a, a), 0, "len {len}");
            for at in 0..len {
                for (delta, label) in [(1u8, "+1"), (0x80, "high bit"), (0xff, "-1")] {
                    let mut b = a.to_vec();
                    b[at] = b[at].wrapping_add(delta);
                    // A later byte differing the other way must not decide.
                    if at + 1 < len {
                        b[len - 1] = b[len - 1].wrapping_sub(delta);
                    }
                    assert_eq!(sign(a, &b), expected(a, &b), "len {len} at {at} {label}");
                    assert_eq!(sign(&b, a), expected(&b, a), "len {len} at {at} {label}");
                }
            }
        }
    }
}
