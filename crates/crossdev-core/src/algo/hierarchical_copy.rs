//! Hierarchical copy (SPEC §1.3), designed for DGX-1's two fully connected quads: each half sums
//! its tensors on a root, the roots combine, and every device copies the result from the root of
//! its half: `2n-2` full copies. The pack index rotates the roots so that packs spread the load.
//! TensorFlow silently dropped the last device of an odd count; here it joins the upper half.

use super::{single, start, Placed};
use crate::dtype::DType;
use crate::error::Result;
use crate::plan::{Builder, Chunk, Plan, Step};

/// Appends a hierarchical-copy all-reduce of `srcs` for pack number `index` from stage `stage`.
pub fn hierarchical_copy(b: &mut Builder, srcs: &[usize], index: usize, stage: usize, last: bool) -> Placed {
    let n = srcs.len();
    if n == 1 {
        return single(b, srcs[0], stage, last);
    }
    let len = b.elements();
    let h = n / 2;
    let g0 = index % n;
    let lower = g0 < h;
    // Roots: the pack's own device, and its partner in the other half.
    let g1 = if lower { g0 % h + h } else { (g0 - h) % h };
    let (group0, group1): (Vec<usize>, Vec<usize>) = if lower { ((0..h).collect(), (h..n).collect()) } else { ((h..n).collect(), (0..h).collect()) };
    let whole = |buf| Chunk::whole(buf, len);
    let s0 = b.buffer(b.device_of(srcs[g0]), len);
    let s1 = b.buffer(b.device_of(srcs[g1]), len);
    b.push(stage, Step::Reduce { srcs: group0.iter().map(|&j| whole(srcs[j])).collect(), dst: whole(s0), last: false });
    b.push(stage, Step::Reduce { srcs: group1.iter().map(|&j| whole(srcs[j])).collect(), dst: whole(s1), last: false });
    let outs: Vec<usize> = srcs.iter().map(|&s| b.buffer(b.device_of(s), len)).collect();
    b.push(stage + 1, Step::Reduce { srcs: vec![whole(s0), whole(s1)], dst: whole(outs[g0]), last });
    b.push(stage + 2, Step::Copy { src: whole(outs[g0]), dst: whole(outs[g1]) });
    for j in (0..n).filter(|&j| j != g0 && j != g1) {
        let root = if (j < h) == lower { g0 } else { g1 };
        b.push(stage + 3, Step::Copy { src: whole(outs[root]), dst: whole(outs[j]) });
    }
    Placed { outputs: outs, next_stage: stage + 4 }
}

/// `aggregate_gradients_using_hierarchical_copy` for one tensor (pack `index`) over `devices`.
pub fn build_hierarchical_copy(devices: &[String], elements: usize, dtype: DType, index: usize) -> Result<Plan> {
    let (mut b, srcs) = start("hierarchical_copy", devices, dtype, elements)?;
    let placed = hierarchical_copy(&mut b, &srcs, index, 0, true);
    b.finish(placed.outputs)
}
