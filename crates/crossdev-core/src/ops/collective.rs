//! `CollectiveAllReduce` (SPEC §5.10, §1.14, §1.15): every variable all-reduced by one collective
//! over the devices of all workers. In one process the workers' devices are virtual
//! (`/job:worker/replica:0/task:1/device:CPU:0` …) and the collective runs as a ring plan.
//! With a process group installed, each rank passes its own worker's devices and the collective
//! is the transport's all-reduce ([`Runner::flat`]).

use super::all_reduce::{group_by_device, ungroup};
use super::processes::Runner;
use super::aggregate::{copy_value, devices_match};
use super::on_device::{NcclLevel, PackPlan, Share};
use super::{AllReduceAlgorithm, CrossDeviceOps};
use crate::algo::two_level::split_by_task;
use crate::device::{canonicalize, DeviceSpec};
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::pack::{group_by_size, reduce_packs, reduce_packs_concurrently, Layout, Pack};
use crate::reduce_op::ReduceOp;
use crate::values::{Destinations, Mirrored, PerDevice, Value};
use std::time::Duration;

/// All-reduce with one collective per variable across `num_workers` workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectiveAllReduce {
    /// Workers taking part.
    pub num_workers: usize,
    /// GPUs per worker (0: each worker contributes its CPU).
    pub num_gpus_per_worker: usize,
    /// Variables launched together (TensorFlow's name scope grouping; results are unaffected).
    pub all_reduce_merge_scope: usize,
    /// How long an all-reduce across processes waits for the other ranks (TF 2's
    /// `CommunicationOptions.timeout_seconds`); `None`: [`DEFAULT_TIMEOUT`](super::processes::DEFAULT_TIMEOUT).
    pub timeout: Option<Duration>,
    /// TF 2's `CommunicationOptions.bytes_per_pack`: above 0, the dense values (last first, as
    /// backprop produces them) are grouped by [`group_by_size`] and each group is concatenated
    /// into one all-reduce (TensorFlow's graph mode); 0 all-reduces each value on its own (its
    /// eager mode).
    pub bytes_per_pack: usize,
}

