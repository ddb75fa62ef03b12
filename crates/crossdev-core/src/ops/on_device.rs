//! All-reduce of GPU tensors where they are: an op's plans run in device memory by the
//! installed [`ResidentStore`], without staging through the host (see [`crate::resident`]).
//!
//! An op that can ([`CrossDeviceOps::resident_shares`]: `AllReduce`, and `CollectiveAllReduce`
//! and `MultiWorkerAllReduce` in one process) describes how its host path all-reduces in one
//! process: [`Share`]s of its tensors, each packed by a layout, each pack reduced by a plan. The
//! packs are made in device memory: a pack that is one tensor whole is the tensor itself, any
//! other is its pieces concatenated on each device; each pack is reduced by its plan, and a
//! result that is not a whole pack is cut out of the reduced packs. The plans are the host
//! path's, combined in the same order, so the results are its results bit for bit. NCCL's ring
//! on devices that are distinct GPUs, and the NCCL level of a two-level plan within each worker,
//! is NCCL itself, where the store has it ([`ResidentStore::collective_all_reduce`]; NCCL
//! combines in its own order, so on several GPUs float results may differ in their last bits).
//! A request whose plans pass through devices other than its tensors' is left to the host path. What the host path does not all-reduce (values on
//! devices other than their destinations), and what it would refuse or treat specially (empty
//! tensors, a tensor not on the device it is keyed by, sizes that differ between devices), is
//! left to it.

use super::aggregate::devices_match;
use super::CrossDeviceOps;
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::pack::Layout;
use crate::plan::Plan;
use crate::reduce_op::ReduceOp;
use crate::resident::ResidentStore;
use crate::values::{Destinations, Mirrored, PerDevice};
use std::sync::Arc;

/// A GPU tensor of a request: its handle, element type and shape (its device is the one it is
/// keyed by).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidentTensor {
    /// The store's handle.
    pub handle: u64,
    /// Element type, as the request says.
    pub dtype: DType,
    /// Shape, as the request says.
    pub shape: Vec<usize>,
}

impl ResidentTensor {
    fn elements(&self) -> usize {
        crate::tensor::num_elements(&self.shape)
    }
}

/// The plan reducing pack `index` of `elements` elements of `dtype`, over the op's devices.
pub type PackPlan<'a> = Box<dyn Fn(DType, usize, usize) -> Result<Arc<Plan>> + 'a>;

/// Tensors that an op all-reduces together in one process: packed by `layout`, each pack reduced
/// by `plan`.
pub struct Share<'a> {
    /// The tensors (indices into the op's list), in the order `layout` numbers them.
    pub tensors: Vec<usize>,
    /// The packs of the share's tensors.
    pub layout: Layout,
    /// Each pack's plan.
    pub plan: PackPlan<'a>,
    /// Which part of the plans NCCL itself may run, where the store has it.
    pub nccl: NcclLevel<'a>,
}

/// The part of a share's plans that is NCCL's all-reduce (which the store's NCCL runs instead of
/// the plan where it has NCCL for the devices: [`ResidentStore::collective_all_reduce`]).
pub enum NcclLevel<'a> {
    /// None of it.
    None,
    /// All of it: the plans are NCCL's ring over all the devices.
    All,
    /// The first level of a two-level plan: NCCL's ring within each worker (`workers`: the
    /// indices of each worker's devices), then `rest`, the plan of the second level and the
    /// copies back over devices that hold their worker's partial result.
    FirstLevel {
        /// The indices of each worker's devices.
        workers: Vec<Vec<usize>>,
        /// The rest of each pack's plan.
        rest: PackPlan<'a>,
    },
}

