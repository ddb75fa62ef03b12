//! `MultiWorkerAllReduce` (SPEC §5.9): gradients split by size between all-reduce specs, each
//! spec reducing its share across all workers' devices with its algorithm (`nccl`, `xring`,
//! the two-level `nccl/…` and `pscpu/pscpu`, or the flat shuffles). Results come back in input
//! order, each labelled with the device it belongs to (TensorFlow reordered and mislabelled).
//! With a process group installed, rank `r` is worker `r` and passes only its own devices'
//! values: flat `nccl` specs use the transport's all-reduce, the others run their plans across
//! the ranks ([`Runner`]).

use super::all_reduce::{group_by_device, ungroup, AllReduceDispatch};
use super::processes::Runner;
use super::on_device::{NcclLevel, PackPlan, Share};
use super::{AllReduceAlgorithm, CrossDeviceOps, Packing};
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::plan::Plan;
use crate::reduce_op::ReduceOp;
use crate::algo::two_level::split_by_task;
use crate::spec::{after_nccl_plan, aux_devices, group_device_names, sum_grad_plan, AllReduceSpec};
use crate::tensor::Tensor;
use crate::values::{Destinations, Mirrored, PerDevice, Value};
use std::sync::Arc;
use std::time::Duration;

/// All-reduce across the devices of several workers, following a list of specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiWorkerAllReduce {
    /// Each worker's device prefix, e.g. `/job:worker/replica:0/task:1`.
    pub worker_devices: Vec<String>,
    /// GPUs (or virtual devices) per worker.
    pub num_gpus_per_worker: usize,
    /// The specs, limits ascending, the last taking every remaining gradient.
    pub specs: Vec<AllReduceSpec>,
    /// Packing applied to each spec's share.
    pub packing: Packing,
    /// How long an all-reduce across processes waits for the other ranks (TF 2's
    /// `CommunicationOptions.timeout_seconds`); `None`: [`DEFAULT_TIMEOUT`](super::processes::DEFAULT_TIMEOUT).
    pub timeout: Option<Duration>,
}

impl MultiWorkerAllReduce {
    /// Checks that the specs take every gradient (the last limit is negative).
    pub fn new(worker_devices: Vec<String>, num_gpus_per_worker: usize, specs: Vec<AllReduceSpec>, packing: Packing) -> Result<Self> {
        if specs.last().is_none_or(|s| s.limit >= 0) {
            return fail(
                ErrorCode::InvalidArgument,
                "all-reduce spec limits must ascend and the last must be -1, so that every gradient is reduced",
            );
        }
        Ok(MultiWorkerAllReduce { worker_devices, num_gpus_per_worker, specs, packing, timeout: None })
    }

    /// This op with `timeout` for its cross-process waits.
    pub fn with_timeout(self, timeout: Option<Duration>) -> Self {
        MultiWorkerAllReduce { timeout, ..self }
    }

    fn reduce_share(&self, op: ReduceOp, spec: &AllReduceSpec, runner: &Runner, local: &[String], grads: &[Vec<Tensor>]) -> Result<Vec<Vec<Tensor<'static>>>> {
        self.packing.around(grads, |pack| {
            if spec.alg == "nccl" {
                return runner.flat_pack(local, op, pack);
            }
            let plan = self.pack_plan(spec, runner.devices(local), pack.dtype(), pack.elements(), pack.index())?;
            runner.run_pack(&plan, op, pack)
        })
    }

    /// The plan of `spec` (not `nccl`) reducing pack `index` of `elements` elements of `dtype`
    /// over `devices` (flat shuffles rotate their gather devices by the pack's index).
    fn pack_plan(&self, spec: &AllReduceSpec, devices: &[String], dtype: DType, elements: usize, index: usize) -> Result<Plan> {
        let gpu_indices: Vec<usize> = (0..self.num_gpus_per_worker).collect();
        sum_grad_plan(devices, elements, dtype, &spec.alg, self.worker_devices.len(), &gpu_indices, &self.aux(spec, index)?, spec.shards)
    }

    /// The auxiliary devices of `spec`'s plan for pack `index`.
    fn aux(&self, spec: &AllReduceSpec, index: usize) -> Result<Vec<String>> {
        let aux = aux_devices(&spec.alg, &self.worker_devices, self.num_gpus_per_worker);
        if spec.alg.contains('/') {
            return Ok(aux);
        }
        let shuffle = spec.alg.contains("pscpu") || spec.alg.contains("psgpu");
        let mut groups = group_device_names(&aux, if shuffle { spec.shards } else { 1 })?;
        let at = index % groups.len();
        Ok(groups.swap_remove(at))
    }

    /// The gradients (of `counts` elements, decided on the first device) each spec takes, in
    /// spec order, skipping specs that take none (`split_grads_by_size`).
    fn split(&self, counts: &[usize]) -> Vec<(&AllReduceSpec, Vec<usize>)> {
        let mut remaining: Vec<usize> = (0..counts.len()).collect();
        let mut shares = Vec::new();
        for spec in &self.specs {
            let take: Vec<usize> = if spec.limit < 0 {
                std::mem::take(&mut remaining)
            } else {
                let (small, large) = remaining.iter().partition(|&&i| counts[i] as i64 <= spec.limit);
                remaining = large;
                small
            };
            if !take.is_empty() {
                shares.push((spec, take));
            }
        }
        shares
    }
}

