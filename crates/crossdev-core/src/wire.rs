//! The request/response protocol shared by the language bindings (napi and WebAssembly).
//!
//! A binding hands over a JSON request plus the raw bytes of every input TypedArray, and gets back
//! JSON metadata plus owned result buffers. Because argument interpretation, validation and
//! dispatch all happen here, the bindings stay a few lines each and behave identically.
//!
//! A tensor may also be a GPU tensor of the installed [`resident`] store: `{"gpu": handle}` in
//! place of `{"buf": index}`, in requests and in responses. An all-reduce of GPU tensors in this
//! process runs in device memory ([`crate::ops::on_device`]); other requests stage such inputs
//! through host memory (see [`resident`]). Results of a request with GPU inputs whose device is
//! a GPU come back as new GPU tensors. `upload`, `download`, `release` and `residentUsage` move
//! tensors to and from the GPU, free them and count them.

use crate::device::{canonicalize, resolve};
use crate::memo::Memo;
use crate::dtype::DType;
use crate::error::{fail, CrossDeviceError, ErrorCode, Result};
use crate::indexed_slices::IndexedSlices;
use crate::kernels::cast::{from_f64, to_f64};
use crate::algo::hierarchical_copy::build_hierarchical_copy;
use crate::algo::recursive_hd::build_recursive_hd_all_reduce;
use crate::algo::reduce_to_one::build_reduce_to_one;
use crate::algo::ring::{build_ring_all_reduce, ring_permutations};
use crate::algo::shuffle::build_shuffle_all_reduce;
use crate::algo::split::{padded_split, ragged_split_tensor, strip_padding};
use crate::algo::two_level::{build_two_level, FirstLevel, UpperLevel};
use crate::ops::collective::group_key_id;
use crate::ops::on_device::{all_reduce_resident, ResidentTensor};
use crate::ops::{CollectiveAllReduce, MultiWorkerAllReduce};
use crate::spec::{group_device_names, parse_spec, RawSpec};
use crate::ops::{Accumulation, AllReduce, AllReduceAlgorithm, CrossDeviceOps, Packing, ReductionToOneDevice};
use crate::pack::small_tensors::PackedRange;
use crate::pack::{extract_ranges, group_by_size, split_grads_by_size, AggregateSmallTensorPacker, ConcatAndSplitPacker};
use crate::plan::{host, Chunk, Plan, Step};
use crate::topology::{choose_on_machine, choose_the_best, Choice};
use crate::reduce_op::ReduceOp;
use crate::resident::{self, Usage};
use crate::tensor::{Buffer, Tensor};
use crate::values::{normalize_pairs, Destinations, Input, Mirrored, PerDevice, RawPair, Value};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

#[derive(Deserialize)]
#[serde(tag = "call", rename_all = "camelCase", rename_all_fields = "camelCase")]
enum Request {
    Reduce { ops: OpsW, op: String, value: InputW, destinations: Destinations },
    BatchReduce { ops: OpsW, op: String, pairs: Option<Vec<PairW>> },
    Broadcast { ops: OpsW, value: ValueW, destinations: Destinations },
    CheckOps { ops: OpsW },
    CheckTensor { tensor: TensorW },
    CheckValue { value: ValueW },
    Canonicalize { device: String, default: Option<String> },
    Resolve { device: String, current: Option<String> },
    CanonicalizeAll { devices: Vec<String> },
    Densify { value: ValueW },
    FromNumbers { buf: usize, dtype: String, shape: Vec<i64> },
    ChooseTheBest { devices: Vec<String>, links: Option<Vec<Vec<usize>>>, machine: Option<MachineW> },
    Plan { plan: PlanW },
    RunPlan { plan: PlanW, op: String, value: InputW },
    ExtractRanges { indices: Vec<usize>, range_size_limit: usize },
    RingPermutations { num_workers: usize, num_subchunks: usize, gpu_perm: Vec<usize> },
    GroupDeviceNames { devices: Vec<String>, group_size: usize },
    GroupKeyId { devices: Vec<String> },
    ParseSpec { spec: serde_json::Value },
    SplitGradsBySize { threshold: usize, element_counts: Vec<Vec<usize>> },
    GroupBySize { sizes: Vec<usize>, bytes_per_pack: usize },
    PaddedSplit { tensor: TensorW, pieces: usize },
    RaggedSplit { tensor: TensorW, pieces: usize },
    StripPadding { tensors: Vec<TensorW>, pad_len: usize },
    Pack { packer: PackerW, grads: Vec<Vec<TensorW>> },
    Unpack { packer: PackerW, grads: Vec<Vec<TensorW>>, info: serde_json::Value },
    ToNumbers { tensor: TensorW },
    Upload { tensor: TensorW, device: String },
    Download { tensor: TensorW },
    Release { handle: u64 },
    ResidentUsage,
}

/// The GPUs this machine has, as the facade found them (nvidia-smi).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MachineW {
    visible_gpus: usize,
    links: Vec<Vec<usize>>,
}

