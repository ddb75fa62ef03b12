//! WebAssembly bindings of crossdev-core, speaking [`crossdev_core::wire`] like the native addon.
//!
//! The module is built with atomics, so its memory is a shared one: growing it never detaches
//! the host's views into it (the views of a `SharedArrayBuffer` outlive its growth), and tensors
//! and results can stay in it for as long as the host holds them. WebAssembly cannot read
//! JavaScript memory, so an input that is not already here is copied in once: the host asks for
//! space with [`alloc`], writes the TypedArray into it and frees it with [`dealloc`] after the
//! call. [`execute`] reads every input at its address and hands each result buffer over to the
//! host, which frees it with [`release`] once it no longer needs it.
//!
//! The shared memory also lets the module run on several threads: the host starts worker
//! threads that instantiate the module over the same memory and call [`worker_run`], then calls
//! [`start_threads`], which makes them rayon's global pool. The kernels and the plan executor
//! spread their work over it as they do natively, while the calling thread waits.
//!
//! WebAssembly addresses 4 GiB at most, shared by what the host holds between calls and each
//! call's working memory, so a call can find too little of it left. The module is built with
//! `panic=unwind` (WebAssembly exception handling) and turns a failed allocation into a panic
//! (see [`execute`]): the call unwinds, on whichever thread it failed, freeing what it had
//! taken, and answers `ERR_OUT_OF_MEMORY`. A trap would instead have left the module's state
//! (locks, the shadow stack, what the call had allocated) as it was, or ended the process
//! where a worker thread trapped. The allocator counts what it hands out ([`allocated`],
//! [`take_peak`]), so that the host can keep room for calls, and refuses what would go past a
//! limit the host may set ([`set_limit`]).

#![cfg_attr(target_arch = "wasm32", feature(alloc_error_hook))]

use crossdev_core::tensor::Buffer;
use crossdev_core::wire;
use std::alloc::{alloc as raw_alloc, dealloc as raw_dealloc, GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Condvar, Mutex};
use wasm_bindgen::prelude::*;

/// The system allocator, counting the bytes it has handed out (on every thread) and refusing
/// those past [`LIMIT`].
struct Counting;

/// Bytes allocated now.
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
/// The most bytes allocated at once since the last [`take_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The most bytes that may be allocated at once ([`set_limit`]; no limit but WebAssembly's own
/// by default).
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Allocations smaller than this are made past [`LIMIT`] too, as they are where memory is
/// really exhausted (the allocator still has small free blocks when a buffer finds no room):
/// the limit stands for exhaustion, and the code around the buffers (wasm-bindgen's glue, which
/// aborts where it cannot allocate) runs as it would then.
const SMALL: usize = 64 << 10;
/// Whether an allocation has failed since [`execute`] began (or since [`alloc`] was called).
static EXHAUSTED: AtomicBool = AtomicBool::new(false);

/// Takes `bytes` more from the count, or fails (false) where that would pass [`LIMIT`] (for a
/// block of at least [`SMALL`] bytes).
fn take(bytes: usize) -> bool {
    let limit = if bytes < SMALL {
        usize::MAX
    } else {
        LIMIT.load(Relaxed)
    };
    let taken = ALLOCATED.fetch_update(Relaxed, Relaxed, |now| {
        now.checked_add(bytes).filter(|&n| n <= limit)
    });
    match taken {
        Ok(before) => {
            PEAK.fetch_max(before + bytes, Relaxed);
            true
        }
        Err(_) => {
            EXHAUSTED.store(true, Relaxed);
            false
        }
    }
}

/// Gives back `bytes` to the count.
fn give(bytes: usize) {
    ALLOCATED.fetch_sub(bytes, Relaxed);
}

/// Counts `ptr`, an allocation of `bytes` already taken from the count: one that failed (null)
/// gives them back.
fn answered(ptr: *mut u8, bytes: usize) -> *mut u8 {
    if ptr.is_null() {
        give(bytes);
        EXHAUSTED.store(true, Relaxed);
    }
    ptr
}

