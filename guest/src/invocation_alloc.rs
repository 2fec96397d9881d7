//! The default global allocator of Sandstorm functions (feature `invocation-allocator`, on by
//! default): bump allocation, first from a 64 KiB static arena, then from pages the instance
//! grows its memory by.
//!
//! An instance lives for exactly one invocation, so memory is never worth returning: `dealloc`
//! only takes back the most recent allocation (which lets a growing `Vec` extend in place).
//! What this buys is speed at the node: a general-purpose allocator grows linear memory on its
//! first allocation, and every growth is a system call and fresh page faults when the instance
//! starts, and another reset when it ends; the arena lives in the module's own zero-initialised
//! data, which the node keeps resident between instances. A function that allocates without
//! bound runs into its memory limit and fails with an error saying so.
//!
//! To use another allocator, turn the feature off and declare your own `#[global_allocator]`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

const ARENA_BYTES: usize = 64 << 10;
const PAGE: usize = 64 << 10;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

/// Bump state: the next free address and the end of the current region.
struct State {
    next: UnsafeCell<usize>,
    end: UnsafeCell<usize>,
}

// SAFETY: wasm32-unknown-unknown instances are single-threaded.
unsafe impl Sync for Arena {}
// SAFETY: as above.
unsafe impl Sync for State {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
static STATE: State = State {
    next: UnsafeCell::new(0),
    end: UnsafeCell::new(0),
};

/// The allocator; installed as `#[global_allocator]` by this module.
#[derive(Debug)]
pub struct InvocationAllocator;

impl InvocationAllocator {
    /// Makes `[next, end)` hold `size` bytes at `align`, from the arena or new pages.
    ///
    /// # Safety
    /// Single-threaded access to `STATE`.
    unsafe fn bump(size: usize, align: usize) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync` above).
        let (next, end) = unsafe { (&mut *STATE.next.get(), &mut *STATE.end.get()) };
        if *end == 0 {
            *next = ARENA.0.get() as usize;
            *end = *next + ARENA_BYTES;
        }
        let start = (*next + align - 1) & !(align - 1);
        if let Some(stop) = start.checked_add(size) {
            if stop <= *end {
                *next = stop;
                return start as *mut u8;
            }
        }
        // Grow memory by enough pages for this allocation; the new region starts at the old
        // memory end, not adjacent to the arena, so the rest of the arena is left unused.
        let pages = (size + align).div_ceil(PAGE);
        let old = core::arch::wasm32::memory_grow(0, pages);
        if old == usize::MAX {
            return core::ptr::null_mut();
        }
        let base = old * PAGE;
        let start = (base + align - 1) & !(align - 1);
        *next = start + size;
        *end = base + pages * PAGE;
        start as *mut u8
    }
}

// SAFETY: every block returned is `size` bytes at `align`, inside memory the instance owns, and
// never handed out twice while live (bump pointers only move forward, except to take back the
// block that ends at the pointer).
unsafe impl GlobalAlloc for InvocationAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded.
        unsafe { Self::bump(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: single-threaded.
        let next = unsafe { &mut *STATE.next.get() };
        if ptr as usize + layout.size() == *next {
            *next = ptr as usize;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: single-threaded.
        let (next, end) = unsafe { (&mut *STATE.next.get(), &*STATE.end.get()) };
        // The last block grows (or shrinks) in place when there is room.
        if ptr as usize + layout.size() == *next && ptr as usize + new_size <= *end {
            *next = ptr as usize + new_size;
            return ptr;
        }
        // SAFETY: the layout with the new size is valid (GlobalAlloc's contract for realloc).
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; copy the smaller size.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}

#[global_allocator]
static GLOBAL: InvocationAllocator = InvocationAllocator;