impl AllReduceDispatch for MultiWorkerAllReduce {
    fn across_processes(&self) -> bool {
        crate::group::current().is_some()
    }

    fn batch_all_reduce(&self, op: ReduceOp, values: &[&PerDevice<Value>]) -> Result<Vec<Mirrored<Value<'static>>>> {
        let (devices, grads) = group_by_device(values)?;
        let runner = Runner::new(
            "MultiWorkerAllReduce all-reduce",
            &format!("{self:?}"),
            op,
            &devices,
            &grads.first().map(|g| g.iter().collect::<Vec<_>>()).unwrap_or_default(),
            Some(&self.worker_devices),
            self.timeout,
        )?;
        let counts: Vec<usize> = grads.first().map_or(Vec::new(), |g| g.iter().map(|t| t.num_elements()).collect());
        let mut reduced: Vec<Vec<Option<Tensor<'static>>>> = grads.iter().map(|_| vec![None; counts.len()]).collect();
        for (spec, take) in self.split(&counts) {
            crate::log::note(|| format!("MultiWorkerAllReduce: spec {spec:?} takes {} tensors, packing {:?}", take.len(), self.packing));
            let share: Vec<Vec<Tensor>> = grads.iter().map(|g| take.iter().map(|&i| g[i].view()).collect()).collect();
            for (d, per) in self.reduce_share(op, spec, &runner, &devices, &share)?.into_iter().enumerate() {
                for (&i, t) in take.iter().zip(per) {
                    reduced[d][i] = Some(t);
                }
            }
        }
        let reduced = reduced.into_iter().map(|per| per.into_iter().map(|t| t.expect("every gradient reduced")).collect()).collect();
        ungroup(&devices, reduced)
    }
}

impl CrossDeviceOps for MultiWorkerAllReduce {
    fn reduce_implementation(&self, op: ReduceOp, value: &PerDevice<Value>, destinations: &Destinations) -> Result<Mirrored<Value<'static>>> {
        self.dispatch_reduce(op, value, destinations)
    }

    fn resident_shares<'a>(&'a self, devices: &'a [String], counts: &[usize], dtypes: &[DType]) -> Result<Option<Vec<Share<'a>>>> {
        if self.across_processes() {
            return Ok(None);
        }
        let mut shares = Vec::new();
        for (spec, tensors) in self.split(counts) {
            let (c, d): (Vec<usize>, Vec<DType>) = tensors.iter().map(|&i| (counts[i], dtypes[i])).unzip();
            let Ok(layout) = self.packing.layout_of(&c, &d) else { return Ok(None) };
            let (plan, nccl): (PackPlan, NcclLevel) = if spec.alg == "nccl" {
                (Box::new(move |dtype, elements, _| AllReduceAlgorithm::Nccl.plan(devices, dtype, elements, 0)), NcclLevel::All)
            } else {
                let plan: PackPlan = Box::new(move |dtype, elements, index| Ok(Arc::new(self.pack_plan(spec, devices, dtype, elements, index)?)));
                let nccl = if spec.alg.starts_with("nccl/") {
                    let rest: PackPlan = Box::new(move |dtype, elements, index| match after_nccl_plan(devices, elements, dtype, &spec.alg, &self.aux(spec, index)?, spec.shards)? {
                        Some(rest) => Ok(Arc::new(rest)),
                        None => fail(ErrorCode::Internal, format!("{} has no NCCL level", spec.alg)),
                    });
                    NcclLevel::FirstLevel { workers: split_by_task(devices)?, rest }
                } else {
                    NcclLevel::None
                };
                (plan, nccl)
            };
            shares.push(Share { tensors, layout, plan, nccl });
        }
        Ok(Some(shares))
    }

    fn batch_reduce_implementation(&self, op: ReduceOp, pairs: &[(PerDevice<Value>, Destinations)]) -> Result<Vec<Mirrored<Value<'static>>>> {
        self.dispatch_batch(op, pairs)
    }
}