// SAFETY: every call goes to the system allocator unchanged, or fails (null) before it does.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !take(layout.size()) {
            return std::ptr::null_mut();
        }
        answered(System.alloc(layout), layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !take(layout.size()) {
            return std::ptr::null_mut();
        }
        answered(System.alloc_zeroed(layout), layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        give(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !take(new_size - old) {
            return std::ptr::null_mut();
        }
        let moved = System.realloc(ptr, layout, new_size);
        if new_size > old {
            answered(moved, new_size - old)
        } else {
            if !moved.is_null() {
                give(old - new_size);
            } else {
                EXHAUSTED.store(true, Relaxed);
            }
            moved
        }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated now, on every thread (tensors and results the host holds included).
#[wasm_bindgen]
pub fn allocated() -> usize {
    ALLOCATED.load(Relaxed)
}

/// The most bytes that were allocated at once since the previous call (the first call: since
/// the start); the next measure starts from what is allocated now.
#[wasm_bindgen]
pub fn take_peak() -> usize {
    PEAK.swap(ALLOCATED.load(Relaxed), Relaxed)
}

/// Makes allocations of buffers (blocks of [`SMALL`] bytes or more) fail that would take more
/// than `bytes` in all: the host's `CROSSDEV_WASM_MEMORY_BYTES`, to leave memory to others or to
/// see what exhaustion does.
#[wasm_bindgen]
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Relaxed);
}

/// Makes a failed allocation panic rather than abort (a trap), so that the call unwinds.
fn panic_on_alloc_error() {
    #[cfg(target_arch = "wasm32")]
    {
        static SET: std::sync::Once = std::sync::Once::new();
        SET.call_once(|| {
            std::alloc::set_alloc_error_hook(|layout| {
                panic!("memory allocation of {} bytes failed", layout.size())
            })
        });
    }
}

/// Threads of rayon's pool that no worker has taken up yet (rayon's spawn handler leaves them
/// here; each [`worker_run`] takes one).
static UNCLAIMED: (Mutex<Vec<rayon::ThreadBuilder>>, Condvar) =
    (Mutex::new(Vec::new()), Condvar::new());

thread_local! {
    /// Result buffers of [`execute`] the host holds, by address (each non-empty one owns its
    /// allocation, so addresses are unique).
    static HELD: RefCell<HashMap<usize, Buffer<'static>>> = RefCell::new(HashMap::new());
}

fn layout(len: usize) -> Layout {
    Layout::from_size_align(len.max(1), 16).expect("valid layout")
}

/// Reserves `len` bytes (16-byte aligned); returns their address, or 0 when memory is exhausted.
#[wasm_bindgen]
pub fn alloc(len: usize) -> usize {
    EXHAUSTED.store(false, Relaxed);
    // SAFETY: the layout has a non-zero size.
    unsafe { raw_alloc(layout(len)) as usize }
}

/// Frees memory from [`alloc`].
#[wasm_bindgen]
pub fn dealloc(ptr: usize, len: usize) {
    // SAFETY: `ptr` came from `alloc(len)`.
    unsafe { raw_dealloc(ptr as *mut u8, layout(len)) }
}

/// The module's memory (a shared `WebAssembly.Memory`), for the host's views.
#[wasm_bindgen]
pub fn heap() -> JsValue {
    wasm_bindgen::memory()
}

/// Runs a request over inputs at `ptrs` (`lens` bytes each). Returns the response metadata
/// followed, after a newline, by `[address, bytes]` of each result buffer as JSON. Every
/// non-empty result stays allocated until the host passes its address to [`release`].
///
/// Memory exhausted on any thread makes the call unwind: what it had allocated is freed, no
/// result is kept, and the response is an `ERR_OUT_OF_MEMORY` error.
#[wasm_bindgen]
pub fn execute(request: &str, ptrs: &[usize], lens: &[usize]) -> String {
    panic_on_alloc_error();
    EXHAUSTED.store(false, Relaxed);
    let answer = catch_unwind(AssertUnwindSafe(|| run(request, ptrs, lens)));
    match answer {
        Ok(answer) if !EXHAUSTED.load(Relaxed) || !answer.starts_with("{\"error\"") => answer,
        // The core answers a panic, this one included, with an internal error.
        Ok(_) => out_of_memory(),
        Err(_) if EXHAUSTED.load(Relaxed) => out_of_memory(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied());
            let message = format!(
                "internal error in the WebAssembly module (please report): {}",
                what.unwrap_or("a panic")
            );
            let message = serde_json::to_string(&message).expect("strings serialise");
            format!("{{\"error\":{{\"code\":\"ERR_INTERNAL\",\"message\":{message}}}}}\n[]")
        }
    }
}

