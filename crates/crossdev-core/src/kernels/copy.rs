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

/// Copies the concatenation of `parts` into consecutive `outs` (a concat and a split in one pass
/// over memory, total lengths equal): every piece where a part and an output overlap is one
/// `memcpy`, large ones cut into cache-sized chunks, all spread over threads.
pub fn regroup<T: Copy + Send + Sync>(parts: &[&[T]], outs: &mut [&mut [T]]) {
    // (part, offset in part, output, offset in output, length)
    let mut pieces: Vec<(usize, usize, usize, usize, usize)> = Vec::new();
    let (mut p, mut po, mut o, mut oo) = (0, 0, 0, 0);
    while p < parts.len() && o < outs.len() {
        let n = (parts[p].len() - po).min(outs[o].len() - oo);
        #[cfg(feature = "parallel")]
        let step = super::PAR_CHUNK;
        #[cfg(not(feature = "parallel"))]
        let step = usize::MAX;
        let mut done = 0;
        while done < n {
            let len = (n - done).min(step);
            pieces.push((p, po + done, o, oo + done, len));
            done += len;
        }
        po += n;
        oo += n;
        if po == parts[p].len() {
            p += 1;
            po = 0;
        }
        if o < outs.len() && oo == outs[o].len() {
            o += 1;
            oo = 0;
        }
        // Skip empty parts and outputs.
        while p < parts.len() && parts[p].is_empty() {
            p += 1;
        }
        while o < outs.len() && outs[o].is_empty() {
            o += 1;
        }
    }
    let bases: Vec<(usize, usize)> = outs.iter_mut().map(|x| (x.as_mut_ptr() as usize, x.len())).collect();
    let run = |&(p, po, o, oo, len): &(usize, usize, usize, usize, usize)| {
        let (base, olen) = bases[o];
        debug_assert!(oo + len <= olen);
        // SAFETY: pieces write disjoint ranges of the outputs (each output element belongs to
        // exactly one piece), inside their bounds; `outs` is borrowed mutably for the call.
        let dst = unsafe { std::slice::from_raw_parts_mut((base as *mut T).add(oo), len) };
        dst.copy_from_slice(&parts[p][po..po + len]);
    };
    #[cfg(feature = "parallel")]
    if pieces.len() > 1 && pieces.iter().map(|x| x.4).sum::<usize>() >= 2 * super::PAR_CHUNK && super::outermost() {
        use rayon::prelude::*;
        pieces.par_iter().for_each(run);
        return;
    }
    pieces.iter().for_each(run);
}

/// Copies `src` into `dst` (equal lengths) with non-temporal stores where the target has them
/// (x86-64): `dst`'s lines are written without being read into the cache first. For outputs no
/// one reads soon; call [`stream_fence`] before another thread may read them.
#[inline]
pub fn stream<T: Copy>(src: &[T], dst: &mut [T]) {
    assert_eq!(src.len(), dst.len(), "stream copies equal lengths");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let bytes = std::mem::size_of_val(src);
        let (s, d) = (src.as_ptr() as *const u8, dst.as_mut_ptr() as *mut u8);
        // SAFETY: every access lies within `src` or `dst` (`bytes` long each, not overlapping:
        // `dst` is borrowed mutably); stores go to 16-byte aligned addresses as
        // `_mm_stream_si128` requires; SSE2 is part of x86-64.
        unsafe {
            let head = d.align_offset(16).min(bytes);
            std::ptr::copy_nonoverlapping(s, d, head);
            let mut i = head;
            while i + 16 <= bytes {
                _mm_stream_si128(d.add(i) as *mut __m128i, _mm_loadu_si128(s.add(i) as *const __m128i));
                i += 16;
            }
            std::ptr::copy_nonoverlapping(s.add(i), d.add(i), bytes - i);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Orders this thread's [`stream`] stores before its later stores (publishing the data to other
/// threads).
#[inline]
pub fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}
