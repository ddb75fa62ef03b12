//! Per-call diagnostics (`CROSSDEV_DEBUG=1`): which op, algorithm, packing and plan ran, and
//! TensorFlow's warnings (fallbacks, topology choices). Lines are collected on the calling
//! thread while a request runs and handed back with its response, so both bindings (including
//! WebAssembly, which has no stderr) print them the same way.

use std::cell::RefCell;

thread_local! {
    static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `f`, collecting the lines noted meanwhile when `enabled`.
pub fn capture<R>(enabled: bool, f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let previous = LINES.with(|l| l.replace(enabled.then(Vec::new)));
    let result = f();
    let lines = LINES.with(|l| l.replace(previous)).unwrap_or_default();
    (result, lines)
}

/// Notes a line (formatted only when collecting).
pub fn note(line: impl FnOnce() -> String) {
    LINES.with(|l| {
        if let Some(lines) = l.borrow_mut().as_mut() {
            lines.push(line());
        }
    });
}

/// Whether lines are being collected on this thread (work that would note lines on other
/// threads runs on this one instead, so that none is lost).
pub fn enabled() -> bool {
    LINES.with(|l| l.borrow().is_some())
}
