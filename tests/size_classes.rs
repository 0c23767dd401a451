//! The module's allocator (src/wasm/size_classes.rs) natively, in front of the system
//! allocator: random sequences of allocations, frees and reallocations over every class and
//! beyond, with each live block filled with its own pattern and checked before it is freed or
//! moved (an overlap or a lost byte shows as a wrong pattern), every block aligned as asked.
#![allow(clippy::unwrap_used)]

#[path = "../src/wasm/size_classes.rs"]
mod size_classes;

use size_classes::SizeClasses;
use std::alloc::{GlobalAlloc, Layout, System};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Live {
    ptr: *mut u8,
    layout: Layout,
    tag: u8,
}

fn fill(b: &Live) {
    for i in 0..b.layout.size() {
        // SAFETY: the block holds layout.size() bytes.
        unsafe { b.ptr.add(i).write(b.tag.wrapping_add(i as u8)) };
    }
}

fn check(b: &Live, len: usize) {
    for i in 0..len {
        // SAFETY: as in fill.
        let got = unsafe { b.ptr.add(i).read() };
        assert_eq!(
            got,
            b.tag.wrapping_add(i as u8),
            "byte {i} of a {:?} block",
            b.layout
        );
    }
}

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(10) {
        0..=5 => 1 + rng.below(256),
        6..=8 => 1 + rng.below(4200),
        _ => 1 + rng.below(70_000),
    } as usize;
    let align = 1usize << rng.below(7); // 1 .. 64: beyond 16 goes to the system allocator
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn random_blocks_keep_their_bytes_and_alignment() {
    let a = SizeClasses::new(System);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<Live> = Vec::new();
    for step in 0..60_000u32 {
        match rng.below(10) {
            0..=4 => {
                let layout = random_layout(&mut rng);
                // SAFETY: a non-zero size.
                let ptr = unsafe { a.alloc(layout) };
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % layout.align(), 0, "{layout:?}");
                let b = Live {
                    ptr,
                    layout,
                    tag: step as u8,
                };
                fill(&b);
                live.push(b);
            }
            5..=7 if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len() as u64) as usize);
                check(&b, b.layout.size());
                // SAFETY: allocated above with this layout.
                unsafe { a.dealloc(b.ptr, b.layout) };
            }
            8..=9 if !live.is_empty() => {
                let at = rng.below(live.len() as u64) as usize;
                let new_size = random_layout(&mut rng).size();
                let b = &live[at];
                check(b, b.layout.size());
                // SAFETY: allocated above with this layout; new_size > 0.
                let ptr = unsafe { a.realloc(b.ptr, b.layout, new_size) };
                assert!(!ptr.is_null());
                let layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                assert_eq!(ptr as usize % layout.align(), 0);
                let moved = Live {
                    ptr,
                    layout,
                    tag: b.tag,
                };
                check(&moved, b.layout.size().min(new_size));
                fill(&moved);
                live[at] = moved;
            }
            _ => {}
        }
    }
    for b in live {
        check(&b, b.layout.size());
        // SAFETY: allocated above with this layout.
        unsafe { a.dealloc(b.ptr, b.layout) };
    }
}

/// A freed block is the next one of its class (the request path reuses its blocks), and a
/// reallocation within the class keeps the block.
#[test]
fn blocks_are_reused_within_their_class() {
    let a = SizeClasses::new(System);
    let l100 = Layout::from_size_align(100, 1).unwrap();
    let l120 = Layout::from_size_align(120, 8).unwrap();
    // SAFETY: non-zero sizes; each block freed with the layout it was allocated with.
    unsafe {
        let first = a.alloc(l100);
        let second = a.alloc(l100);
        assert_ne!(first, second);
        a.dealloc(first, l100);
        assert_eq!(a.alloc(l120), first, "same class (128): the freed block");
        assert_eq!(a.realloc(first, l120, 128), first, "still 128");
        let grown = a.realloc(first, Layout::from_size_align(128, 8).unwrap(), 129);
        assert_ne!(grown, first, "129 is the 256 class");
        a.dealloc(grown, Layout::from_size_align(129, 8).unwrap());
        a.dealloc(second, l100);
    }
}
