//! A bump allocator for the boot CPU's one-off work (parsing the host DT, building Dom0's, the stage-2
//! tables). Nothing is freed. It starts in a small .bss arena, enough to parse the host device tree;
//! once RAM is known the boot CPU hands it a large arena of free RAM (`add_arena`). Keeping the big
//! arena out of .bss keeps the Image's `image_size` small: a boot flow planned for Xen puts Dom0's
//! kernel 2 MiB after the hypervisor, and everything the Image declares must fit before it.
//! Hand-written because it is a few lines and must work before the MMU is on (no atomic
//! read-modify-write: only the boot CPU allocates, before secondaries start; trap paths never allocate).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const BOOT_ARENA: usize = 512 << 10;

#[repr(C, align(4096))]
struct BootArena(UnsafeCell<[u8; BOOT_ARENA]>);

/// The arena in use: `[start, end)`, next free byte.
struct Cursor {
    start: usize,
    end: usize,
    next: usize,
}

struct Heap {
    boot: BootArena,
    cur: UnsafeCell<Cursor>,
}

// SAFETY: single allocating CPU, see the module comment.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap {
    boot: BootArena(UnsafeCell::new([0; BOOT_ARENA])),
    cur: UnsafeCell::new(Cursor { start: 0, end: 0, next: 0 }),
};

// SAFETY: returns distinct, suitably aligned ranges inside the current arena, or null when exhausted.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single allocating CPU.
        let c = unsafe { &mut *self.cur.get() };
        if c.end == 0 {
            let base = self.boot.0.get() as usize;
            *c = Cursor { start: base, end: base + BOOT_ARENA, next: base };
        }
        let start = (c.next + layout.align() - 1) & !(layout.align() - 1);
        let end = start + layout.size();
        if end > c.end {
            return core::ptr::null_mut();
        }
        c.next = end;
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

/// Continues allocating in `[base, base + size)`; what the earlier arena still holds stays valid.
///
/// # Safety
/// The range must be RAM mapped Normal at EL2, used by nothing else for the hypervisor's lifetime
/// (never given to a guest), and only the boot CPU may call this, before secondaries start.
pub unsafe fn add_arena(base: u64, size: u64) {
    // SAFETY: single allocating CPU (the caller's contract).
    let c = unsafe { &mut *HEAP.cur.get() };
    *c = Cursor { start: base as usize, end: (base + size) as usize, next: base as usize };
}

/// Bytes used in the current arena.
pub fn used() -> usize {
    // SAFETY: single allocating CPU; a plain read.
    let c = unsafe { &*HEAP.cur.get() };
    c.next - c.start
}
