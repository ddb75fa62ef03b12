//! `AllReduceCrossDeviceOps` (SPEC §5.8, TF 2's `NcclAllReduce` / `HierarchicalCopyAllReduce`):
//! gradients are grouped per device, optionally packed, all-reduced with NCCL's ring or
//! hierarchical copy, unpacked and returned per variable. Falls back to reducing on one device
//! when destinations differ from the values' devices or a value is sparse.

use super::aggregate::devices_match;
use super::on_device::{NcclLevel, PackPlan, Share};
use super::{CrossDeviceOps, ReductionToOneDevice, Accumulation};
use crate::algo::hierarchical_copy::hierarchical_copy;
use crate::algo::ring::{ring, ring_permutations};
use crate::algo::start;
use crate::error::{fail, ErrorCode, Result};
use crate::pack::{check_isomorphic, reduce_packs, reduce_packs_concurrently, AggregateSmallTensorPacker, ConcatAndSplitPacker, Layout, Pack};
use crate::dtype::DType;
use crate::memo::Memo;
use crate::plan::{host, Plan, Step};
use crate::reduce_op::ReduceOp;
use crate::tensor::Tensor;
use crate::values::{Destinations, Mirrored, PerDevice, Value};
use std::sync::{Arc, Mutex, OnceLock};

/// The weight of the plans [`AllReduceAlgorithm::plan`] remembers (about the bytes of their
/// steps).
const PLAN_BYTES: usize = 16 << 20;

/// The all-reduce algorithm of [`AllReduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllReduceAlgorithm {
    /// NCCL's ring (on host devices: the ring schedule as a plan).
    Nccl,
    /// DGX-1 style hierarchical copy.
    HierarchicalCopy,
}

impl AllReduceAlgorithm {
    /// Parses `"nccl"` or `"hierarchical_copy"`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "nccl" => Ok(AllReduceAlgorithm::Nccl),
            "hierarchical_copy" => Ok(AllReduceAlgorithm::HierarchicalCopy),
            other => fail(
                ErrorCode::InvalidArgument,
                format!("unsupported all_reduce_alg {other:?}: expected 'nccl' or 'hierarchical_copy'"),
            ),
        }
    }

    /// The public name.
    pub fn name(self) -> &'static str {
        match self {
            AllReduceAlgorithm::Nccl => "nccl",
            AllReduceAlgorithm::HierarchicalCopy => "hierarchical_copy",
        }
    }

    /// The plan reducing pack `index` of `elements` elements over `devices`, remembered for the
    /// process (packs reduced concurrently share it): a training loop reduces the same gradients
    /// step after step, and building and checking a plan for a small pack takes longer than
    /// reducing it.
    pub fn plan(self, devices: &[String], dtype: DType, elements: usize, index: usize) -> Result<Arc<Plan>> {
        static PLANS: OnceLock<Mutex<Memo<Arc<Plan>>>> = OnceLock::new();
        let plans = || PLANS.get_or_init(|| Mutex::new(Memo::new(PLAN_BYTES))).lock().unwrap_or_else(|e| e.into_inner());
        // Only hierarchical copy's plans depend on the pack's index (it rotates the roots).
        let index = if self == AllReduceAlgorithm::HierarchicalCopy { index } else { 0 };
        let mut key = format!("{}/{}/{elements}/{index}", self.name(), dtype.name());
        for d in devices {
            key.push('/');
            key.push_str(d);
        }
        if let Some(plan) = plans().get(&key) {
            return Ok(plan);
        }
        let plan = Arc::new(self.build(devices, dtype, elements, index)?);
        let weight = key.len() + std::mem::size_of::<Step>() * plan.stages.iter().map(Vec::len).sum::<usize>();
        plans().insert(&key, plan.clone(), weight);
        Ok(plan)
    }

    fn build(self, devices: &[String], dtype: DType, elements: usize, index: usize) -> Result<Plan> {
        let (mut b, srcs) = start(self.name(), devices, dtype, elements)?;
        let n = srcs.len();
        let placed = match self {
            AllReduceAlgorithm::Nccl => {
                let (pred, rank) = ring_permutations(1, 1, &(0..n).collect::<Vec<_>>())?;
                ring(&mut b, &srcs, 1, &pred, &rank, 0, true)
            }
            AllReduceAlgorithm::HierarchicalCopy => hierarchical_copy(&mut b, &srcs, index, 0, true),
        };
        b.finish(placed.outputs)
    }
}

/// How gradients are packed before the all-reduce (`_pack_tensors`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Each gradient on its own.
    None,
    /// Concatenated and split into a number of packs.
    ConcatAndSplit(ConcatAndSplitPacker),
    /// Runs of small float32 gradients concatenated.
    SmallTensors(AggregateSmallTensorPacker),
}

