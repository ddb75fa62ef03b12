//! CPU kernels: the N-way reduce and the broadcast copy, vectorised and (natively) multi-threaded.

pub mod cast;
pub mod copy;
pub mod reduce_n;

/// Elements per parallel task: large enough that scheduling costs vanish next to memory traffic.
#[cfg(feature = "parallel")]
pub(crate) const PAR_CHUNK: usize = 1 << 16;
