//! Recursive halving-doubling (SPEC §2.4): `log2 n` hops of pairwise exchanges halve the data
//! each device reduces, then `log2 n` hops double it back. Needs a power-of-two device count and
//! a length divisible by it; device `d` ends up owning the piece numbered by `d`'s bits reversed.

use super::{invalid, single, start, Placed};
use crate::dtype::DType;
use crate::error::Result;
use crate::plan::{Builder, Chunk, Plan, Step};

/// Appends a recursive halving-doubling all-reduce of `srcs` from stage `stage`.
pub fn recursive_hd(b: &mut Builder, srcs: &[usize], stage: usize, last: bool) -> Result<Placed> {
    let n = srcs.len();
    if n == 1 {
        return Ok(single(b, srcs[0], stage, last));
    }
    if !n.is_power_of_two() {
        return invalid("num_devices must be a power of 2");
    }
    let len = b.elements();
    if len % n != 0 {
        return invalid(format!(
            "recursive halving-doubling over {n} devices needs a length divisible by {n}, got {len}"
        ));
    }
    let hops = n.trailing_zeros() as usize;
    let outs: Vec<usize> = srcs.iter().map(|&s| b.buffer(b.device_of(s), len)).collect();
    // Intermediate hops alternate between two scratch buffers per device; the last writes `outs`.
    let ping: Vec<Vec<usize>> = (0..2.min(hops - 1))
        .map(|_| srcs.iter().map(|&s| b.buffer(b.device_of(s), len)).collect())
        .collect();
    let mut cur: Vec<usize> = srcs.to_vec();
    let mut range = vec![(0usize, len); n];
    for h in 0..hops {
        let span = 1 << h;
        let target = if h == hops - 1 { outs.clone() } else { ping[h % 2].clone() };
        for left in (0..n).filter(|d| d % (2 * span) < span) {
            let right = left + span;
            let (lo, hi) = range[left];
            let mid = lo + (hi - lo) / 2;
            let fin = last && h == hops - 1;
            let part = |buf: usize, a: usize, z: usize| Chunk { buf, offset: a, len: z - a };
            b.push(stage + h, Step::Reduce { srcs: vec![part(cur[left], lo, mid), part(cur[right], lo, mid)], dst: part(target[left], lo, mid), last: fin });
            b.push(stage + h, Step::Reduce { srcs: vec![part(cur[left], mid, hi), part(cur[right], mid, hi)], dst: part(target[right], mid, hi), last: fin });
            range[left] = (lo, mid);
            range[right] = (mid, hi);
        }
        cur = target;
    }
    for (k, h) in (0..hops).rev().enumerate() {
        let span = 1 << h;
        for left in (0..n).filter(|d| d % (2 * span) < span) {
            let right = left + span;
            let (l, r) = (range[left], range[right]);
            let part = |buf: usize, (a, z): (usize, usize)| Chunk { buf, offset: a, len: z - a };
            b.push(stage + hops + k, Step::Copy { src: part(outs[right], r), dst: part(outs[left], r) });
            b.push(stage + hops + k, Step::Copy { src: part(outs[left], l), dst: part(outs[right], l) });
            let merged = (l.0.min(r.0), l.1.max(r.1));
            range[left] = merged;
            range[right] = merged;
        }
    }
    Ok(Placed { outputs: outs, next_stage: stage + 2 * hops })
}

/// `build_recursive_hd_all_reduce`: a plan for `devices`.
pub fn build_recursive_hd_all_reduce(devices: &[String], elements: usize, dtype: DType) -> Result<Plan> {
    let (mut b, srcs) = start("rechd", devices, dtype, elements)?;
    let placed = recursive_hd(&mut b, &srcs, 0, true)?;
    b.finish(placed.outputs)
}