impl Packing {
    /// `num_packs > 0` → concat/split; else both aggregation limits > 0 → small tensors; else none.
    pub fn new(num_packs: i64, agg_small_grads_max_bytes: i64, agg_small_grads_max_group: i64) -> Result<Packing> {
        Ok(if num_packs > 0 {
            Packing::ConcatAndSplit(ConcatAndSplitPacker::new(num_packs)?)
        } else if agg_small_grads_max_bytes > 0 && agg_small_grads_max_group > 0 {
            Packing::SmallTensors(AggregateSmallTensorPacker::new(agg_small_grads_max_bytes, agg_small_grads_max_group)?)
        } else {
            Packing::None
        })
    }

    /// The packs of `grads` (`grads[device][variable]`, decided on device 0).
    pub fn layout(&self, grads: &[Vec<Tensor>]) -> Result<Layout> {
        check_isomorphic(grads)?;
        let first: &[Tensor] = grads.first().map_or(&[], |g| g.as_slice());
        self.layout_of(&first.iter().map(|t| t.num_elements()).collect::<Vec<_>>(), &first.iter().map(|t| t.dtype()).collect::<Vec<_>>())
    }

    /// The packs of gradients of `counts` elements of `dtypes` (one device's list).
    pub fn layout_of(&self, counts: &[usize], dtypes: &[DType]) -> Result<Layout> {
        Ok(match self {
            Packing::None => Layout::each(counts),
            Packing::ConcatAndSplit(p) => p.checked_layout_of(counts, dtypes)?,
            Packing::SmallTensors(p) => p.layout_of(counts, dtypes).0,
        })
    }

    /// All-reduces `grads` pack by pack, `reduce` writing each pack's results (see
    /// [`reduce_packs`]: packs are reduced in place, never built); returns the results per device
    /// in the gradients' order and shapes.
    pub fn around(&self, grads: &[Vec<Tensor>], reduce: impl FnMut(&mut Pack) -> Result<()>) -> Result<Vec<Vec<Tensor<'static>>>> {
        reduce_packs(grads, &self.layout(grads)?, reduce)
    }
}

/// All-reduce across the values' own devices with [`AllReduceAlgorithm`] and [`Packing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllReduce {
    /// The algorithm.
    pub algorithm: AllReduceAlgorithm,
    /// The packing.
    pub packing: Packing,
}

fn dense<'v, 'a>(v: &'v Value<'a>) -> Option<&'v Tensor<'a>> {
    match v {
        Value::Dense(t) => Some(t),
        _ => None,
    }
}

/// The dense tensors of `values` (all on the same devices) per device, in the order of the
/// first value's devices: `(devices, grads[device][variable])`.
pub(crate) fn group_by_device<'v, 'a>(values: &[&'v PerDevice<Value<'a>>]) -> Result<(Vec<String>, Vec<Vec<Tensor<'v>>>)> {
    let devices = values[0].devices();
    let grads = devices
        .iter()
        .map(|d| values.iter().map(|v| v.get(d).map(|x| dense(x).expect("dense checked").view())).collect())
        .collect::<Result<_>>()?;
    Ok((devices, grads))
}

/// Runs `plan` over `across` and gives each result its input's shape.
pub(crate) fn run_across(plan: &Plan, op: ReduceOp, across: &[&Tensor]) -> Result<Vec<Tensor<'static>>> {
    crate::log::note(|| plan.describe_run(op));
    let outs = host::run(plan, op, &across.iter().map(|t| &t.data).collect::<Vec<_>>())?;
    across.iter().zip(outs).map(|(t, data)| Tensor::new(t.shape.clone(), data)).collect()
}

/// One Mirrored per variable from `reduced[device][variable]`, each labelled with its device.
pub(crate) fn ungroup(devices: &[String], reduced: Vec<Vec<Tensor<'static>>>) -> Result<Vec<Mirrored<Value<'static>>>> {
    let count = reduced.first().map_or(0, Vec::len);
    // The tensors move into their Mirrored values: no result is copied.
    let mut per_device: Vec<_> = reduced.into_iter().map(Vec::into_iter).collect();
    (0..count)
        .map(|_| {
            Mirrored::new(devices.iter().zip(per_device.iter_mut()).map(|(d, per)| {
                (d.clone(), Value::Dense(per.next().expect("every device has a result per variable")))
            }))
        })
        .collect()
}

/// An op whose fast path all-reduces values across their own devices, falling back to
/// reduction to one device (the first destination) otherwise (`AllReduceCrossTowerOps`'
/// dispatch, shared by its multi-worker subclass).
pub(crate) trait AllReduceDispatch {
    /// All-reduces dense values that share their devices.
    fn batch_all_reduce(&self, op: ReduceOp, values: &[&PerDevice<Value>]) -> Result<Vec<Mirrored<Value<'static>>>>;

    /// Whether the values are spread over processes, where reducing on one device (the
    /// fallback) would see only this process's share.
    fn across_processes(&self) -> bool {
        false
    }

    /// `_reduce`.
    fn dispatch_reduce(&self, op: ReduceOp, value: &PerDevice<Value>, destinations: &Destinations) -> Result<Mirrored<Value<'static>>> {
        if all_reducible(value, destinations)? {
            return Ok(self.batch_all_reduce(op, &[value])?.remove(0));
        }
        if self.across_processes() {
            return fail(
                ErrorCode::InvalidInput,
                "across processes, MultiWorkerAllReduce all-reduces dense values onto their own devices: pass tensors (not IndexedSlices) and destinations equal to the values' devices",
            );
        }
        if value.iter().any(|(_, v)| v.contains_indexed_slices()) {
            crate::log::note(|| "warning: Efficient allreduce is not supported for IndexedSlices.".into());
        }
        let first = destinations.devices()?.into_iter().next();
        ReductionToOneDevice::new(first.as_deref(), Accumulation::AddN)?.reduce_implementation(op, value, destinations)
    }

    /// `_batch_reduce`.
    fn dispatch_batch(&self, op: ReduceOp, pairs: &[(PerDevice<Value>, Destinations)]) -> Result<Vec<Mirrored<Value<'static>>>> {
        let mut all = !pairs.is_empty();
        for (v, d) in pairs {
            all = all && all_reducible(v, d)? && devices_match(v, &Destinations::Values(pairs[0].0.devices()))?;
        }
        if all {
            return self.batch_all_reduce(op, &pairs.iter().map(|(v, _)| v).collect::<Vec<_>>());
        }
        crate::log::note(|| "warning: Efficient batch_reduce is not supported if destinations are different.".into());
        pairs.iter().map(|(v, d)| self.dispatch_reduce(op, v, d)).collect()
    }
}

