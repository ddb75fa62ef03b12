//! WebAssembly bindings of crossdev-core, speaking [`crossdev_core::wire`] like the native addon.
//!
//! WebAssembly cannot read JavaScript memory, so inputs must be copied in once: the host asks for
//! space with [`alloc`], writes each TypedArray straight into it, and calls [`execute`] with the
//! addresses. Results stay in WebAssembly memory until the host has copied them out and called
//! [`release`].

use crossdev_core::tensor::Buffer;
use crossdev_core::wire;
use std::alloc::{alloc as raw_alloc, dealloc as raw_dealloc, Layout};
use std::cell::RefCell;
use wasm_bindgen::prelude::*;

thread_local! {
    static RESULTS: RefCell<Vec<Buffer<'static>>> = const { RefCell::new(Vec::new()) };
}

fn layout(len: usize) -> Layout {
    Layout::from_size_align(len.max(1), 16).expect("valid layout")
}

/// Reserves `len` bytes (16-byte aligned) for an input; returns its address.
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

/// The module's memory (a `WebAssembly.Memory`), for the host's views.
#[wasm_bindgen]
pub fn heap() -> JsValue {
    wasm_bindgen::memory()
}

/// Runs a request over inputs at `ptrs` (`lens` bytes each). Returns the response metadata
/// followed, after a newline, by `[address, bytes]` of each result buffer as JSON.
#[wasm_bindgen]
pub fn execute(request: &str, ptrs: &[usize], lens: &[usize]) -> String {
    // SAFETY: the host wrote `lens[i]` bytes at `ptrs[i]`, allocated by `alloc`, and keeps them
    // until this call returns.
    let inputs: Vec<&[u8]> = ptrs
        .iter()
        .zip(lens)
        .map(|(&p, &l)| unsafe { std::slice::from_raw_parts(p as *const u8, l) })
        .collect();
    let response = wire::execute(request, &inputs);
    let places: Vec<(usize, usize)> =
        response.buffers.iter().map(|b| (b.as_bytes().as_ptr() as usize, b.as_bytes().len())).collect();
    RESULTS.with(|r| *r.borrow_mut() = response.buffers);
    format!("{}\n{}", response.meta, serde_places(&places))
}

fn serde_places(places: &[(usize, usize)]) -> String {
    let items: Vec<String> = places.iter().map(|(p, l)| format!("[{p},{l}]")).collect();
    format!("[{}]", items.join(","))
}

/// Frees the result buffers of the last [`execute`].
#[wasm_bindgen]
pub fn release() {
    RESULTS.with(|r| r.borrow_mut().clear());
}
