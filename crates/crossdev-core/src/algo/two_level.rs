//! Two-level (hybrid) all-reduces across workers (SPEC §2.7): a first level inside each worker
//! (NCCL's all-reduce, or a gather onto one device), a second level across the workers' partial
//! sums (ring, recursive halving-doubling or shuffle), then a copy back to every device of each
//! worker. Workers are the `(job, replica, task)` groups of the devices.

use super::recursive_hd::recursive_hd;
use super::ring::{ring, ring_permutations};
use super::shuffle::shuffle;
use super::{invalid, single, start, Placed};
use crate::device::{canonicalize, DeviceSpec};
use crate::dtype::DType;
use crate::error::Result;
use crate::plan::{Builder, Chunk, Plan, Step};

/// `_split_by_task`: indices of `devices` grouped by `(job, replica, task)`, groups in order of
/// first appearance.
pub fn split_by_task(devices: &[String]) -> Result<Vec<Vec<usize>>> {
    let mut keys: Vec<(String, i64, i64)> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let spec = DeviceSpec::parse(&canonicalize(d, None)?)?;
        let key = (spec.job.unwrap_or_else(|| "localhost".into()), spec.replica.unwrap_or(0), spec.task.unwrap_or(0));
        match keys.iter().position(|k| *k == key) {
            Some(g) => groups[g].push(i),
            None => {
                keys.push(key);
                groups.push(vec![i]);
            }
        }
    }
    Ok(groups)
}

/// The second level of a two-level all-reduce, over one partial sum per worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpperLevel {
    /// Ring over the workers with this many subchunks (`gpu_perm = [0]`, so at most 1).
    Ring(usize),
    /// Recursive halving-doubling over the workers (a power of two of them).
    RecursiveHd,
    /// Shuffle through these devices.
    Shuffle(Vec<String>),
}

/// How each worker combines its own devices first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstLevel {
    /// NCCL all-reduce among the worker's devices; its first device carries the partial sum.
    Nccl,
    /// Reduce onto one gather device per worker (in worker order).
    Gather(Vec<String>),
    /// Done already: every device of a worker holds the worker's partial result (NCCL ran the
    /// first level in device memory); its first device's copy carries it.
    Done,
}

fn upper(b: &mut Builder, ups: &[usize], level: &UpperLevel, stage: usize) -> Result<Placed> {
    if ups.len() == 1 {
        // `_reduce_non_singleton`: one worker needs no second level.
        return Ok(single(b, ups[0], stage, true));
    }
    match level {
        UpperLevel::Ring(subdiv) => {
            let (pred, rank) = ring_permutations(ups.len(), *subdiv, &[0])?;
            Ok(ring(b, ups, *subdiv, &pred, &rank, stage, true))
        }
        UpperLevel::RecursiveHd => recursive_hd(b, ups, stage, true),
        UpperLevel::Shuffle(gather) => {
            let gather = gather.iter().map(|g| Ok(b.device(&canonicalize(g, None)?))).collect::<Result<Vec<_>>>()?;
            shuffle(b, ups, &gather, stage, true)
        }
    }
}

/// Appends a two-level all-reduce of `srcs` (grouped into `workers`) from stage `stage`.
pub fn two_level(b: &mut Builder, srcs: &[usize], workers: &[Vec<usize>], first: &FirstLevel, level: &UpperLevel, stage: usize) -> Result<Placed> {
    let len = b.elements();
    let whole = |buf| Chunk::whole(buf, len);
    let mut ups = Vec::with_capacity(workers.len());
    let mut next = stage;
    match first {
        FirstLevel::Nccl => {
            for w in workers {
                let local: Vec<usize> = w.iter().map(|&i| srcs[i]).collect();
                let (pred, rank) = ring_permutations(1, 1, &(0..local.len()).collect::<Vec<_>>())?;
                let placed = ring(b, &local, 1, &pred, &rank, stage, false);
                ups.push(placed.outputs[0]);
                next = next.max(placed.next_stage);
            }
        }
        FirstLevel::Gather(gather) => {
            if gather.len() != workers.len() {
                return invalid("For shuffle hybrid, gather_devices must contain one device per worker. ");
            }
            for (w, g) in workers.iter().zip(gather) {
                let device = b.device(&canonicalize(g, None)?);
                let up = b.buffer(device, len);
                b.push(stage, Step::Reduce { srcs: w.iter().map(|&i| whole(srcs[i])).collect(), dst: whole(up), last: false });
                ups.push(up);
            }
            next = stage + 1;
        }
        FirstLevel::Done => ups.extend(workers.iter().map(|w| srcs[w[0]])),
    }
    let level2 = upper(b, &ups, level, next)?;
    let mut outs = vec![0; srcs.len()];
    for (w, &reduced) in workers.iter().zip(&level2.outputs) {
        for &i in w {
            outs[i] = b.buffer(b.device_of(srcs[i]), len);
            b.push(level2.next_stage, Step::Copy { src: whole(reduced), dst: whole(outs[i]) });
        }
    }
    Ok(Placed { outputs: outs, next_stage: level2.next_stage + 1 })
}

/// A two-level plan over `devices` (any order; workers found by task).
pub fn build_two_level(devices: &[String], elements: usize, dtype: DType, first: &FirstLevel, level: &UpperLevel) -> Result<Plan> {
    let name = format!(
        "{}/{}",
        match first {
            FirstLevel::Nccl | FirstLevel::Done => "nccl",
            FirstLevel::Gather(_) => "pscpu",
        },
        match level {
            UpperLevel::Ring(_) => "xring",
            UpperLevel::RecursiveHd => "rechd",
            UpperLevel::Shuffle(_) => "pscpu",
        }
    );
    let (mut b, srcs) = start(&name, devices, dtype, elements)?;
    let workers = split_by_task(devices)?;
    let placed = two_level(&mut b, &srcs, &workers, first, level, 0)?;
    b.finish(placed.outputs)
}
