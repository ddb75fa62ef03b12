//! A caching allocator for large buffers, for binaries that reduce big tensors repeatedly.
//!
//! Results of a reduction are new buffers; fresh memory from the OS costs a page fault (and a
//! zero-fill) per 4 KiB page the first time it is written, which on large tensors costs more
//! than the reduction itself. [`PoolAllocator`] keeps freed blocks larger than 4 KiB (up to a
//! budget, `CROSSDEV_POOL_BYTES`, default 2 GiB) and hands them out again for allocations of the
//! same size, evicting the oldest blocks when the budget is full. Smaller allocations go straight
//! to the system allocator. (Transparent huge pages were tried and dropped: with
//! `defrag=madvise` the first touch of a fresh block stalled in compaction for longer than the
//! page faults it saved.) A binary opts in with
//! `#[global_allocator] static A: PoolAllocator = PoolAllocator::new();`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Blocks below this size are not pooled: those up to 4 KiB are copied into JavaScript memory
/// by the native addon (and freed at once). Larger ones, allocated fresh, cost page faults when
/// the system allocator has returned their memory in between: glibc maps blocks above its mmap
/// threshold (128 KiB at first) anew each time, and trims what a thread's arena frees, which the
/// results that JavaScript frees on its own thread keep doing to the pool threads' arenas.
/// ResNet-50's 161 gradients, whose results were mostly below the former 1 MiB bound, took 10%
/// longer to reduce than one flat tensor of the same bytes for that alone.
const MIN_POOLED: usize = 4097;

/// Freed blocks as `(address, size, align)`, oldest first. Its own memory comes from the system
/// allocator directly: growing it through the global allocator, while it is locked, would
/// re-enter the pool.
struct FreeList {
    entries: *mut (usize, usize, usize),
    len: usize,
    cap: usize,
}

// SAFETY: the list owns its storage; it is only used behind the pool's Mutex.
unsafe impl Send for FreeList {}

impl FreeList {
    const fn new() -> FreeList {
        FreeList { entries: std::ptr::null_mut(), len: 0, cap: 0 }
    }

    fn as_slice(&self) -> &[(usize, usize, usize)] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `entries` holds `len` initialised entries.
        unsafe { std::slice::from_raw_parts(self.entries, self.len) }
    }

    /// Appends a block; `false` when the list could not grow (the caller frees the block instead).
    fn push(&mut self, entry: (usize, usize, usize)) -> bool {
        if self.len == self.cap {
            let cap = (self.cap * 2).max(256);
            let layout = |n: usize| Layout::array::<(usize, usize, usize)>(n).expect("a small array");
            // SAFETY: the old storage was allocated by `System` with `layout(self.cap)`.
            let grown = unsafe {
                if self.cap == 0 {
                    System.alloc(layout(cap))
                } else {
                    System.realloc(self.entries.cast(), layout(self.cap), layout(cap).size())
                }
            };
            if grown.is_null() {
                return false;
            }
            self.entries = grown.cast();
            self.cap = cap;
        }
        // SAFETY: `len < cap`.
        unsafe { self.entries.add(self.len).write(entry) };
        self.len += 1;
        true
    }

    /// Forgets the first `n` entries, keeping the others in order.
    fn drop_front(&mut self, n: usize) {
        // SAFETY: `n <= len`; the tail moves to the front within the storage.
        unsafe { std::ptr::copy(self.entries.add(n), self.entries, self.len - n) };
        self.len -= n;
    }

    /// Removes entry `i`, keeping the others in order.
    fn remove(&mut self, i: usize) -> (usize, usize, usize) {
        // SAFETY: `i < len`; the tail moves down by one within the storage.
        unsafe {
            let entry = self.entries.add(i).read();
            std::ptr::copy(self.entries.add(i + 1), self.entries.add(i), self.len - i - 1);
            self.len -= 1;
            entry
        }
    }
}

/// See the module documentation.
pub struct PoolAllocator {
    free: Mutex<FreeList>,
    held: AtomicUsize,
    budget: AtomicUsize,
}

impl PoolAllocator {
    /// An empty pool.
    pub const fn new() -> Self {
        PoolAllocator { free: Mutex::new(FreeList::new()), held: AtomicUsize::new(0), budget: AtomicUsize::new(usize::MAX) }
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
        // Newest first: a step asks for the sizes the step before it freed.
        let i = free.as_slice().iter().rposition(|&(_, size, align)| size == layout.size() && align == layout.align())?;
        let (ptr, size, _) = free.remove(i);
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
                let mut evicted = 0;
                while held + layout.size() > budget && evicted < free.len {
                    let (old, size, align) = free.as_slice()[evicted];
                    System.dealloc(old as *mut u8, Layout::from_size_align_unchecked(size, align));
                    held -= size;
                    evicted += 1;
                }
                free.drop_front(evicted);
                self.held.store(held, Ordering::Relaxed);
                if free.push((ptr as usize, layout.size(), layout.align())) {
                    self.held.store(held + layout.size(), Ordering::Relaxed);
                    return;
                }
            }
        }
        System.dealloc(ptr, layout)
    }
}
