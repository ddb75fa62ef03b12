//! Ring all-reduce with subchunks (SPEC §2.2, §2.3): a reduce-scatter around `S` rings, then an
//! all-gather. Each device sends `2(n-1)S` chunks of `L/(nS)` elements: `2(n-1)/n·L` in all,
//! which is optimal for bandwidth.

use super::{invalid, padded_piece, single, start, Placed};
use crate::dtype::DType;
use crate::error::Result;
use crate::plan::{Builder, Chunk, Plan, Step};

/// Ring orders (`_ring_permutations`): for each subchunk `s`, `pred[s][d]` is the device before
/// `d` in ring `s` and `rank[s][d]` its position. Device `w·G + i` is GPU `i` of worker `w`.
pub fn ring_permutations(num_workers: usize, num_subchunks: usize, gpu_perm: &[usize]) -> Result<(Vec<Vec<usize>>, Vec<Vec<usize>>)> {
    let g = gpu_perm.len();
    let n = num_workers * g;
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if num_subchunks > g {
        return invalid(format!("num_subchunks {num_subchunks} must be <= num_gpus {g}"));
    }
    let mut sorted = gpu_perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..g).collect::<Vec<_>>() {
        return invalid(format!("gpu_perm must be a permutation of 0..{g}, got {gpu_perm:?}"));
    }
    let ri = (g / num_subchunks.max(1)).max(1);
    let (mut pred, mut rank) = (Vec::new(), Vec::new());
    for s in 0..num_subchunks {
        let offset = s * ri;
        let ring: Vec<usize> = (0..num_workers)
            .flat_map(|w| {
                let mut local: Vec<usize> = gpu_perm.iter().map(|i| w * g + i).collect();
                local.rotate_left(offset % g);
                local
            })
            .collect();
        let mut r = vec![0; n];
        for (pos, &d) in ring.iter().enumerate() {
            r[d] = pos;
        }
        pred.push((0..n).map(|d| ring[(r[d] + n - 1) % n]).collect());
        rank.push(r);
    }
    Ok((pred, rank))
}

/// Appends a ring all-reduce of `srcs` (participant `d` = `srcs[d]`) from stage `stage`.
pub fn ring(b: &mut Builder, srcs: &[usize], num_subchunks: usize, pred: &[Vec<usize>], rank: &[Vec<usize>], stage: usize, last: bool) -> Placed {
    let n = srcs.len();
    if n == 1 {
        return single(b, srcs[0], stage, last);
    }
    let len = b.elements();
    let s_count = num_subchunks;
    let piece = padded_piece(len, n * s_count);
    let chunk = |buf: usize, c: usize| Chunk::range(buf, c * piece, (c + 1) * piece, len);
    let outs: Vec<usize> = srcs.iter().map(|&s| b.buffer(b.device_of(s), len)).collect();
    // Reduce-scatter: at tick t, device d folds its predecessor's partial sum of chunk
    // seg = rank - 2 - t into its own input; the predecessor's partial is its input at t = 0.
    for tick in 0..n - 1 {
        for d in 0..n {
            for s in 0..s_count {
                let p = pred[s][d];
                let seg = (rank[s][d] + 2 * n - 2 - tick) % n;
                let c = seg * s_count + s;
                let from = if tick == 0 { srcs[p] } else { outs[p] };
                b.push(
                    stage + tick,
                    Step::Reduce { srcs: vec![chunk(from, c), chunk(srcs[d], c)], dst: chunk(outs[d], c), last: last && tick == n - 2 },
                );
            }
        }
    }
    // All-gather: at tick t, device d copies the finished chunk seg = rank - 1 - t from its predecessor.
    for tick in 0..n - 1 {
        for d in 0..n {
            for s in 0..s_count {
                let seg = (rank[s][d] + 2 * n - 1 - tick) % n;
                let c = seg * s_count + s;
                b.push(stage + n - 1 + tick, Step::Copy { src: chunk(outs[pred[s][d]], c), dst: chunk(outs[d], c) });
            }
        }
    }
    Placed { outputs: outs, next_stage: stage + 2 * (n - 1) }
}

/// `build_ring_all_reduce`: a plan for `devices` (worker-major: `w·G + i` is GPU `i` of worker
/// `w`) with `num_subchunks` rings ordered by `gpu_perm`.
pub fn build_ring_all_reduce(devices: &[String], elements: usize, dtype: DType, num_workers: usize, num_subchunks: usize, gpu_perm: &[usize]) -> Result<Plan> {
    if devices.len() < 2 {
        return invalid("input_tensors must be length 2 or longer");
    }
    if num_subchunks == 0 {
        return invalid("num_subchunks must be at least 1");
    }
    if devices.len() != num_workers * gpu_perm.len() {
        return invalid(format!(
            "a ring over {} devices needs num_workers × len(gpu_perm) = {} × {} to equal it",
            devices.len(),
            num_workers,
            gpu_perm.len()
        ));
    }
    let (pred, rank) = ring_permutations(num_workers, num_subchunks, gpu_perm)?;
    let (mut b, srcs) = start("ring", devices, dtype, elements)?;
    let placed = ring(&mut b, &srcs, num_subchunks, &pred, &rank, 0, true);
    b.finish(placed.outputs)
}