#[derive(Clone, Deserialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
enum OpsW {
    ReductionToOneDevice { reduce_to_device: Option<String>, accumulation: Option<String> },
    AllReduce { algorithm: String, num_packs: i64, agg_small_grads_max_bytes: i64, agg_small_grads_max_group: i64 },
    NcclAllReduce { num_packs: i64 },
    MultiWorkerAllReduce {
        worker_devices: Vec<String>,
        num_gpus_per_worker: usize,
        all_reduce_spec: serde_json::Value,
        num_packs: i64,
        agg_small_grads_max_bytes: i64,
        agg_small_grads_max_group: i64,
        timeout_seconds: Option<f64>,
    },
    CollectiveAllReduce { num_workers: usize, num_gpus_per_worker: usize, all_reduce_merge_scope: usize, timeout_seconds: Option<f64>, bytes_per_pack: Option<f64> },
    HierarchicalCopyAllReduce { num_packs: i64 },
}

#[derive(Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", rename_all_fields = "camelCase")]
enum PlanW {
    Ring { devices: Vec<String>, elements: usize, dtype: Option<String>, num_workers: Option<usize>, num_subchunks: Option<usize>, gpu_perm: Option<Vec<usize>> },
    Rechd { devices: Vec<String>, elements: usize, dtype: Option<String> },
    Shuffle { devices: Vec<String>, gather_devices: Vec<String>, elements: usize, dtype: Option<String> },
    HierarchicalCopy { devices: Vec<String>, elements: usize, dtype: Option<String>, index: Option<usize> },
    ReduceToOne { devices: Vec<String>, elements: usize, dtype: Option<String> },
    Nccl { devices: Vec<String>, elements: usize, dtype: Option<String> },
    #[serde(rename = "nccl/xring")]
    NcclXring { devices: Vec<String>, elements: usize, dtype: Option<String>, num_subchunks: Option<usize> },
    #[serde(rename = "nccl/rechd")]
    NcclRechd { devices: Vec<String>, elements: usize, dtype: Option<String> },
    #[serde(rename = "nccl/pscpu")]
    NcclPscpu { devices: Vec<String>, elements: usize, dtype: Option<String>, gather_devices: Vec<String> },
    #[serde(rename = "pscpu/pscpu")]
    PscpuPscpu { devices: Vec<String>, elements: usize, dtype: Option<String>, gather_devices: Vec<String>, second_gather_devices: Vec<String> },
    #[serde(rename = "pscpu/xring")]
    PscpuXring { devices: Vec<String>, elements: usize, dtype: Option<String>, gather_devices: Vec<String>, num_subchunks: Option<usize> },
}

impl PlanW {
    fn build(&self) -> Result<Plan> {
        let dt = |d: &Option<String>| DType::parse(d.as_deref().unwrap_or("float32"));
        match self {
            PlanW::Ring { devices, elements, dtype, num_workers, num_subchunks, gpu_perm } => {
                let workers = num_workers.unwrap_or(1);
                let perm = gpu_perm.clone().unwrap_or_else(|| (0..devices.len() / workers.max(1)).collect());
                build_ring_all_reduce(devices, *elements, dt(dtype)?, workers, num_subchunks.unwrap_or(1), &perm)
            }
            PlanW::Rechd { devices, elements, dtype } => build_recursive_hd_all_reduce(devices, *elements, dt(dtype)?),
            PlanW::Shuffle { devices, gather_devices, elements, dtype } => {
                build_shuffle_all_reduce(devices, gather_devices, *elements, dt(dtype)?)
            }
            PlanW::HierarchicalCopy { devices, elements, dtype, index } => {
                build_hierarchical_copy(devices, *elements, dt(dtype)?, index.unwrap_or(0))
            }
            PlanW::ReduceToOne { devices, elements, dtype } => build_reduce_to_one(devices, *elements, dt(dtype)?),
            PlanW::Nccl { devices, elements, dtype } => AllReduceAlgorithm::Nccl.plan(devices, dt(dtype)?, *elements, 0).map(std::sync::Arc::unwrap_or_clone),
            PlanW::NcclXring { devices, elements, dtype, num_subchunks } => {
                build_two_level(devices, *elements, dt(dtype)?, &FirstLevel::Nccl, &UpperLevel::Ring(num_subchunks.unwrap_or(1)))
            }
            PlanW::NcclRechd { devices, elements, dtype } => {
                build_two_level(devices, *elements, dt(dtype)?, &FirstLevel::Nccl, &UpperLevel::RecursiveHd)
            }
            PlanW::NcclPscpu { devices, elements, dtype, gather_devices } => {
                build_two_level(devices, *elements, dt(dtype)?, &FirstLevel::Nccl, &UpperLevel::Shuffle(gather_devices.clone()))
            }
            PlanW::PscpuPscpu { devices, elements, dtype, gather_devices, second_gather_devices } => build_two_level(
                devices,
                *elements,
                dt(dtype)?,
                &FirstLevel::Gather(gather_devices.clone()),
                &UpperLevel::Shuffle(second_gather_devices.clone()),
            ),
            PlanW::PscpuXring { devices, elements, dtype, gather_devices, num_subchunks } => build_two_level(
                devices,
                *elements,
                dt(dtype)?,
                &FirstLevel::Gather(gather_devices.clone()),
                &UpperLevel::Ring(num_subchunks.unwrap_or(1)),
            ),
        }
    }
}

