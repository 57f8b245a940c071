//! A bump allocator for the boot CPU's one-off work (parsing the host DT, building Dom0's). Nothing is
//! freed; the heap lives in .bss. Hand-written because it is a dozen lines and must work before the
//! MMU is on (no atomic read-modify-write: only the boot CPU allocates, before secondaries start, and
//! the trap paths never allocate).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Heap(UnsafeCell<[u8; HEAP_SIZE]>, UnsafeCell<usize>);

// SAFETY: single allocating CPU, see the module comment.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap(UnsafeCell::new([0; HEAP_SIZE]), UnsafeCell::new(0));

// SAFETY: returns distinct, suitably aligned ranges inside HEAP or null when exhausted.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single allocating CPU.
        let next = unsafe { &mut *self.1.get() };
        let base = self.0.get() as usize;
        let start = (base + *next + layout.align() - 1) & !(layout.align() - 1);
        let end = start + layout.size();
        if end > base + HEAP_SIZE {
            return core::ptr::null_mut();
        }
        *next = end - base;
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}
