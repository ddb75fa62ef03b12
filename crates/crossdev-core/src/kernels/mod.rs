//! CPU kernels: the N-way reduce and the broadcast copy, vectorised and (natively) multi-threaded.

pub mod cast;
pub mod copy;
pub mod reduce_n;

/// Elements per parallel task: large enough that scheduling costs vanish next to memory traffic.
#[cfg(feature = "parallel")]
pub(crate) const PAR_CHUNK: usize = 1 << 16;

/// Whether a kernel runs outside the thread pool, and so should spread itself over it. Inside
/// the pool (a plan's stage already runs its steps in parallel) kernels run on their thread:
/// nested splitting would only add scheduling and cost locality.
#[cfg(feature = "parallel")]
pub(crate) fn outermost() -> bool {
    rayon::current_thread_index().is_none()
}

/// A vector of `len` elements that the caller will write in full before reading any: allocated
/// without a zero-fill, which would be a pass over memory as costly as the write itself.
pub(crate) fn output_vec<T: bytemuck::Pod>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: T is plain old data (any bit pattern is a value), and every caller writes all `len`
    // elements (through `copy_from_slice`-like stores only) before anything reads them.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}