#[derive(Serialize)]
struct ChunkOut {
    device: String,
    buf: usize,
    offset: usize,
    len: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum StepOut {
    Copy { src: ChunkOut, dst: ChunkOut },
    Reduce { srcs: Vec<ChunkOut>, dst: ChunkOut, last: bool },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanOut {
    algorithm: String,
    devices: Vec<String>,
    dtype: &'static str,
    elements: usize,
    stages: Vec<Vec<StepOut>>,
    bytes_moved: u64,
    bytes_by_link: std::collections::BTreeMap<String, u64>,
    text: String,
}

fn describe_plan(plan: &Plan) -> PlanOut {
    let chunk = |c: &Chunk| ChunkOut {
        device: plan.devices[plan.buffers[c.buf].device].clone(),
        buf: c.buf,
        offset: c.offset,
        len: c.len,
    };
    let moved = plan.bytes_moved();
    PlanOut {
        algorithm: plan.algorithm.clone(),
        devices: plan.devices.clone(),
        dtype: plan.dtype.name(),
        elements: plan.elements,
        stages: plan
            .stages
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|step| match step {
                        Step::Copy { src, dst } => StepOut::Copy { src: chunk(src), dst: chunk(dst) },
                        Step::Reduce { srcs, dst, last } => {
                            StepOut::Reduce { srcs: srcs.iter().map(chunk).collect(), dst: chunk(dst), last: *last }
                        }
                    })
                    .collect()
            })
            .collect(),
        bytes_moved: moved.total,
        bytes_by_link: moved.by_link.into_iter().map(|((a, b), n)| (format!("{a}->{b}"), n)).collect(),
        text: plan.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
enum PackerW {
    ConcatAndSplit { num_packs: i64 },
    SmallTensors { max_bytes: i64, max_group: i64 },
}

/// A tensor argument: input buffer `buf` (host elements), or GPU tensor `gpu` (a handle of the
/// installed [`resident`] store).
#[derive(Deserialize)]
struct TensorW {
    #[serde(default)]
    buf: Option<usize>,
    #[serde(default)]
    gpu: Option<u64>,
    dtype: String,
    shape: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
enum ValueW {
    Dense(TensorW),
    Sparse { values: TensorW, indices: TensorW, dense_shape: Vec<i64> },
    Many(Vec<ValueW>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum InputW {
    PerDevice(Vec<(String, ValueW)>),
    Located { device: Option<String>, value: ValueW },
    Sequence(String),
    Other(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum PairW {
    Pair(InputW, Destinations),
    Arity(usize),
    NotTuple,
}

/// A result tensor: result buffer `buf` (host elements), or the handle `gpu` of a GPU tensor.
#[derive(Serialize)]
struct TensorOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    buf: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu: Option<u64>,
    dtype: &'static str,
    shape: Vec<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
enum ValueOut {
    Dense(TensorOut),
    Sparse { values: TensorOut, indices: TensorOut, dense_shape: Vec<usize> },
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
enum ChoiceOut {
    ReductionToOneDevice { reason: String },
    AllReduce { algorithm: &'static str, num_packs: usize },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
enum ResponseW {
    Results(Vec<Vec<(String, ValueOut)>>),
    Plan(Box<PlanOut>),
    Choice(ChoiceOut),
    Ranges { ranges: Vec<(usize, usize)>, singles: Vec<usize> },
    Permutations { pred: Vec<Vec<usize>>, rank: Vec<Vec<usize>> },
    Groups(Vec<Vec<String>>),
    KeyId(String),
    Specs(Vec<(String, usize, i64)>),
    Split { small: Vec<(usize, Vec<usize>)>, large: Vec<(usize, Vec<usize>)> },
    Packs(Vec<Vec<usize>>),
    Parts { tensors: Vec<TensorOut>, pad_len: usize },
    Packed { grads: Vec<Vec<TensorOut>>, info: serde_json::Value },
    Value(ValueOut),
    Device(String),
    Devices(Vec<String>),
    Usage(Usage),
    Ok,
    Error { code: &'static str, message: String },
}

/// A response: JSON metadata, and the result buffers it refers to by index (`buf`).
pub struct Response {
    /// JSON: `{"results": …}`, `{"value": …}`, `{"device": …}`, `{"devices": …}`, `"ok"` or
    /// `{"error": {"code", "message"}}`.
    pub meta: String,
    /// Result buffers, owned, to be handed to the caller without a copy where the host allows.
    pub buffers: Vec<Buffer<'static>>,
}

fn shape_of(dims: &[i64]) -> Result<Vec<usize>> {
    dims.iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .or_else(|_| {
            fail(
                ErrorCode::InvalidTensor,
                format!("Shape dimensions must be non-negative integers, got {dims:?}"),
            )
        })
}

struct Decoder<'a> {
    inputs: &'a [&'a [u8]],
    /// Whether a GPU tensor was among the arguments (staged through host memory): results on
    /// GPU devices then go back to the GPU.
    staged: Cell<bool>,
}

impl<'a> Decoder<'a> {
    fn tensor(&self, t: &TensorW) -> Result<Tensor<'a>> {
        let dtype = DType::parse(&t.dtype)?;
        match (t.buf, t.gpu) {
            (Some(buf), None) => {
                let bytes = self.inputs.get(buf).ok_or_else(|| CrossDeviceError::new(ErrorCode::Protocol, format!("no input buffer {buf}")))?;
                Tensor::from_bytes(dtype, shape_of(&t.shape)?, bytes)
            }
            (None, Some(handle)) => {
                let data = resident::store()?.download(handle)?;
                if data.dtype() != dtype {
                    return fail(ErrorCode::Protocol, format!("GPU tensor {handle} holds {}, the request says {}", data.dtype().name(), dtype.name()));
                }
                self.staged.set(true);
                Tensor::new(shape_of(&t.shape)?, data)
            }
            _ => fail(ErrorCode::Protocol, "a tensor names either an input buffer (buf) or a GPU tensor (gpu)"),
        }
    }

    fn value(&self, v: &ValueW) -> Result<Value<'a>> {
        Ok(match v {
            ValueW::Dense(t) => Value::Dense(self.tensor(t)?),
            ValueW::Sparse { values, indices, dense_shape } => Value::Sparse(IndexedSlices::new(
                self.tensor(values)?,
                self.tensor(indices)?,
                shape_of(dense_shape)?,
            )?),
            ValueW::Many(vs) => Value::Many(vs.iter().map(|v| self.value(v)).collect::<Result<_>>()?),
        })
    }

    fn grads(&self, grads: &[Vec<TensorW>]) -> Result<Vec<Vec<Tensor<'a>>>> {
        grads.iter().map(|g| g.iter().map(|t| self.tensor(t)).collect()).collect()
    }

    fn input(&self, i: &InputW) -> Result<Input<'a>> {
        Ok(match i {
            InputW::PerDevice(entries) => Input::PerDevice(PerDevice::new(
                entries.iter().map(|(d, v)| Ok((d.clone(), self.value(v)?))).collect::<Result<Vec<_>>>()?,
            )?),
            InputW::Located { device, value } => Input::Located(device.clone(), self.value(value)?),
            InputW::Sequence(repr) => Input::Sequence(repr.clone()),
            InputW::Other(repr) => Input::Other(repr.clone()),
        })
    }
}

fn build_ops(ops: &OpsW) -> Result<Box<dyn CrossDeviceOps>> {
    match *ops {
        OpsW::ReductionToOneDevice { ref reduce_to_device, ref accumulation } => {
            let acc = Accumulation::parse(accumulation.as_deref().unwrap_or("add_n"))?;
            Ok(Box::new(ReductionToOneDevice::new(reduce_to_device.as_deref(), acc)?))
        }
        OpsW::AllReduce { ref algorithm, num_packs, agg_small_grads_max_bytes, agg_small_grads_max_group } => Ok(Box::new(AllReduce {
            algorithm: AllReduceAlgorithm::parse(algorithm)?,
            packing: Packing::new(num_packs, agg_small_grads_max_bytes, agg_small_grads_max_group)?,
        })),
        OpsW::MultiWorkerAllReduce {
            ref worker_devices,
            num_gpus_per_worker,
            ref all_reduce_spec,
            num_packs,
            agg_small_grads_max_bytes,
            agg_small_grads_max_group,
            timeout_seconds,
        } => Ok(Box::new(
            MultiWorkerAllReduce::new(
                worker_devices.clone(),
                num_gpus_per_worker,
                parse_spec(&RawSpec::from_json(all_reduce_spec))?,
                Packing::new(num_packs, agg_small_grads_max_bytes, agg_small_grads_max_group)?,
            )?
            .with_timeout(timeout(timeout_seconds)?),
        )),
        OpsW::CollectiveAllReduce { num_workers, num_gpus_per_worker, all_reduce_merge_scope, timeout_seconds, bytes_per_pack } => {
            if all_reduce_merge_scope == 0 {
                return fail(ErrorCode::InvalidArgument, "all_reduce_merge_scope must be at least 1");
            }
            let timeout = timeout(timeout_seconds)?;
            let bytes_per_pack = match bytes_per_pack.unwrap_or(0.0) {
                b if b >= 0.0 && b.fract() == 0.0 && b <= usize::MAX as f64 => b as usize,
                b => return fail(ErrorCode::InvalidArgument, format!("Argument `bytes_per_pack` must be >=0, Received {b}.")),
            };
            Ok(Box::new(CollectiveAllReduce { num_workers, num_gpus_per_worker, all_reduce_merge_scope, timeout, bytes_per_pack }))
        }
        OpsW::NcclAllReduce { num_packs } => tf2_all_reduce(AllReduceAlgorithm::Nccl, num_packs, "NCCL all-reduce"),
        OpsW::HierarchicalCopyAllReduce { num_packs } => {
            tf2_all_reduce(AllReduceAlgorithm::HierarchicalCopy, num_packs, "HierarchicalCopy")
        }
    }
}

/// The per-device value `input` stands for when every tensor of it is a dense GPU tensor.
fn resident_input(input: &InputW) -> Option<PerDevice<ResidentTensor>> {
    let tensor = |v: &ValueW| match v {
        ValueW::Dense(TensorW { buf: None, gpu: Some(handle), dtype, shape }) => {
            Some(ResidentTensor { handle: *handle, dtype: DType::parse(dtype).ok()?, shape: shape_of(shape).ok()? })
        }
        _ => None,
    };
    match input {
        // Each value is checked before its device name is copied: host tensors (every request
        // but these) leave at the first.
        InputW::PerDevice(entries) => PerDevice::new(entries.iter().map(|(d, v)| tensor(v).map(|t| (d.clone(), t))).collect::<Option<Vec<_>>>()?).ok(),
        InputW::Located { device: Some(d), value } => PerDevice::new([tensor(value).map(|t| (d.clone(), t))?]).ok(),
        _ => None,
    }
}

/// The response to a reduction of the GPU tensors `pairs` by `ops`, computed in device memory
/// ([`all_reduce_resident`]) when `ops` all-reduces them in this process; `None` when the host
/// path serves the request (and checks it).
fn on_device(ops: &dyn CrossDeviceOps, op: &str, pairs: Option<Vec<(PerDevice<ResidentTensor>, Destinations)>>, enc: &mut Encoder) -> Result<Option<ResponseW>> {
    let (Some(pairs), Some(store), Ok(op)) = (pairs, resident::installed(), ReduceOp::parse(op)) else { return Ok(None) };
    if pairs.iter().any(|(_, d)| d.validate().is_err()) {
        return Ok(None);
    }
    let Some(results) = all_reduce_resident(ops, store.as_ref(), op, &pairs)? else { return Ok(None) };
    Ok(Some(ResponseW::Results(
        results
            .into_iter()
            .map(|m| {
                m.into_entries()
                    .into_iter()
                    .map(|(d, t)| {
                        enc.handles.push(t.handle);
                        (d, ValueOut::Dense(TensorOut { buf: None, gpu: Some(t.handle), dtype: t.dtype.name(), shape: t.shape }))
                    })
                    .collect()
            })
            .collect(),
    )))
}

/// TF 2's `NcclAllReduce` / `HierarchicalCopyAllReduce`: `num_packs >= 0`, 0 meaning no packing.
/// `CommunicationOptions.timeout_seconds`: positive and finite, or absent.
fn timeout(seconds: Option<f64>) -> Result<Option<std::time::Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(std::time::Duration::from_secs_f64(s))),
        Some(s) => fail(ErrorCode::InvalidArgument, format!("timeoutSeconds must be a positive number of seconds, got {s}")),
    }
}

fn tf2_all_reduce(algorithm: AllReduceAlgorithm, num_packs: i64, what: &str) -> Result<Box<dyn CrossDeviceOps>> {
    if num_packs < 0 {
        return fail(ErrorCode::InvalidArgument, format!("{what} requires num_packs >= 0, but {num_packs} is specified"));
    }
    Ok(Box::new(AllReduce { algorithm, packing: Packing::new(num_packs, 0, 0)? }))
}

#[derive(Default)]
struct Encoder {
    buffers: Vec<Buffer<'static>>,
    /// GPU tensors made for this response (released again if the request fails).
    handles: Vec<u64>,
    /// Whether results on GPU devices become GPU tensors (the request had GPU tensors).
    to_gpus: bool,
}

impl Encoder {
    fn tensor(&mut self, t: Tensor<'static>) -> TensorOut {
        let dtype = t.dtype().name();
        self.buffers.push(t.data);
        TensorOut { buf: Some(self.buffers.len() - 1), gpu: None, dtype, shape: t.shape }
    }

