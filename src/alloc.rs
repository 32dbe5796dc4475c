//! The global allocator of `serve` and of the benchmark servers beside it:
//! mimalloc, called through its plain entry points.
//!
//! Why not `mimalloc::MiMalloc` itself: it hands every allocation to
//! `mi_malloc_aligned`, whose path in mimalloc v3 cost ~64 instructions an
//! allocation under `serve` (callgrind), where `mi_malloc` takes the
//! thread-local fast path. Every block `mi_malloc` returns is aligned to a
//! machine word (its size classes are whole words), the alignment of nearly
//! every Rust allocation; only larger alignments go the aligned way (a block
//! of 24 bytes is not 16-aligned: the test below caught that).

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// What `mi_malloc` guarantees for a block of any size: a word.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

pub struct MiMalloc;

// SAFETY: every call forwards to mimalloc, which returns memory of at least
// `layout.size()` bytes aligned to `layout.align()` (the plain calls only
// when that alignment is at most `PLAIN_ALIGN`, which they guarantee), or
// null on failure; `dealloc` and `realloc` get pointers mimalloc returned.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alignment_is_honoured() {
        let a = MiMalloc;
        for align in [1, 2, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 16, 24, 40, 100, 5000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero size; each pointer is freed once with
                // the layout it was made with.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(
                        !p.is_null() && (p as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    p.write_bytes(0xa5, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert!(
                        !q.is_null() && (q as usize).is_multiple_of(align),
                        "{size}/{align}"
                    );
                    assert_eq!(*q.add(size - 1), 0xa5);
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert!((z as usize).is_multiple_of(align) && *z.add(size - 1) == 0);
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
