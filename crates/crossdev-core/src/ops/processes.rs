//! The cross-worker ops across processes. When a [`ProcessGroup`] is installed, each rank passes
//! the values of its own worker's devices; before any data moves the ranks agree on the op, the
//! reduce op and every tensor's dtype and shape (so mismatched ranks fail with
//! `ERR_RANK_MISMATCH` instead of summing wrong), and learn each other's devices. Plans are then
//! built over the devices of all ranks, exactly as in one process, and run by the
//! [distributed executor](crate::plan::distributed); flat all-reduces use the transport's own
//! collective (MPI_Allreduce) where it matches crossdev's semantics.

use super::all_reduce::run_across;
use super::AllReduceAlgorithm;
use crate::algo::two_level::split_by_task;
use crate::device::{canonicalize, DeviceSpec};
use crate::error::{fail, CrossDeviceError, ErrorCode, Result};
use crate::group::{current, ProcessGroup, Wait};
use crate::kernels::cast::Element;
use crate::kernels::copy::to_vec;
use crate::kernels::output_vec;
use crate::kernels::reduce_n::reduce_n;
use crate::pack::Pack;
use crate::plan::{distributed, Plan};
use crate::reduce_op::ReduceOp;
use crate::tensor::{Buffer, Scalar, Tensor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a cross-process op waits for its peers unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What one rank proposes to reduce; every field but `devices` must match across ranks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Offer {
    op: String,
    reduce: String,
    tensors: Vec<String>,
    devices: Vec<String>,
}

/// The devices of all ranks, rank after rank, and which rank owns which task.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// Every rank's devices, in rank order (the device list plans are built over).
    pub devices: Vec<String>,
    /// `(job, replica, task)` of each rank's worker.
    tasks: Vec<(String, i64, i64)>,
}

fn task_of(device: &str) -> Result<(String, i64, i64)> {
    let s = DeviceSpec::parse(&canonicalize(device, None)?)?;
    Ok((s.job.unwrap_or_else(|| "localhost".into()), s.replica.unwrap_or(0), s.task.unwrap_or(0)))
}

impl Layout {
    /// The rank owning each of `plan`'s devices (by its worker task).
    fn placement(&self, plan: &Plan) -> Result<Vec<usize>> {
        plan.devices
            .iter()
            .map(|d| {
                let t = task_of(d)?;
                self.tasks.iter().position(|x| *x == t).ok_or_else(|| {
                    CrossDeviceError::new(ErrorCode::InvalidDevice, format!("device {d} of the {} plan belongs to no rank's worker", plan.algorithm))
                })
            })
            .collect()
    }
}

/// How a cross-worker op runs its all-reduces: in this process over every worker's (virtual)
/// devices, or across the ranks of a process group over this rank's devices.
pub(crate) enum Runner {
    /// All devices are in this process.
    Local,
    /// The devices are spread over the ranks of `group`.
    Processes { group: Arc<dyn ProcessGroup>, layout: Layout, wait: Wait },
}