    /// `t` as a GPU tensor on `device` (canonical GPU name).
    fn uploaded(&mut self, device: &str, t: Tensor<'static>) -> Result<TensorOut> {
        let handle = resident::store()?.upload(device, &t.data)?;
        self.handles.push(handle);
        Ok(TensorOut { buf: None, gpu: Some(handle), dtype: t.dtype().name(), shape: t.shape })
    }

    /// `t` as a host result, or as a GPU tensor on `gpu`.
    fn placed(&mut self, gpu: Option<&str>, t: Tensor<'static>) -> Result<TensorOut> {
        match gpu {
            Some(device) => self.uploaded(device, t),
            None => Ok(self.tensor(t)),
        }
    }

    fn value(&mut self, v: Value<'static>) -> Result<ValueOut> {
        self.value_on(None, v)
    }

    /// `v` in host results, or, with `gpu`, every tensor of it as a GPU tensor there.
    fn value_on(&mut self, gpu: Option<&str>, v: Value<'static>) -> Result<ValueOut> {
        Ok(match v {
            Value::Dense(t) => ValueOut::Dense(self.placed(gpu, t)?),
            Value::Sparse(s) => ValueOut::Sparse {
                values: self.placed(gpu, s.values)?,
                indices: self.placed(gpu, s.indices)?,
                dense_shape: s.dense_shape,
            },
            Value::Many(_) => return fail(ErrorCode::Internal, "a result cannot be a list"),
        })
    }

