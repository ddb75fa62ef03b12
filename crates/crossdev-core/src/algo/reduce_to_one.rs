//! Reduce to one device, then copy out: every input travels to the root once, the result
//! travels back once: `2(n-1)` full copies, through one device.

use super::{start, Placed};
use crate::dtype::DType;
use crate::error::Result;
use crate::plan::{Builder, Chunk, Plan, Step};

/// Appends a reduce of `srcs` on the device of `srcs[root]`, then copies to every source's device.
pub fn reduce_to_one(b: &mut Builder, srcs: &[usize], root: usize, stage: usize, last: bool) -> Placed {
    let len = b.elements();
    let whole = |buf| Chunk::whole(buf, len);
    let outs: Vec<usize> = srcs.iter().map(|&s| b.buffer(b.device_of(s), len)).collect();
    b.push(stage, Step::Reduce { srcs: srcs.iter().map(|&s| whole(s)).collect(), dst: whole(outs[root]), last });
    for &o in outs.iter().filter(|&&o| o != outs[root]) {
        b.push(stage + 1, Step::Copy { src: whole(outs[root]), dst: whole(o) });
    }
    Placed { outputs: outs, next_stage: stage + 2 }
}

/// A reduce-to-one-device all-reduce over `devices`, reducing on the first.
pub fn build_reduce_to_one(devices: &[String], elements: usize, dtype: DType) -> Result<Plan> {
    let (mut b, srcs) = start("reduce_to_one", devices, dtype, elements)?;
    let placed = reduce_to_one(&mut b, &srcs, 0, 0, true);
    b.finish(placed.outputs)
}