impl Runner {
    /// `Local` with no process group; otherwise agrees with the other ranks on `op` (a stable
    /// description of the op object) reducing `tensors` with `reduce` over this rank's `devices`.
    /// `worker_of_rank` names the worker rank `r` must be (MultiWorkerAllReduce's
    /// `worker_devices`), when the op has such a list.
    pub fn new(what: &str, op: &str, reduce: ReduceOp, devices: &[String], tensors: &[&Tensor], worker_of_rank: Option<&[String]>, timeout: Option<Duration>) -> Result<Runner> {
        let Some(group) = current() else { return Ok(Runner::Local) };
        let wait = Wait::new(what, timeout.unwrap_or(DEFAULT_TIMEOUT));
        let (me, n) = (group.rank(), group.size());
        let offer = Offer {
            op: op.to_string(),
            reduce: reduce.name().to_string(),
            tensors: tensors.iter().map(|t| format!("{} {:?}", t.dtype().name(), t.shape)).collect(),
            devices: devices.iter().map(|d| canonicalize(d, None)).collect::<Result<_>>()?,
        };
        let mine = serde_json::to_vec(&offer).expect("an offer serialises");
        let offers = group
            .all_gather(&mine, &Wait { what: format!("{what} (agreeing on what to reduce)"), ..wait.clone() })?
            .iter()
            .map(|b| serde_json::from_slice::<Offer>(b).map_err(|e| CrossDeviceError::new(ErrorCode::RankMismatch, format!("{what}: a rank sent an unreadable offer ({e}): is it running another crossdev version?"))))
            .collect::<Result<Vec<Offer>>>()?;
        for (r, o) in offers.iter().enumerate() {
            let differ = |field: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
                CrossDeviceError::new(ErrorCode::RankMismatch, format!("{what}: rank {r} and rank {me} differ in {field}: rank {r} has {a:?}, rank {me} has {b:?}; every rank must make the same calls with values of the same dtypes and shapes"))
            };
            if o.op != offer.op {
                return Err(differ("the op", &o.op, &offer.op));
            }
            if o.reduce != offer.reduce {
                return Err(differ("the reduce op", &o.reduce, &offer.reduce));
            }
            if o.tensors != offer.tensors {
                return Err(differ("the tensors (dtype and shape of each)", &o.tensors, &offer.tensors));
            }
        }
        let mut tasks = Vec::with_capacity(n);
        for (r, o) in offers.iter().enumerate() {
            let own = o.devices.iter().map(|d| task_of(d)).collect::<Result<Vec<_>>>()?;
            let Some(t) = own.first().cloned() else { return fail(ErrorCode::EmptyValue, format!("{what}: rank {r} passed no device")) };
            if own.iter().any(|x| *x != t) {
                return fail(ErrorCode::InvalidDevice, format!("{what}: rank {r} passed devices of several workers ({:?}); across processes each rank passes the devices of its own worker", o.devices));
            }
            if let Some(other) = tasks.iter().position(|x| *x == t) {
                return fail(
                    ErrorCode::InvalidDevice,
                    format!("{what}: ranks {other} and {r} both passed devices of /job:{}/replica:{}/task:{}; rank r owns the devices of worker r, e.g. /job:worker/replica:0/task:<rank>/device:CPU:0", t.0, t.1, t.2),
                );
            }
            if let Some(workers) = worker_of_rank {
                let expected = workers.get(r).map(|w| task_of(&format!("{w}/device:CPU:0"))).transpose()?;
                if expected.as_ref() != Some(&t) {
                    return fail(
                        ErrorCode::InvalidDevice,
                        format!("{what}: rank {r} passed devices of /job:{}/replica:{}/task:{}, but worker_devices[{r}] is {:?}; across processes rank r owns the devices of worker r ({n} ranks, {} workers)", t.0, t.1, t.2, workers.get(r), workers.len()),
                    );
                }
            }
            tasks.push(t);
        }
        if let Some(workers) = worker_of_rank.filter(|w| w.len() != n) {
            return fail(ErrorCode::InvalidArgument, format!("{what}: {} worker devices for {n} ranks; across processes there is one worker per rank", workers.len()));
        }
        let layout = Layout { devices: offers.into_iter().flat_map(|o| o.devices).collect(), tasks };
        debug_assert_eq!(split_by_task(&layout.devices)?.len(), n);
        Ok(Runner::Processes { group, layout, wait })
    }

    /// The devices the op's plans are built over: this process's, or every rank's.
    pub fn devices<'a>(&'a self, local: &'a [String]) -> &'a [String] {
        match self {
            Runner::Local => local,
            Runner::Processes { layout, .. } => &layout.devices,
        }
    }

    /// Runs `plan` (built over [`Self::devices`]) on this process's tensors `across`, one per
    /// local device; returns this process's results.
    pub fn run(&self, plan: &Plan, op: ReduceOp, across: &[&Tensor]) -> Result<Vec<Tensor<'static>>> {
        let Runner::Processes { group, layout, wait } = self else { return run_across(plan, op, across) };
        let placement = layout.placement(plan)?;
        let me = group.rank();
        let mut mine = across.iter();
        let inputs: Vec<Option<&Buffer>> = (0..plan.inputs).map(|i| (placement[plan.buffers[i].device] == me).then(|| mine.next().map(|t| &t.data)).flatten()).collect();
        crate::log::note(|| format!("plan {} across {} ranks: {} of {} {} elements, {} stages", plan.algorithm, group.size(), op.name(), plan.elements, plan.dtype.name(), plan.stages.len()));
        let outs = distributed::run(group.as_ref(), plan, op, &placement, &inputs, wait)?;
        across.iter().zip(outs.into_iter().flatten()).map(|(t, data)| Tensor::new(t.shape.clone(), data)).collect()
    }

    /// [`Self::run`] for a pack: in this process in place ([`Pack::run`]); across processes
    /// over the concrete pack.
    pub fn run_pack(&self, plan: &Plan, op: ReduceOp, pack: &mut Pack) -> Result<()> {
        match self {
            Runner::Local => pack.run(plan, op),
            Runner::Processes { .. } => pack.reduce_flat(|across| self.run(plan, op, across)),
        }
    }

    /// [`Self::flat`] for a pack: in this process NCCL's ring in place ([`Pack::run`]); across
    /// processes over the concrete pack.
    pub fn flat_pack(&self, local_devices: &[String], op: ReduceOp, pack: &mut Pack) -> Result<()> {
        match self {
            Runner::Local => pack.run(&*AllReduceAlgorithm::Nccl.plan(local_devices, pack.dtype(), pack.elements(), 0)?, op),
            Runner::Processes { .. } => pack.reduce_flat(|across| self.flat(local_devices, op, across)),
        }
    }

    /// A flat all-reduce of `across` (one tensor per local device): across processes, this
    /// rank's tensors reduced locally, then the transport's all-reduce, then copied to each local
    /// device; where the transport has no matching collective (and in one process), NCCL's ring
    /// as a plan.
    pub fn flat(&self, local_devices: &[String], op: ReduceOp, across: &[&Tensor]) -> Result<Vec<Tensor<'static>>> {
        let dtype = across[0].dtype();
        if let Runner::Processes { group, layout, wait } = self {
            if group.has_all_reduce(dtype, op.combiner()) {
                crate::log::note(|| format!("flat all-reduce across {} ranks: {} of {} {} elements", group.size(), op.name(), across[0].num_elements(), dtype.name()));
                let total = layout.devices.len();
                return crate::for_dtype!(dtype, T => flat_typed::<T>(group.as_ref(), op, across, total, wait));
            }
        }
        let plan = AllReduceAlgorithm::Nccl.plan(self.devices(local_devices), dtype, across[0].num_elements(), 0)?;
        self.run(&plan, op, across)
    }
}

fn flat_typed<T: Element + Scalar>(group: &dyn ProcessGroup, op: ReduceOp, across: &[&Tensor], total: usize, wait: &Wait) -> Result<Vec<Tensor<'static>>> {
    let xs: Vec<&[T]> = across.iter().map(|t| T::slice(&t.data).expect("dtype checked")).collect();
    let mut sum = output_vec::<T>(xs[0].len());
    reduce_n(op.combiner(), &xs, None, &mut sum);
    let mut all = output_vec::<T>(sum.len());
    group.all_reduce(across[0].dtype(), op.combiner(), bytemuck::cast_slice(&sum), bytemuck::cast_slice_mut(&mut all), wait)?;
    if op == ReduceOp::Mean {
        reduce_n(ReduceOp::Sum, &[&all], Some(total), &mut sum);
        std::mem::swap(&mut sum, &mut all);
    }
    let sum = all;
    across.iter().map(|t| Tensor::new(t.shape.clone(), T::owned(to_vec(&sum)))).collect()
}
