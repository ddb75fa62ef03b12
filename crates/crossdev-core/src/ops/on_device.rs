//! All-reduce of GPU tensors where they are: [`AllReduce`]'s plans run in device memory by the
//! installed [`ResidentStore`], without staging through the host (see [`crate::resident`]).
//!
//! It serves what the host path serves with whole packs: every pack of the op's layout is one
//! tensor whole (no packing, or one tensor), so a pack's plan reads and writes the tensors
//! themselves, and the results are those of the host path bit for bit (the same plan, combined
//! in the same order). Anything else (packs of several tensors or of parts of one, empty tensors,
//! a tensor not on the device it is keyed by, sizes that differ between devices) is left to the
//! host path, which also gives every error.

use super::aggregate::devices_match;
use super::all_reduce::AllReduce;
use crate::dtype::DType;
use crate::error::Result;
use crate::reduce_op::ReduceOp;
use crate::resident::ResidentStore;
use crate::values::{Destinations, Mirrored, PerDevice};

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

impl AllReduce {
    /// What [`super::CrossDeviceOps::batch_reduce`] returns for `pairs`, computed in device memory
    /// by `store`, when the op would all-reduce them with whole packs (see the module
    /// documentation); `Ok(None)` when the host path must serve them. The destinations must be
    /// valid already.
    pub fn all_reduce_resident(&self, store: &dyn ResidentStore, op: ReduceOp, pairs: &[(PerDevice<ResidentTensor>, Destinations)]) -> Result<Option<Vec<Mirrored<ResidentTensor>>>> {
        let Some(first) = pairs.first() else { return Ok(None) };
        let devices = first.0.devices();
        if devices.is_empty() {
            return Ok(None);
        }
        // What the host path all-reduces (`AllReduceDispatch::dispatch_batch`): every value on
        // the devices of its destinations, all on the devices of the first.
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
        let Ok(layout) = self.packing.layout_of(&counts, &dtypes) else { return Ok(None) };
        let mut wholes = Vec::with_capacity(layout.packs().len());
        for (index, pieces) in layout.packs().iter().enumerate() {
            match pieces.as_slice() {
                [x] if x.len == counts[x.tensor] => wholes.push((index, x.tensor)),
                _ => return Ok(None),
            }
        }
        let mut made: Vec<Vec<u64>> = Vec::with_capacity(wholes.len());
        let run = wholes.iter().try_for_each(|&(index, t)| {
            crate::log::note(|| format!("AllReduce({}) of GPU tensor {t} in device memory", self.algorithm.name()));
            let plan = self.algorithm.plan(&devices, dtypes[t], counts[t], index)?;
            let handles: Vec<u64> = grads.iter().map(|row| row[t].handle).collect();
            made.push(store.run_plan(&plan, op, &handles)?);
            Ok(())
        });
        if let Err(e) = run {
            for handle in made.into_iter().flatten() {
                store.release(handle);
            }
            return Err(e);
        }
        // made[pack][device] → one Mirrored per tensor, each device's result in its input's shape.
        let mut by_tensor: Vec<Option<Vec<u64>>> = vec![None; counts.len()];
        for ((_, t), outs) in wholes.iter().zip(made) {
            by_tensor[*t] = Some(outs);
        }
        by_tensor
            .into_iter()
            .enumerate()
            .map(|(t, outs)| {
                let outs = outs.expect("every tensor is a whole pack");
                Mirrored::new(devices.iter().zip(outs).zip(&grads).map(|((d, handle), row)| (d.clone(), ResidentTensor { handle, dtype: dtypes[t], shape: row[t].shape.clone() })))
            })
            .collect::<Result<_>>()
            .map(Some)
    }
}
