//! A caching allocator for large buffers, for binaries that reduce big tensors repeatedly.
//!
//! Results of a reduction are new buffers; fresh memory from the OS costs a page fault (and a
//! zero-fill) per 4 KiB page the first time it is written, which on large tensors costs more
//! than the reduction itself. [`PoolAllocator`] keeps freed blocks of at least 64 KiB (up to a
//! budget, `CROSSDEV_POOL_BYTES`, default 2 GiB) and hands them out again for allocations of the
//! same size, evicting the oldest blocks when the budget is full. Smaller allocations go straight
//! to the system allocator. (Transparent huge pages were tried and dropped: with
//! `defrag=madvise` the first touch of a fresh block stalled in compaction for longer than the
//! page faults it saved.) A binary opts in with
//! `#[global_allocator] static A: PoolAllocator = PoolAllocator::new();`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks below this size are not pooled. Above glibc's mmap threshold (128 KiB at first) every
/// allocation is fresh pages; ResNet-50 has 27 gradients between 128 KiB and 1 MiB (17 MB per
/// device), whose results, page-faulted anew each step, made its gradient list 10% slower to
/// reduce than one flat tensor of the same bytes.
const MIN_POOLED: usize = 64 << 10;

/// See the module documentation.
pub struct PoolAllocator {
    free: Mutex<Vec<(usize, usize, usize)>>,
    held: AtomicUsize,
    budget: AtomicUsize,
}

impl PoolAllocator {
    /// An empty pool.
    pub const fn new() -> Self {
        PoolAllocator { free: Mutex::new(Vec::new()), held: AtomicUsize::new(0), budget: AtomicUsize::new(usize::MAX) }
    }

    fn budget(&self) -> usize {
        let b = self.budget.load(Ordering::Relaxed);
        if b != usize::MAX {
            return b;
        }
        // Reading the environment allocates: that is fine, the request is below MIN_POOLED.
        let b = std::env::var("CROSSDEV_POOL_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(2 << 30);
        self.budget.store(b, Ordering::Relaxed);
        b
    }

    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let mut free = self.free.lock().ok()?;
        let i = free.iter().position(|&(_, size, align)| size == layout.size() && align == layout.align())?;
        let (ptr, size, _) = free.swap_remove(i);
        self.held.fetch_sub(size, Ordering::Relaxed);
        Some(ptr as *mut u8)
    }

    fn fresh(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarding a valid layout to the system allocator.
        unsafe {
            if zeroed {
                System.alloc_zeroed(layout)
            } else {
                System.alloc(layout)
            }
        }
    }
}

impl Default for PoolAllocator {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for PoolAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_POOLED {
            return System.alloc(layout);
        }
        self.take(layout).unwrap_or_else(|| self.fresh(layout, false))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_POOLED {
            return System.alloc_zeroed(layout);
        }
        match self.take(layout) {
            Some(ptr) => {
                std::ptr::write_bytes(ptr, 0, layout.size());
                ptr
            }
            None => self.fresh(layout, true),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let budget = if layout.size() >= MIN_POOLED { self.budget() } else { 0 };
        if layout.size() <= budget {
            if let Ok(mut free) = self.free.lock() {
                // Keep the newest blocks: evict the oldest until this one fits (sizes in use
                // change, and blocks of sizes no longer asked for must not hold the budget).
                let mut held = self.held.load(Ordering::Relaxed);
                while held + layout.size() > budget && !free.is_empty() {
                    let (old, size, align) = free.remove(0);
                    System.dealloc(old as *mut u8, Layout::from_size_align_unchecked(size, align));
                    held -= size;
                }
                free.push((ptr as usize, layout.size(), layout.align()));
                self.held.store(held + layout.size(), Ordering::Relaxed);
                return;
            }
        }
        System.dealloc(ptr, layout)
    }
}