/// What `ops.batch_reduce(op, pairs)` returns, computed in device memory by `store` when `ops`
/// would all-reduce the pairs in this process (see the module documentation); `Ok(None)` when
/// the host path must serve them. The destinations must be valid already.
pub fn all_reduce_resident(ops: &dyn CrossDeviceOps, store: &dyn ResidentStore, op: ReduceOp, pairs: &[(PerDevice<ResidentTensor>, Destinations)]) -> Result<Option<Vec<Mirrored<ResidentTensor>>>> {
    let Some(first) = pairs.first() else { return Ok(None) };
    let devices = first.0.devices();
    if devices.is_empty() {
        return Ok(None);
    }
    // What every op's host path all-reduces: every value on the devices of its destinations,
    // all on the devices of the first.
    for (value, destinations) in pairs {
        if !devices_match(value, destinations)? || !devices_match(value, &Destinations::Values(devices.clone()))? {
            return Ok(None);
        }
    }
    // grads[device][tensor], in the order of the first value's devices.
    let grads: Vec<Vec<&ResidentTensor>> = devices.iter().map(|d| pairs.iter().map(|(v, _)| v.get(d)).collect::<Result<_>>()).collect::<Result<_>>()?;
    let counts: Vec<usize> = grads[0].iter().map(|t| t.elements()).collect();
    let dtypes: Vec<DType> = grads[0].iter().map(|t| t.dtype).collect();
    for (device, row) in devices.iter().zip(&grads) {
        for (t, (&n, &dtype)) in row.iter().zip(counts.iter().zip(&dtypes)) {
            let Ok(held) = store.describe(t.handle) else { return Ok(None) };
            if t.elements() != n || t.dtype != dtype || held.len != n || held.dtype != dtype || held.device != *device || n == 0 {
                return Ok(None);
            }
        }
    }
    let Some(shares) = ops.resident_shares(&devices, &counts, &dtypes)? else { return Ok(None) };
    // Each pack's plan, up front: a plan through devices other than the tensors' (the host
    // gathers of `pscpu`, `psgpu`'s gathers on GPUs holding none of them, which the store may not
    // have) leaves the whole request to the host path.
    let mut plans = Vec::with_capacity(shares.len());
    for share in &shares {
        let packs = share
            .layout
            .packs()
            .iter()
            .enumerate()
            .map(|(index, pieces)| pieces.first().map(|x| (share.plan)(dtypes[share.tensors[x.tensor]], pieces.iter().map(|x| x.len).sum(), index)).transpose())
            .collect::<Result<Vec<_>>>()?;
        if packs.iter().flatten().any(|plan| !plan.devices.iter().all(|d| devices.contains(d))) {
            return Ok(None);
        }
        plans.push(packs);
    }
    let mut made = Made { store, handles: Vec::new() };
    let mut results: Vec<Option<Vec<u64>>> = vec![None; counts.len()];
    for (share, plans) in shares.iter().zip(&plans) {
        let rows: Vec<Vec<&ResidentTensor>> = grads.iter().map(|row| share.tensors.iter().map(|&t| row[t]).collect()).collect();
        let kinds: Vec<DType> = share.tensors.iter().map(|&t| dtypes[t]).collect();
        for (&t, per_device) in share.tensors.iter().zip(reduce_packs(&mut made, op, &devices, &rows, share, plans, &kinds)?) {
            if results[t].replace(per_device).is_some() {
                return fail(ErrorCode::Internal, format!("tensor {t} in two shares of the all-reduce"));
            }
        }
    }
    let results: Vec<Vec<u64>> = match results.into_iter().collect::<Option<_>>() {
        Some(r) => r,
        None => return fail(ErrorCode::Internal, "a tensor in no share of the all-reduce"),
    };
    let mirrored = results
        .into_iter()
        .enumerate()
        .map(|(t, per_device)| {
            Mirrored::new(devices.iter().zip(per_device).zip(&grads).map(|((d, handle), row)| (d.clone(), ResidentTensor { handle, dtype: dtypes[t], shape: row[t].shape.clone() })))
        })
        .collect::<Result<_>>()?;
    // Handed out: the caller owns the results now.
    made.handles.clear();
    Ok(Some(mirrored))
}