    fn grads(&mut self, grads: Vec<Vec<Tensor<'static>>>) -> Vec<Vec<TensorOut>> {
        grads.into_iter().map(|g| g.into_iter().map(|t| self.tensor(t)).collect()).collect()
    }

    /// The entries of `m`; those on GPUs as GPU tensors when [`Self::to_gpus`] says so.
    fn mirrored(&mut self, m: Mirrored<Value<'static>>) -> Result<Vec<(String, ValueOut)>> {
        m.into_entries()
            .into_iter()
            .map(|(d, v)| {
                let gpu = (self.to_gpus && resident::is_gpu(&d)).then_some(d.as_str());
                let out = self.value_on(gpu, v)?;
                Ok((d, out))
            })
            .collect()
    }
}

/// The most request text [`parse`] remembers per thread; past it, it starts over.
const PARSED_BYTES: usize = 4 << 20;

thread_local! {
    static PARSED: RefCell<Memo<Rc<Request>>> = RefCell::new(Memo::new(PARSED_BYTES));
}

/// `text` parsed, from this thread's memo when it was parsed before. Training loops send
/// byte-identical requests step after step (the JSON carries only devices, dtypes, shapes and
/// buffer indices; the elements travel in the input buffers), and parsing one costs more than a
/// small reduction. A parse depends on the text alone, so the memo is always right; requests
/// that fail to parse are not kept.
fn parse(text: &str) -> Result<Rc<Request>> {
    if let Some(request) = PARSED.with(|c| c.borrow().get(text)) {
        return Ok(request);
    }
    let request: Rc<Request> = Rc::new(
        serde_json::from_str(text).map_err(|e| CrossDeviceError::new(ErrorCode::Protocol, format!("bad request: {e}")))?,
    );
    PARSED.with(|c| c.borrow_mut().insert(text, request.clone(), text.len()));
    Ok(request)
}

fn dispatch(request: &str, inputs: &[&[u8]], enc: &mut Encoder) -> Result<ResponseW> {
    let request = parse(request)?;
    let dec = Decoder { inputs, staged: Cell::new(false) };
    Ok(match &*request {
        Request::Reduce { ops, op, value, destinations: d } => {
            // Arguments are checked in TensorFlow's order: the value, the destinations, the op.
            let ops = build_ops(ops)?;
            if let Some(results) = on_device(ops.as_ref(), op, resident_input(value).map(|v| vec![(v, d.clone())]), enc)? {
                return Ok(results);
            }
            let value = dec.input(value)?.into_per_device()?;
            d.validate()?;
            let m = ops.reduce(ReduceOp::parse(&op)?, Input::PerDevice(value), d)?;
            enc.to_gpus = dec.staged.get();
            ResponseW::Results(vec![enc.mirrored(m)?])
        }
        Request::BatchReduce { ops, op, pairs } => {
            let ops = build_ops(ops)?;
            let resident = pairs.as_ref().and_then(|ps| {
                ps.iter()
                    .map(|p| match p {
                        PairW::Pair(i, d) => Some((resident_input(i)?, d.clone())),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            });
            if let Some(results) = on_device(ops.as_ref(), op, resident, enc)? {
                return Ok(results);
            }
            let raw = pairs
                .as_ref()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            Ok(match p {
                                PairW::Pair(i, d) => RawPair::Pair(dec.input(i)?, d.clone()),
                                PairW::Arity(n) => RawPair::Arity(*n),
                                PairW::NotTuple => RawPair::NotTuple,
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?;
            let pairs = normalize_pairs(raw)?;
            for (_, d) in &pairs {
                d.validate()?;
            }
            let results = ops.batch_reduce(ReduceOp::parse(&op)?, &pairs)?;
            enc.to_gpus = dec.staged.get();
            ResponseW::Results(results.into_iter().map(|m| enc.mirrored(m)).collect::<Result<_>>()?)
        }
        Request::Broadcast { ops, value, destinations: d } => {
            let m = build_ops(ops)?.broadcast(&dec.value(value)?, d)?;
            enc.to_gpus = dec.staged.get();
            ResponseW::Results(vec![enc.mirrored(m)?])
        }
        Request::CheckOps { ops } => build_ops(ops).map(|_| ResponseW::Ok)?,
        Request::CheckTensor { tensor } => dec.tensor(&tensor).map(|_| ResponseW::Ok)?,
        Request::CheckValue { value } => dec.value(&value).map(|_| ResponseW::Ok)?,
        Request::Canonicalize { device, default } => {
            ResponseW::Device(canonicalize(&device, default.as_deref())?)
        }
        Request::Resolve { device, current } => ResponseW::Device(resolve(&device, current.as_deref())?),
        Request::CanonicalizeAll { devices } => ResponseW::Devices(
            devices.iter().map(|d| canonicalize(d, None)).collect::<Result<_>>()?,
        ),
        Request::FromNumbers { buf, dtype, shape } => {
            let numbers = dec.tensor(&TensorW { buf: Some(*buf), gpu: None, dtype: "float64".into(), shape: shape.clone() })?;
            let Buffer::F64(xs) = &numbers.data else { unreachable!("decoded as float64") };
            let t = Tensor::new(shape_of(&shape)?, from_f64(xs, DType::parse(&dtype)?))?;
            ResponseW::Value(enc.value(Value::Dense(t))?)
        }
        Request::ToNumbers { tensor } => {
            let t = dec.tensor(&tensor)?;
            let numbers = Tensor::new(t.shape.clone(), Buffer::F64(to_f64(&t.data).into()))?;
            ResponseW::Value(enc.value(Value::Dense(numbers))?)
        }
        Request::ChooseTheBest { devices, links, machine } => ResponseW::Choice(match match machine {
            Some(m) if links.is_none() => choose_on_machine(&devices, m.visible_gpus, &m.links)?,
            _ => choose_the_best(&devices, links.as_deref(), 0)?,
        } {
            Choice::ReductionToOneDevice { reason } => ChoiceOut::ReductionToOneDevice { reason },
            Choice::AllReduce { algorithm, num_packs } => ChoiceOut::AllReduce { algorithm, num_packs },
        }),
        Request::Plan { plan } => ResponseW::Plan(Box::new(describe_plan(&plan.build()?))),
        Request::RunPlan { plan, op, value } => {
            let plan = plan.build()?;
            let op = ReduceOp::parse(&op)?;
            let value = dec.input(&value)?.into_per_device()?;
            let inputs: Vec<&Buffer> = (0..plan.inputs)
                .map(|i| match value.get(&plan.devices[plan.buffers[i].device])? {
                    Value::Dense(t) => Ok(&t.data),
                    _ => fail(ErrorCode::InvalidInput, "a plan runs on dense tensors"),
                })
                .collect::<Result<_>>()?;
            let shape = match value.get(&plan.devices[0])? {
                Value::Dense(t) => t.shape.clone(),
                _ => unreachable!("checked above"),
            };
            let outs = host::run(&plan, op, &inputs)?;
            let m = Mirrored::new(
                (0..plan.inputs)
                    .zip(outs)
                    .map(|(i, data)| Ok((plan.devices[plan.buffers[i].device].clone(), Value::Dense(Tensor::new(shape.clone(), data)?))))
                    .collect::<Result<Vec<_>>>()?,
            )?;
            enc.to_gpus = dec.staged.get();
            ResponseW::Results(vec![enc.mirrored(m)?])
        }
        Request::ExtractRanges { indices, range_size_limit } => {
            let (ranges, singles) = extract_ranges(&indices, *range_size_limit);
            ResponseW::Ranges { ranges, singles }
        }
        Request::RingPermutations { num_workers, num_subchunks, gpu_perm } => {
            let (pred, rank) = ring_permutations(*num_workers, *num_subchunks, &gpu_perm)?;
            ResponseW::Permutations { pred, rank }
        }
        Request::GroupDeviceNames { devices, group_size } => ResponseW::Groups(group_device_names(&devices, *group_size)?),
        Request::GroupKeyId { devices } => ResponseW::KeyId(group_key_id(&devices)?),
        Request::ParseSpec { spec } => ResponseW::Specs(
            parse_spec(&RawSpec::from_json(&spec))?.into_iter().map(|s| (s.alg, s.shards, s.limit)).collect(),
        ),
        Request::PaddedSplit { tensor, pieces } => {
            let (parts, pad_len) = padded_split(&dec.tensor(&tensor)?, *pieces)?;
            ResponseW::Parts { tensors: parts.into_iter().map(|t| enc.tensor(t)).collect(), pad_len }
        }
        Request::RaggedSplit { tensor, pieces } => ResponseW::Parts {
            tensors: ragged_split_tensor(&dec.tensor(&tensor)?, *pieces)?.into_iter().map(|t| enc.tensor(t)).collect(),
            pad_len: 0,
        },
        Request::StripPadding { tensors, pad_len } => {
            let tensors = tensors.iter().map(|t| dec.tensor(t)).collect::<Result<Vec<_>>>()?;
            ResponseW::Parts { tensors: strip_padding(&tensors, *pad_len)?.into_iter().map(|t| enc.tensor(t)).collect(), pad_len: 0 }
        }
        Request::GroupBySize { sizes, bytes_per_pack } => ResponseW::Packs(group_by_size(&sizes, *bytes_per_pack)),
        Request::SplitGradsBySize { threshold, element_counts } => {
            let (small, large) = split_grads_by_size(*threshold, &element_counts);
            ResponseW::Split { small, large }
        }
        Request::Pack { packer, grads } => {
            let grads = dec.grads(&grads)?;
            let (packed, info) = match packer {
                PackerW::ConcatAndSplit { num_packs } => {
                    let (p, info) = ConcatAndSplitPacker::new(*num_packs)?.pack(&grads)?;
                    (p, serde_json::to_value(info).expect("serialises"))
                }
                PackerW::SmallTensors { max_bytes, max_group } => {
                    let (p, info) = AggregateSmallTensorPacker::new(*max_bytes, *max_group)?.pack(&grads)?;
                    (p, serde_json::to_value(info).expect("serialises"))
                }
            };
            ResponseW::Packed { grads: enc.grads(packed), info }
        }
        Request::Unpack { packer, grads, info } => {
            let grads = dec.grads(&grads)?;
            let bad_info = |e: serde_json::Error| CrossDeviceError::new(ErrorCode::InvalidArgument, format!("not packing information of this packer: {e}"));
            let unpacked = match packer {
                PackerW::ConcatAndSplit { num_packs } => {
                    let info = serde_json::from_value(info.clone()).map_err(bad_info)?;
                    ConcatAndSplitPacker::new(*num_packs)?.unpack(&grads, &info)?
                }
                PackerW::SmallTensors { max_bytes, max_group } => {
                    let info: Option<Vec<PackedRange>> = serde_json::from_value(info.clone()).map_err(bad_info)?;
                    AggregateSmallTensorPacker::new(*max_bytes, *max_group)?.unpack(&grads, info.as_deref())?
                }
            };
            ResponseW::Packed { grads: enc.grads(unpacked), info: serde_json::Value::Null }
        }
        Request::Upload { tensor, device } => {
            let device = resident::gpu_device(&device)?;
            let t = dec.tensor(&tensor)?.into_owned();
            ResponseW::Value(ValueOut::Dense(enc.uploaded(&device, t)?))
        }
        Request::Download { tensor } => {
            if tensor.gpu.is_none() {
                return fail(ErrorCode::Protocol, "download takes a GPU tensor");
            }
            ResponseW::Value(enc.value(Value::Dense(dec.tensor(&tensor)?.into_owned()))?)
        }
        Request::Release { handle } => {
            if let Some(store) = resident::installed() {
                store.release(*handle);
            }
            ResponseW::Ok
        }
        Request::ResidentUsage => ResponseW::Usage(resident::installed().map(|s| s.usage()).unwrap_or_default()),
        Request::Densify { value } => match dec.value(&value)? {
            Value::Sparse(s) => ResponseW::Value(enc.value(Value::Dense(s.densify()?))?),
            _ => return fail(ErrorCode::InvalidArgument, "densify expects IndexedSlices"),
        },
    })
}

/// Runs one request over `inputs` (the bytes of the TypedArrays it refers to). Never panics:
/// errors, including caught panics, become `{"error": …}` responses.
pub fn execute(request: &str, inputs: &[&[u8]]) -> Response {
    let mut enc = Encoder::default();
    // A request that ends with the member `"debug":true` asks for the diagnostics of `crate::log`.
    let debug = request.ends_with(",\"debug\":true}");
    let (outcome, lines) = crate::log::capture(debug, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(request, inputs, &mut enc)))
    });
    let outcome = outcome
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            fail(ErrorCode::Internal, format!("internal error (please report): {what}"))
        });
    let response = outcome.unwrap_or_else(|e| {
        enc.buffers.clear();
        if let Some(store) = resident::installed() {
            for handle in enc.handles.drain(..) {
                store.release(handle);
            }
        }
        ResponseW::Error { code: e.code.as_str(), message: e.message }
    });
    // Sized for a typical small op's metadata, so that writing it does not grow the text.
    let mut bytes = Vec::with_capacity(512);
    serde_json::to_writer(&mut bytes, &response).expect("responses serialise");
    let mut meta = String::from_utf8(bytes).expect("serde_json writes UTF-8");
    // The diagnostics join an object response as its "log" member.
    if !lines.is_empty() && meta.ends_with('}') {
        meta.pop();
        meta.push_str(",\"log\":");
        meta.push_str(&serde_json::to_string(&lines).expect("strings serialise"));
        meta.push('}');
    }
    Response { meta, buffers: enc.buffers }
}
