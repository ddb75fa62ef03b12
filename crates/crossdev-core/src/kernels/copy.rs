//! Broadcast copies at memory speed: one `memcpy` per cache-sized chunk, chunks spread over threads.

/// Copies `src` into `dst` (equal lengths).
pub fn copy<T: Copy + Send + Sync>(src: &[T], dst: &mut [T]) {
    #[cfg(feature = "parallel")]
    if src.len() >= 2 * super::PAR_CHUNK && super::outermost() {
        use rayon::prelude::*;
        dst.par_chunks_mut(super::PAR_CHUNK)
            .zip(src.par_chunks(super::PAR_CHUNK))
            .for_each(|(d, s)| d.copy_from_slice(s));
        return;
    }
    dst.copy_from_slice(src);
}

/// A new vector holding a copy of `src` (written once, by the copy).
pub fn to_vec<T: bytemuck::Pod + Send + Sync>(src: &[T]) -> Vec<T> {
    let mut out = super::output_vec(src.len());
    copy(src, &mut out);
    out
}