/// Reduces the packs of `share` over `grads[device][tensor]` (the share's tensors, of `dtypes`)
/// in device memory by `plans` (one per non-empty pack); returns each tensor's result handles
/// per device, and releases every other handle it made.
fn reduce_packs(made: &mut Made, op: ReduceOp, devices: &[String], grads: &[Vec<&ResidentTensor>], share: &Share, plans: &[Option<Arc<Plan>>], dtypes: &[DType]) -> Result<Vec<Vec<u64>>> {
    let layout = &share.layout;
    let counts = layout.counts();
    // The reduced packs, per pack and device.
    let mut reduced: Vec<Vec<u64>> = Vec::with_capacity(layout.packs().len());
    // The packs that are one gradient whole (their reduction is that gradient's result).
    let wholes: Vec<bool> = layout.packs().iter().map(|pieces| matches!(pieces.as_slice(), [x] if x.whole(counts))).collect();
    for (index, (pieces, plan)) in layout.packs().iter().zip(plans).enumerate() {
        let (Some(first), Some(plan)) = (pieces.first(), plan) else {
            // An empty pack (more packs than elements) holds nothing to reduce.
            reduced.push(Vec::new());
            continue;
        };
        let dtype = plan.dtype;
        let whole = wholes[index];
        let inputs: Vec<u64> = if whole {
            grads.iter().map(|row| row[first.tensor].handle).collect()
        } else {
            devices
                .iter()
                .zip(grads)
                .map(|(d, row)| Ok(made.keep(made.store.concat(d, dtype, &pieces.iter().map(|x| (row[x.tensor].handle, x.offset, x.len)).collect::<Vec<_>>())?)))
                .collect::<Result<_>>()?
        };
        let outs = match by_nccl(made, op, &share.nccl, &inputs, plan, index)? {
            Some((outs, how)) => {
                crate::log::note(|| format!("pack {index} ({} pieces) all-reduced by {how} in device memory", pieces.len()));
                outs
            }
            None => {
                crate::log::note(|| format!("pack {index} ({} pieces) all-reduced by the {} plan in device memory", pieces.len(), plan.algorithm));
                made.store.run_plan(plan, op, &inputs)?
            }
        };
        reduced.push(outs.into_iter().map(|h| made.keep(h)).collect());
        if !whole {
            inputs.into_iter().for_each(|h| made.release(h));
        }
    }
    // Each tensor's result: a whole pack as it is, else its pieces cut out of the packs.
    let mut pieces_of: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); counts.len()];
    for (p, pieces) in layout.packs().iter().enumerate() {
        let mut at = 0;
        for x in pieces {
            pieces_of[x.tensor].push((p, at, x.len));
            at += x.len;
        }
    }
    let mut used = vec![false; reduced.len()];
    let results = pieces_of
        .iter()
        .enumerate()
        .map(|(t, parts)| match parts.as_slice() {
            &[(p, ..)] if wholes[p] => {
                used[p] = true;
                Ok(reduced[p].clone())
            }
            _ => devices
                .iter()
                .enumerate()
                .map(|(d, device)| Ok(made.keep(made.store.concat(device, dtypes[t], &parts.iter().map(|&(p, at, len)| (reduced[p][d], at, len)).collect::<Vec<_>>())?)))
                .collect(),
        })
        .collect::<Result<Vec<Vec<u64>>>>()?;
    for (p, handles) in reduced.into_iter().enumerate() {
        if !used[p] {
            handles.into_iter().for_each(|h| made.release(h));
        }
    }
    Ok(results)
}

/// All-reduces pack `index` (`inputs`, one per device) with `op` where NCCL runs the `level` of
/// its `plan`: the results, and how they were made; `None` where the store has no NCCL for the
/// devices (then the whole plan runs).
fn by_nccl(made: &mut Made, op: ReduceOp, level: &NcclLevel, inputs: &[u64], plan: &Plan, index: usize) -> Result<Option<(Vec<u64>, String)>> {
    match level {
        NcclLevel::None => Ok(None),
        NcclLevel::All => Ok(made.store.collective_all_reduce(op, inputs)?.map(|outs| (outs, "NCCL".to_string()))),
        NcclLevel::FirstLevel { workers, rest } => {
            // Each worker's partial result on each of its devices; MEAN divides only at the end.
            let mut partial = Vec::with_capacity(inputs.len());
            for worker in workers {
                let ins: Vec<u64> = worker.iter().map(|&i| inputs[i]).collect();
                let Some(outs) = made.store.collective_all_reduce(op.combiner(), &ins)? else {
                    partial.into_iter().for_each(|(_, h)| made.release(h));
                    return Ok(None);
                };
                partial.extend(worker.iter().copied().zip(outs.into_iter().map(|h| made.keep(h))));
            }
            partial.sort_unstable();
            let rest = rest(plan.dtype, plan.elements, index)?;
            let outs = made.store.run_plan(&rest, op, &partial.iter().map(|&(_, h)| h).collect::<Vec<_>>())?;
            partial.into_iter().for_each(|(_, h)| made.release(h));
            Ok(Some((outs, format!("NCCL within each of {} workers, then the rest of the {} plan", workers.len(), rest.algorithm))))
        }
    }
}

/// The handles an all-reduce in device memory has made and not yet released: all released if it
/// fails (dropped with some left), none once its results are handed out.
struct Made<'s> {
    store: &'s dyn ResidentStore,
    handles: Vec<u64>,
}

impl Made<'_> {
    fn keep(&mut self, handle: u64) -> u64 {
        self.handles.push(handle);
        handle
    }

    fn release(&mut self, handle: u64) {
        self.handles.retain(|&h| h != handle);
        self.store.release(handle);
    }
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        for &h in &self.handles {
            self.store.release(h);
        }
    }
}
