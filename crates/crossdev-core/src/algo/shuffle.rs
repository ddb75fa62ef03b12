//! Shuffle all-reduce (SPEC §2.5), parameter-server style: every source splits its tensor into
//! one ragged shard per gather device; each gather device reduces its shard of every source in one
//! n-ary pass; every destination then fetches all shards. `d·L` elements in, `d·L` out.

use super::{invalid, ragged_split, start, Placed};
use crate::device::canonicalize;
use crate::dtype::DType;
use crate::error::Result;
use crate::plan::{Builder, Chunk, Plan, Step};

/// Appends a shuffle all-reduce of `srcs` through the devices `gather` (device indices of the
/// builder) from stage `stage`.
pub fn shuffle(b: &mut Builder, srcs: &[usize], gather: &[usize], stage: usize, last: bool) -> Result<Placed> {
    if gather.is_empty() {
        return invalid("gather_devices must name at least one device");
    }
    let len = b.elements();
    let shards = ragged_split(len, gather.len());
    let gathered: Vec<usize> = shards.iter().zip(gather).map(|(&(a, z), &g)| b.buffer(g, z - a)).collect();
    for (j, &(a, z)) in shards.iter().enumerate() {
        let parts = srcs.iter().map(|&s| Chunk { buf: s, offset: a, len: z - a }).collect();
        b.push(stage, Step::Reduce { srcs: parts, dst: Chunk::whole(gathered[j], z - a), last });
    }
    let outs: Vec<usize> = srcs.iter().map(|&s| b.buffer(b.device_of(s), len)).collect();
    for &o in &outs {
        for (j, &(a, z)) in shards.iter().enumerate() {
            b.push(stage + 1, Step::Copy { src: Chunk::whole(gathered[j], z - a), dst: Chunk { buf: o, offset: a, len: z - a } });
        }
    }
    Ok(Placed { outputs: outs, next_stage: stage + 2 })
}

/// `build_shuffle_all_reduce`: a plan for `devices`, gathering on `gather_devices`.
pub fn build_shuffle_all_reduce(devices: &[String], gather_devices: &[String], elements: usize, dtype: DType) -> Result<Plan> {
    let (mut b, srcs) = start("shuffle", devices, dtype, elements)?;
    let gather = gather_devices.iter().map(|d| Ok(b.device(&canonicalize(d, None)?))).collect::<Result<Vec<_>>>()?;
    let placed = shuffle(&mut b, &srcs, &gather, 0, true)?;
    b.finish(placed.outputs)
}