/// `CollectiveKeys.get_group_key`'s identity of a device set: `TYPE:index` of each device (job,
/// replica and task dropped, so every worker computes the same key), sorted, joined by `,`.
pub fn group_key_id(devices: &[String]) -> Result<String> {
    let mut names = devices
        .iter()
        .map(|d| {
            let s = DeviceSpec::parse(d)?;
            match (s.device_type, s.device_index) {
                (Some(t), Some(i)) => Ok(format!("{t}:{i}")),
                _ => fail(ErrorCode::InvalidDevice, format!("a collective needs devices with a type and index, got '{d}'")),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    names.sort();
    Ok(names.join(","))
}

fn reject_sparse(value: &PerDevice<Value>) -> Result<()> {
    if value.iter().any(|(_, v)| !matches!(v, Value::Dense(_))) {
        return fail(ErrorCode::InvalidInput, "`IndexSlices` is not supported for Collective All-Reduce.");
    }
    Ok(())
}

impl CollectiveAllReduce {
    fn batch_all_reduce(&self, op: ReduceOp, values: &[&PerDevice<Value>]) -> Result<Vec<Mirrored<Value<'static>>>> {
        let (local, grads) = group_by_device(values)?;
        let op_name = format!("{self:?}");
        let runner = Runner::new("CollectiveAllReduce all-reduce", &op_name, op, &local, &grads[0].iter().collect::<Vec<_>>(), None, self.timeout)?;
        let devices = runner.devices(&local);
        let workers = split_by_task(devices)?.len();
        if workers != self.num_workers {
            return fail(
                ErrorCode::InvalidArgument,
                format!("CollectiveAllReduce over {} workers got devices of {workers}: {devices:?}", self.num_workers),
            );
        }
        if devices.len() < 2 {
            return fail(ErrorCode::InvalidArgument, "num_workers * len(input_tensors) must be 2 or greater");
        }
        let count = grads[0].len();
        crate::log::note(|| format!("CollectiveAllReduce: {count} tensors over {} devices of {workers} workers, group {}", devices.len(), group_key_id(devices).unwrap_or_default()));
        // Each pack reduced in place (no concatenation) in one process, the packs concurrently;
        // across processes in the same order on every rank.
        let layout = self.layout(&grads[0].iter().map(|t| t.num_elements()).collect::<Vec<_>>(), &grads[0].iter().map(|t| t.dtype()).collect::<Vec<_>>());
        let reduce = |pack: &mut Pack| runner.flat_pack(&local, op, pack);
        let reduced = match runner {
            Runner::Local => reduce_packs_concurrently(&grads, &layout, reduce)?,
            Runner::Processes { .. } => reduce_packs(&grads, &layout, reduce)?,
        };
        ungroup(&local, reduced)
    }

    /// The packs of variables of `counts` elements of `dtypes`: one per variable, or grouped by
    /// size from the last.
    fn layout(&self, counts: &[usize], dtypes: &[DType]) -> Layout {
        let count = counts.len();
        let packs: Vec<Vec<usize>> = if self.bytes_per_pack == 0 {
            (0..count).map(|i| vec![i]).collect()
        } else {
            let reversed: Vec<usize> = (0..count).rev().collect();
            let bytes: Vec<usize> = reversed.iter().map(|&i| counts[i] * dtypes[i].size()).collect();
            group_by_size(&bytes, self.bytes_per_pack).into_iter().map(|g| g.into_iter().map(|k| reversed[k]).collect()).collect()
        };
        Layout::groups(counts, &packs)
    }

    /// Results on `destinations`: a device of the all-reduce keeps its own result; any other
    /// gets a copy of the first.
    fn redistribute(m: Mirrored<Value<'static>>, destinations: &Destinations) -> Result<Mirrored<Value<'static>>> {
        let wanted = destinations.devices()?;
        let entries = m.into_entries();
        let pick = |d: &String| -> Result<Value<'static>> {
            let key = canonicalize(d, None)?;
            Ok(match entries.iter().find(|(k, _)| *k == key) {
                Some((_, v)) => v.clone(),
                None => copy_value(&entries[0].1),
            })
        };
        Mirrored::new(wanted.iter().map(|d| Ok((d.clone(), pick(d)?))).collect::<Result<Vec<_>>>()?)
    }
}

impl CrossDeviceOps for CollectiveAllReduce {
    fn reduce_implementation(&self, op: ReduceOp, value: &PerDevice<Value>, destinations: &Destinations) -> Result<Mirrored<Value<'static>>> {
        reject_sparse(value)?;
        let all = self.batch_all_reduce(op, &[value])?.remove(0);
        if devices_match(value, destinations)? {
            return Ok(all);
        }
        Self::redistribute(all, destinations)
    }

    fn resident_shares<'a>(&'a self, devices: &'a [String], counts: &[usize], dtypes: &[DType]) -> Result<Option<Vec<Share<'a>>>> {
        // In one process, over the workers it was made for (the host path reports the rest).
        if crate::group::current().is_some() || devices.len() < 2 || !matches!(split_by_task(devices), Ok(w) if w.len() == self.num_workers) {
            return Ok(None);
        }
        let plan: PackPlan = Box::new(move |dtype, elements, _| AllReduceAlgorithm::Nccl.plan(devices, dtype, elements, 0));
        Ok(Some(vec![Share { tensors: (0..counts.len()).collect(), layout: self.layout(counts, dtypes), plan, nccl: NcclLevel::All }]))
    }

    fn batch_reduce_implementation(&self, op: ReduceOp, pairs: &[(PerDevice<Value>, Destinations)]) -> Result<Vec<Mirrored<Value<'static>>>> {
        for (v, _) in pairs {
            reject_sparse(v)?;
        }
        let mut all = !pairs.is_empty();
        for (v, d) in pairs {
            all = all && devices_match(v, d)? && devices_match(v, &Destinations::Values(pairs[0].0.devices()))?;
        }
        if all {
            return self.batch_all_reduce(op, &pairs.iter().map(|(v, _)| v).collect::<Vec<_>>());
        }
        pairs.iter().map(|(v, d)| self.reduce_implementation(op, v, d)).collect()
    }
}
