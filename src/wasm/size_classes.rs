//! The module's allocator: power-of-two size classes from 16 bytes to 4 KiB, each a free list
//! of blocks carved from 64 KiB chunks of the system allocator (wasi-libc's dlmalloc); larger
//! or more strictly aligned layouts go to the system allocator directly.
//!
//! Why: a request makes about two dozen short-lived allocations (the header view, the
//! decision, the buffer the host writes the header map into). Under V8 a dlmalloc malloc +
//! free costs about 250 instructions; a free-list pop + push about 40. A freed block stays in
//! its class for the next request, so memory is bounded by the peak use of each class (the
//! soak test samples VM memory; it stays flat).
//!
//! No hostcalls: tests/size_classes.rs runs this file natively against the system allocator.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class, and the alignment of every block (chunks are aligned to it and every
/// class size is a multiple of it).
const MIN: usize = 16;
/// Classes 16, 32, ..., 4096 bytes.
const CLASSES: usize = 9;
const MAX: usize = MIN << (CLASSES - 1);
/// What a class takes from the system allocator when its free list is empty and the current
/// chunk cannot hold one more block (the chunk's rest, under 4 KiB, is left unused).
const CHUNK: usize = 64 * 1024;

/// The size class of `layout`; None for the system allocator.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() > MAX || layout.align() > MIN {
        return None;
    }
    let size = layout.size().max(MIN);
    // ceil(log2(size)) - log2(MIN); size >= 16, so size - 1 >= 15 has a leading one.
    Some((usize::BITS - (size - 1).leading_zeros() - MIN.trailing_zeros()) as usize)
}

struct State {
    /// Each class's free list: the first block, whose first word points to the next.
    free: [*mut u8; CLASSES],
    /// The unused rest of the current chunk.
    cursor: *mut u8,
    end: *mut u8,
}

pub struct SizeClasses<A> {
    system: A,
    state: UnsafeCell<State>,
}

// SAFETY: the state is reached only through `&self` methods that never run concurrently:
// wasm32-wasip1 modules are single-threaded (no `atomics` target feature; refused below),
// and the native tests use an instance from one thread (no Sync needed there).
#[cfg(target_arch = "wasm32")]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}
#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
compile_error!("SizeClasses is single-threaded; a wasm build with threads needs another allocator");

impl<A: GlobalAlloc> SizeClasses<A> {
    pub const fn new(system: A) -> Self {
        SizeClasses {
            system,
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                cursor: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }

    /// A fresh block of `size` bytes from the current chunk, or from a new one.
    ///
    /// # Safety
    /// `st` is this allocator's state, borrowed by nobody else.
    unsafe fn carve(&self, st: &mut State, size: usize) -> *mut u8 {
        if (st.end as usize) - (st.cursor as usize) < size {
            // SAFETY: CHUNK is non-zero and a multiple of the (power-of-two) alignment.
            let chunk = unsafe {
                self.system
                    .alloc(Layout::from_size_align_unchecked(CHUNK, MIN))
            };
            if chunk.is_null() {
                return chunk;
            }
            st.cursor = chunk;
            // SAFETY: one past the end of the chunk just allocated.
            st.end = unsafe { chunk.add(CHUNK) };
        }
        let block = st.cursor;
        // SAFETY: size <= end - cursor, checked or made so above.
        st.cursor = unsafe { block.add(size) };
        block
    }
}

// SAFETY: blocks of one class never overlap (each is carved once from a chunk, then only
// moves between its owner and its class's free list); every block is MIN-aligned and at least
// as large as any layout mapped to its class; other layouts are the system allocator's.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    // Not inlined into each of the module's allocation sites: LTO would, for 127 KB more
    // module and 0.2 % fewer instructions per request.
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { self.system.alloc(layout) };
        };
        // SAFETY: single-threaded (see the Sync impl); no other borrow of the state is live.
        let st = unsafe { &mut *self.state.get() };
        let head = st.free[class];
        if head.is_null() {
            // SAFETY: the state borrowed above.
            return unsafe { self.carve(st, MIN << class) };
        }
        // SAFETY: a free block holds the next free block's address in its first word.
        st.free[class] = unsafe { head.cast::<*mut u8>().read() };
        head
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            // SAFETY: allocated by the system allocator with this layout (same mapping).
            return unsafe { self.system.dealloc(block, layout) };
        };
        // SAFETY: single-threaded; the block is ours (same layout, same class), MIN-aligned
        // and at least MIN bytes, so its first word can link it into the free list.
        unsafe {
            let st = &mut *self.state.get();
            block.cast::<*mut u8>().write(st.free[class]);
            st.free[class] = block;
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: new_size > 0 and, rounded up to the alignment, fits.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // The block already holds the class's full size.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: both the system allocator's; the caller's contract carries over.
            (None, None) => unsafe { self.system.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a new block for new_layout; the old one holds layout.size() bytes.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_to_a_power_of_two() {
        let class = |size, align| class_of(Layout::from_size_align(size, align).unwrap());
        assert_eq!(class(1, 1), Some(0));
        assert_eq!(class(16, 8), Some(0));
        assert_eq!(class(17, 1), Some(1));
        assert_eq!(class(32, 16), Some(1));
        assert_eq!(class(33, 4), Some(2));
        assert_eq!(class(4096, 1), Some(8));
        assert_eq!(class(4097, 1), None);
        assert_eq!(class(8, 32), None);
    }
}
