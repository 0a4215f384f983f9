//! What a run allocates, counted by the allocator itself.
//!
//! Rhai's size limits measure values at some points and not others: `a[i] = v` and
//! `m[k] = v` check the assigned value but never the array or map it lands in, so a loop
//! of index assignments can grow one value without bound. Counting at the allocator
//! closes that whole class at once: whatever construct a script uses, its memory comes
//! from `alloc`, and the bytes a run's thread holds are checked on every operation.
//!
//! [`RunMemoryAllocator`] wraps the system allocator. On a thread that is metering a run
//! (see [`metered`]) it adds every allocation to a thread-local count and subtracts every
//! free; elsewhere it costs one thread-local read. The count is the run's net allocation:
//! what the run's own thread made and still holds, `ctx` and the values its SDK calls
//! return included. Memory a run frees that another thread allocated only lowers its
//! count, by at most what was handed in (the request, which is itself bounded).
//!
//! The allocator must be installed by the binary (`#[global_allocator]`); a library
//! cannot do it. [`allocator_installed`] tells whether it was, so the executor can say
//! so at start-up instead of silently running without the bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting the bytes of runs being metered. Install it in the
/// binary that runs scripts:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: picloud_executor_core::RunMemoryAllocator =
///     picloud_executor_core::RunMemoryAllocator;
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct RunMemoryAllocator;

thread_local! {
    // Const-initialised cells without destructors: reading them never allocates, which is
    // what makes them usable from inside the allocator.
    static METERING: Cell<bool> = const { Cell::new(false) };
    static NET_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn charge(delta: isize) {
    // `try_with`: during thread teardown the cells may be gone; nothing is metered then.
    let _ = METERING.try_with(|metering| {
        if metering.get() {
            let _ = NET_BYTES.try_with(|bytes| bytes.set(bytes.get().saturating_add(delta)));
        }
    });
}

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counting around it touches only thread-local cells and never allocates.
#[expect(
    unsafe_code,
    reason = "a global allocator is an unsafe trait by definition"
)]
unsafe impl GlobalAlloc for RunMemoryAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout, as `GlobalAlloc::alloc` requires.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            charge(signed(layout.size()));
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            charge(signed(layout.size()));
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through here)
        // with this layout, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        charge(-signed(layout.size()));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, with the caller's guarantees on `new_size`.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            charge(signed(new_size) - signed(layout.size()));
        }
        new_ptr
    }
}

/// Runs `f` with this thread's allocations counted from zero, restoring whatever was
/// being metered before (so metering nests and survives a panic in `f`).
pub(crate) fn metered<R>(f: impl FnOnce() -> R) -> R {
    struct Restore {
        metering: bool,
        bytes: isize,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            METERING.with(|metering| metering.set(self.metering));
            NET_BYTES.with(|bytes| bytes.set(self.bytes));
        }
    }

    let _restore = Restore {
        metering: METERING.with(|metering| metering.replace(true)),
        bytes: NET_BYTES.with(|bytes| bytes.replace(0)),
    };
    f()
}

/// The bytes the metered run on this thread holds now; 0 when none is metered.
pub(crate) fn run_bytes() -> usize {
    if !METERING.with(Cell::get) {
        return 0;
    }
    usize::try_from(NET_BYTES.with(Cell::get)).unwrap_or(0)
}

/// Whether the process allocates through [`RunMemoryAllocator`], checked by allocating
/// under metering and seeing whether the count moved.
pub fn allocator_installed() -> bool {
    metered(|| {
        let probe = std::hint::black_box(vec![0_u8; 256]);
        let counted = run_bytes() >= probe.len();
        drop(probe);
        counted
    })
}