/// The body of [`execute`], which may unwind where memory runs out.
fn run(request: &str, ptrs: &[usize], lens: &[usize]) -> String {
    // SAFETY: the host holds `lens[i]` bytes at `ptrs[i]` (allocated by `alloc`, or a result it
    // has not released) until this call returns.
    let inputs: Vec<&[u8]> = ptrs
        .iter()
        .zip(lens)
        .map(|(&p, &l)| unsafe { std::slice::from_raw_parts(p as *const u8, l) })
        .collect();
    let response = wire::execute(request, &inputs);
    let buffers: Vec<Buffer<'static>> = response
        .buffers
        .into_iter()
        .map(Buffer::into_owned)
        .collect();
    // Every allocation comes before the first buffer is handed over, so that running out of
    // memory leaves none held.
    let mut answer = String::with_capacity(response.meta.len() + 3 + buffers.len() * 24);
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        held.reserve(buffers.len());
        answer.push_str(&response.meta);
        answer.push_str("\n[");
        for (i, b) in buffers.into_iter().enumerate() {
            let (ptr, len) = (b.as_bytes().as_ptr() as usize, b.as_bytes().len());
            if len > 0 {
                held.insert(ptr, b);
            }
            let sep = if i == 0 { "" } else { "," };
            write!(answer, "{sep}[{ptr},{len}]").expect("writing to a String");
        }
        answer.push(']');
    });
    answer
}

/// The response to a call that ran out of memory.
fn out_of_memory() -> String {
    let (allocated, limit) = (ALLOCATED.load(Relaxed), LIMIT.load(Relaxed));
    let limit = if limit == usize::MAX {
        "the 4 GiB WebAssembly addresses".to_string()
    } else {
        format!("the {limit} bytes CROSSDEV_WASM_MEMORY_BYTES allows")
    };
    format!(
        "{{\"error\":{{\"code\":\"ERR_OUT_OF_MEMORY\",\"message\":\"WebAssembly memory is exhausted: this call needed more than was left of {limit} \
         ({allocated} bytes are taken by tensors and results still held, or dropped but not yet garbage-collected). \
         Nothing was changed, and what the call had taken is freed. Drop tensors and results you no longer need and let \
         the event loop turn (await) before the next call, reduce fewer or smaller tensors per call, or use the native addon.\"}}}}\n[]"
    )
}

/// Frees the result buffer of [`execute`] at `ptr` (a no-op for an address not held).
#[wasm_bindgen]
pub fn release(ptr: usize) {
    HELD.with(|held| held.borrow_mut().remove(&ptr));
}

/// Makes rayon's global pool `threads` threads, run by worker threads that call [`worker_run`]
/// (the host starts them first), and waits until every one has started. False when the pool
/// already exists (any parallel work before this call makes rayon fall back to the calling
/// thread alone).
#[wasm_bindgen]
pub fn start_threads(threads: usize) -> bool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .spawn_handler(|thread| {
            UNCLAIMED.0.lock().expect("pool queue").push(thread);
            UNCLAIMED.1.notify_one();
            Ok(())
        })
        .build_global()
        .is_ok()
}

/// The body of a worker thread: waits for a thread of rayon's pool from [`start_threads`] and
/// runs it, which never returns.
#[wasm_bindgen]
pub fn worker_run() {
    let thread = {
        let mut unclaimed = UNCLAIMED.0.lock().expect("pool queue");
        loop {
            match unclaimed.pop() {
                Some(thread) => break thread,
                None => unclaimed = UNCLAIMED.1.wait(unclaimed).expect("pool queue"),
            }
        }
    };
    thread.run();
}