fn all_reducible(value: &PerDevice<Value>, destinations: &Destinations) -> Result<bool> {
    Ok(devices_match(value, destinations)? && value.iter().all(|(_, v)| dense(v).is_some()))
}

impl AllReduceDispatch for AllReduce {
    fn batch_all_reduce(&self, op: ReduceOp, values: &[&PerDevice<Value>]) -> Result<Vec<Mirrored<Value<'static>>>> {
        let (devices, grads) = group_by_device(values)?;
        crate::log::note(|| format!("AllReduce({}): {} tensors, packing {:?}", self.algorithm.name(), values.len(), self.packing));
        let reduced = reduce_packs_concurrently(&grads, &self.packing.layout(&grads)?, |pack| {
            let plan = self.algorithm.plan(&devices, pack.dtype(), pack.elements(), pack.index())?;
            pack.run(&plan, op)
        })?;
        ungroup(&devices, reduced)
    }
}

impl CrossDeviceOps for AllReduce {
    fn reduce_implementation(&self, op: ReduceOp, value: &PerDevice<Value>, destinations: &Destinations) -> Result<Mirrored<Value<'static>>> {
        self.dispatch_reduce(op, value, destinations)
    }

    fn resident_shares<'a>(&'a self, devices: &'a [String], counts: &[usize], dtypes: &[DType]) -> Result<Option<Vec<Share<'a>>>> {
        let Ok(layout) = self.packing.layout_of(counts, dtypes) else { return Ok(None) };
        let plan: PackPlan = Box::new(move |dtype, elements, index| self.algorithm.plan(devices, dtype, elements, index));
        Ok(Some(vec![Share { tensors: (0..counts.len()).collect(), layout, plan, nccl: if self.algorithm == AllReduceAlgorithm::Nccl { NcclLevel::All } else { NcclLevel::None } }]))
    }

    fn batch_reduce_implementation(&self, op: ReduceOp, pairs: &[(PerDevice<Value>, Destinations)]) -> Result<Vec<Mirrored<Value<'static>>>> {
        self.dispatch_batch(op, pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_remembered_per_algorithm_devices_dtype_size_and_root() {
        let devices: Vec<String> = (0..4).map(|d| format!("/cpu:{d}")).collect();
        let nccl = |e, i| AllReduceAlgorithm::Nccl.plan(&devices, DType::Float32, e, i).unwrap();
        let hc = |i| AllReduceAlgorithm::HierarchicalCopy.plan(&devices, DType::Float32, 64, i).unwrap();
        assert!(Arc::ptr_eq(&nccl(64, 0), &nccl(64, 0)));
        // NCCL's ring does not depend on the pack's index; hierarchical copy rotates its roots by it.
        assert!(Arc::ptr_eq(&nccl(64, 0), &nccl(64, 3)));
        assert!(!Arc::ptr_eq(&hc(0), &hc(1)));
        assert_ne!(*hc(0), *hc(1));
        assert_eq!(nccl(65, 0).elements, 65);
        assert_eq!(AllReduceAlgorithm::Nccl.plan(&devices, DType::Float64, 64, 0).unwrap().dtype, DType::Float64);
        assert_eq!(AllReduceAlgorithm::Nccl.plan(&devices[..3], DType::Float32, 64, 0).unwrap().inputs, 3);
        // A remembered plan is the plan the algorithm builds.
        assert_eq!(*nccl(64, 0), AllReduceAlgorithm::Nccl.build(&devices, DType::Float32, 64, 0).unwrap());
    }
}
