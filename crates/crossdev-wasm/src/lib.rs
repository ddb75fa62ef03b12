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

use crossdev_core::tensor::Buffer;
use crossdev_core::wire;
use std::alloc::{alloc as raw_alloc, dealloc as raw_dealloc, Layout};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use wasm_bindgen::prelude::*;

/// Threads of rayon's pool that no worker has taken up yet (rayon's spawn handler leaves them
/// here; each [`worker_run`] takes one).
static UNCLAIMED: (Mutex<Vec<rayon::ThreadBuilder>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

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
#[wasm_bindgen]
pub fn execute(request: &str, ptrs: &[usize], lens: &[usize]) -> String {
    // SAFETY: the host holds `lens[i]` bytes at `ptrs[i]` (allocated by `alloc`, or a result it
    // has not released) until this call returns.
    let inputs: Vec<&[u8]> = ptrs
        .iter()
        .zip(lens)
        .map(|(&p, &l)| unsafe { std::slice::from_raw_parts(p as *const u8, l) })
        .collect();
    let response = wire::execute(request, &inputs);
    let places: Vec<String> = HELD.with(|held| {
        let mut held = held.borrow_mut();
        response
            .buffers
            .into_iter()
            .map(|b| {
                let b = b.into_owned();
                let (ptr, len) = (b.as_bytes().as_ptr() as usize, b.as_bytes().len());
                if len > 0 {
                    held.insert(ptr, b);
                }
                format!("[{ptr},{len}]")
            })
            .collect()
    });
    format!("{}\n[{}]", response.meta, places.join(","))
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

