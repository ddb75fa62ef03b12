//! Runs crossdev plans on CUDA GPUs: every logical device of a plan (a canonical TensorFlow name
//! such as `/job:localhost/replica:0/task:0/device:GPU:3`) gets a CUDA stream of its own on the
//! physical GPU it maps to, its buffers live in that GPU's memory, every step runs on the stream
//! of the device it writes, and streams wait for each other through events only where data
//! crosses devices (the schedule module); one synchronisation at the end.
//!
//! Logical GPU `k` is physical GPU `k`; with `CROSSDEV_VIRTUAL_GPUS=N` (or
//! [`GpuExecutor::new`]'s `virtual_gpus`), `N` logical GPUs share the physical ones round-robin
//! (`k % physical`), so ring, recursive halving-doubling, shuffle and hierarchical plans run on a
//! one-GPU machine with real kernels, copies and concurrent streams. Results are bit-identical
//! to the host executor's: same plan, same combination order.
//!
//! Copies within one CUDA context are `cuMemcpyDtoDAsync`; between contexts (other GPUs) they
//! are `cuMemcpyPeerAsync`, with peer access enabled wherever `cuDeviceCanAccessPeer` allows it
//! (direct over NVLink or PCIe) and otherwise staged through host memory by the driver itself.
//! Reduce kernels only read memory of their own context: sources held elsewhere are first
//! peer-copied into scratch memory on the destination's GPU, on the destination's stream.

use crate::kernels::ReduceKernels;
use crate::probe::{gpu_count, require_nvrtc};
use crate::schedule::{Event, Schedule};
use crossdev_core::device::{canonicalize, DeviceSpec};
use crossdev_core::dtype::DType;
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::plan::{Chunk, Plan, Step};
use crossdev_core::reduce_op::ReduceOp;
use crossdev_core::tensor::Buffer;
use cudarc::driver::{result as cu, sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The environment variable that sets how many logical GPUs share the physical ones.
pub const VIRTUAL_GPUS_VAR: &str = "CROSSDEV_VIRTUAL_GPUS";

fn cuda(what: &'static str) -> impl Fn(DriverError) -> CrossDeviceError {
    move |e| CrossDeviceError::new(ErrorCode::Cuda, format!("{what} failed: {e:?}"))
}

fn invalid(message: String) -> CrossDeviceError {
    CrossDeviceError::new(ErrorCode::InvalidArgument, message)
}

/// The number of logical GPUs that a value of `CROSSDEV_VIRTUAL_GPUS` asks for: `None` when
/// unset or empty (one logical GPU per physical GPU), an error unless a positive integer.
pub fn parse_virtual_gpus(value: Option<&str>) -> Result<Option<usize>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(format!("{VIRTUAL_GPUS_VAR} must be a positive integer, got {v:?}"))),
        },
    }
}

/// Which physical GPU each logical GPU uses: a function of the device name alone, so that a
/// tensor placed on `/gpu:3` and a plan over `/gpu:3` always meet on the same GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Physical GPUs of the machine.
    pub physical: usize,
    /// Logical GPUs sharing them round-robin; `None`: one logical GPU per physical GPU.
    pub virtual_gpus: Option<usize>,
}

impl Mapping {
    /// The physical GPU of logical device `device` (any spelling; its task does not matter: a
    /// process drives the GPUs of its machine). `ERR_INVALID_ARGUMENT` for a non-GPU device,
    /// `ERR_NO_CUDA` for a GPU index beyond the logical GPUs.
    pub fn physical_gpu(&self, device: &str) -> Result<usize> {
        let canonical = canonicalize(device, None)?;
        let spec = DeviceSpec::parse(&canonical)?;
        let index = match (spec.device_type.as_deref(), spec.device_index) {
            (Some("GPU"), Some(i)) if i >= 0 => i as usize,
            _ => return Err(invalid(format!("the CUDA executor runs plans over GPUs; {canonical} is not one"))),
        };
        let missing = |why: String| Err(CrossDeviceError::new(ErrorCode::NoCuda, why));
        match self.virtual_gpus {
            _ if self.physical == 0 => missing("no GPU is present".into()),
            Some(n) if index < n => Ok(index % self.physical),
            Some(n) => missing(format!("{canonical} is logical GPU {index}, but {VIRTUAL_GPUS_VAR}={n} makes {n} logical GPUs")),
            None if index < self.physical => Ok(index),
            None => missing(format!(
                "GPU {index} requested ({canonical}), {} present; set {VIRTUAL_GPUS_VAR} to run more logical GPUs on them",
                self.physical
            )),
        }
    }
}

/// How the logical devices of one physical GPU use CUDA contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contexts {
    /// One context per physical GPU (its primary context, shared with the rest of the
    /// process): logical devices on one GPU copy to each other with device-to-device copies and
    /// kernels read their memory directly. The normal mode.
    PerGpu,
    /// A context of its own for every logical device, even on the same GPU: each logical
    /// device then behaves as a GPU of its own (peer copies, sources staged into scratch before
    /// a reduction), which tests the multi-GPU paths on a one-GPU machine.
    PerDevice,
}

/// A CUDA context with the reduce kernels loaded in it.
struct Context {
    ctx: Arc<CudaContext>,
    kernels: ReduceKernels,
}

/// A logical device: its stream, in its context.
struct Lane {
    context: Arc<Context>,
    stream: Arc<CudaStream>,
}

#[derive(Default)]
struct State {
    /// Every context created, in order (peer access is enabled between each pair on
    /// different GPUs).
    contexts: Vec<Arc<Context>>,
    /// Lanes by canonical device name, created on first use.
    lanes: HashMap<String, Arc<Lane>>,
}

/// Lets `from`'s kernels and copies reach `to`'s memory directly when the hardware allows it.
fn enable_peer_access(from: &CudaContext, to: &CudaContext) -> Result<()> {
    if from.ordinal() == to.ordinal() {
        return Ok(());
    }
    let mut can = 0;
    // SAFETY: an out-parameter and two valid device handles.
    unsafe { sys::cuDeviceCanAccessPeer(&mut can, from.cu_device(), to.cu_device()) }.result().map_err(cuda("cuDeviceCanAccessPeer"))?;
    if can == 0 {
        return Ok(());
    }
    from.bind_to_thread().map_err(cuda("cuCtxSetCurrent"))?;
    // SAFETY: `from` is current and `to` is a live context.
    match unsafe { sys::cuCtxEnablePeerAccess(to.cu_ctx(), 0) } {
        // Primary contexts are shared by the whole process: someone may have done it already.
        sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => share_pool(from, to),
        // Past the hardware's peer limit, copies still work, staged by the driver.
        sys::CUresult::CUDA_ERROR_TOO_MANY_PEERS => Ok(()),
        e => Err(cuda("cuCtxEnablePeerAccess")(DriverError(e))),
    }
}

/// Lets `from`'s GPU read and write what `to`'s GPU allocates from its default memory pool (the
/// executor's stream-ordered allocations), which peer access between contexts does not cover:
/// NCCL, within one process, reads and writes the buffers of the other GPUs directly.
fn share_pool(from: &CudaContext, to: &CudaContext) -> Result<()> {
    let mut pool = std::ptr::null_mut();
    // SAFETY: an out-parameter and a valid device handle.
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, to.cu_device()) }.result().map_err(cuda("cuDeviceGetDefaultMemPool"))?;
    let access = sys::CUmemAccessDesc {
        location: sys::CUmemLocation { type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: from.ordinal() as i32 },
        flags: sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
    };
    // SAFETY: a live pool and one access descriptor.
    unsafe { sys::cuMemPoolSetAccess(pool, &access, 1) }.result().map_err(cuda("cuMemPoolSetAccess"))
}

impl State {
    fn add_context(&mut self, ctx: Arc<CudaContext>) -> Result<Arc<Context>> {
        for other in &self.contexts {
            enable_peer_access(&ctx, &other.ctx)?;
            enable_peer_access(&other.ctx, &ctx)?;
        }
        let context = Arc::new(Context { kernels: ReduceKernels::load(&ctx)?, ctx });
        self.contexts.push(context.clone());
        Ok(context)
    }
}

/// A plan's input or output resident in GPU memory: `len` elements of `dtype` at the start of
/// `data`, belonging to logical device `device`. What GPU tensors hold, and what
/// [`GpuExecutor::run_plan_on_device`] takes and returns.
#[derive(Debug)]
pub struct DeviceBuffer {
    /// Canonical name of the logical device (e.g. `/job:localhost/replica:0/task:0/device:GPU:3`).
    pub device: String,
    /// The memory: at least `len * dtype.size()` bytes, on the device's physical GPU (memory
    /// of another context or GPU also works: it is then peer-copied where it is needed).
    pub data: CudaSlice<u8>,
    /// Element type.
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
}

impl DeviceBuffer {
    /// Bytes of the elements.
    pub fn bytes(&self) -> usize {
        self.len * self.dtype.size()
    }

    /// The elements, copied to the host (waits for the copy, and for the work writing them that
    /// was issued on `data`'s stream or tracked by cudarc's per-buffer events).
    pub fn to_host(&self) -> Result<Buffer<'static>> {
        if self.len == 0 {
            return Ok(Buffer::zeros(self.dtype, 0));
        }
        let view = self.data.try_slice(0..self.bytes()).ok_or_else(|| invalid(format!("a device buffer of {} bytes holds no {} elements of {}", self.data.len(), self.len, self.dtype.name())))?;
        let bytes = self.data.stream().clone_dtoh(&view).map_err(cuda("cuMemcpyDtoH"))?;
        Ok(Buffer::from_bytes(self.dtype, &bytes).into_owned())
    }
}

/// The device address of `slice`, taken on the slice's own stream (so that cudarc's per-buffer
/// events, where it keeps them, stay consistent).
fn address(slice: &CudaSlice<u8>) -> u64 {
    let (ptr, _recorded) = slice.device_ptr(slice.stream());
    ptr
}

/// Runs plans on the GPUs of this process, a stream per logical device.
///
/// Shareable across threads; plans run from several threads interleave on the same streams,
/// each with its own buffers and events, so each is still correct.
pub struct GpuExecutor {
    mapping: Mapping,
    contexts: Contexts,
    state: Mutex<State>,
}

impl GpuExecutor {
    /// An executor with as many logical GPUs as `CROSSDEV_VIRTUAL_GPUS` says (unset: one per
    /// physical GPU), one context per physical GPU.
    pub fn from_env() -> Result<GpuExecutor> {
        let value = std::env::var(VIRTUAL_GPUS_VAR).ok();
        GpuExecutor::new(parse_virtual_gpus(value.as_deref())?, Contexts::PerGpu)
    }

    /// An executor whose `virtual_gpus` logical GPUs share the physical GPUs round-robin
    /// (`None`: one per physical GPU), using contexts as `contexts` says. `ERR_NO_CUDA` without
    /// a driver, a GPU or NVRTC (checked before any CUDA call: cudarc panics on a missing
    /// library). Contexts, streams and kernels are made when a device is first used.
    pub fn new(virtual_gpus: Option<usize>, contexts: Contexts) -> Result<GpuExecutor> {
        let physical = gpu_count()?;
        require_nvrtc()?;
        Ok(GpuExecutor { mapping: Mapping { physical, virtual_gpus }, contexts, state: Mutex::new(State::default()) })
    }

    /// How logical GPUs map to physical ones.
    pub fn mapping(&self) -> Mapping {
        self.mapping
    }

    /// How logical devices use CUDA contexts.
    pub fn contexts(&self) -> Contexts {
        self.contexts
    }

    /// The canonical name of `device` and its lane, made on first use.
    fn lane(&self, device: &str) -> Result<(String, Arc<Lane>)> {
        let name = canonicalize(device, None)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = state.lanes.get(&name) {
            return Ok((name, lane.clone()));
        }
        let physical = self.mapping.physical_gpu(&name)?;
        let context = match self.contexts {
            Contexts::PerGpu => match state.contexts.iter().find(|c| c.ctx.ordinal() == physical) {
                Some(c) => c.clone(),
                None => state.add_context(CudaContext::new(physical).map_err(cuda("cuDevicePrimaryCtxRetain"))?)?,
            },
            Contexts::PerDevice => state.add_context(CudaContext::new_non_primary(physical, 0).map_err(cuda("cuCtxCreate"))?)?,
        };
        let stream = context.ctx.new_stream().map_err(cuda("cuStreamCreate"))?;
        let lane = Arc::new(Lane { context, stream });
        state.lanes.insert(name.clone(), lane.clone());
        Ok((name, lane))
    }

    /// The stream of logical device `device` (every plan step writing to that device runs on
    /// it): for work of one's own ordered with the executor's, and to check which streams run.
    pub fn stream(&self, device: &str) -> Result<Arc<CudaStream>> {
        Ok(self.lane(device)?.1.stream.clone())
    }

    /// Copies `data` to new memory of logical device `device` (issued on its stream; the host
    /// buffer may be dropped on return).
    pub fn upload(&self, device: &str, data: &Buffer) -> Result<DeviceBuffer> {
        let (name, lane) = self.lane(device)?;
        let bytes = data.as_bytes();
        // SAFETY: written in full just below; an empty buffer is never read.
        let mut slice = unsafe { lane.stream.alloc::<u8>(bytes.len().max(1)) }.map_err(cuda("cuMemAllocAsync"))?;
        if !bytes.is_empty() {
            lane.stream.memcpy_htod(bytes, &mut slice).map_err(cuda("cuMemcpyHtoDAsync"))?;
        }
        Ok(DeviceBuffer { device: name, data: slice, dtype: data.dtype(), len: data.len() })
    }

    /// Runs `plan` with `op` over host `inputs` (input `i` uploaded to its device first);
    /// returns the results on the host, one per input.
    pub fn run_plan(&self, plan: &Plan, op: ReduceOp, inputs: &[&Buffer]) -> Result<Vec<Buffer<'static>>> {
        plan.validate()?;
        check_count(plan, inputs.len())?;
        let uploaded = inputs.iter().enumerate().map(|(i, b)| self.upload(&plan.devices[plan.buffers[i].device], b)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&DeviceBuffer> = uploaded.iter().collect();
        self.run_plan_on_device(plan, op, &refs)?.iter().map(DeviceBuffer::to_host).collect()
    }

    /// Runs `plan` with `op` over `inputs` already in GPU memory (input `i` on the plan's
    /// device for it, `plan.elements` elements of `plan.dtype`); returns one new buffer per
    /// input, on that input's device, holding its result.
    ///
    /// Before reading input `i`, the plan waits for the work issued so far on `inputs[i].data`'s
    /// own stream (and, when cudarc tracks the buffer, for its last write on any stream).
    /// Returns when everything is done (one synchronisation of the plan's streams): the inputs
    /// may then be reused and the outputs read on any stream. The outputs' last writes are
    /// recorded in cudarc's per-buffer events where cudarc keeps them.
    pub fn run_plan_on_device(&self, plan: &Plan, op: ReduceOp, inputs: &[&DeviceBuffer]) -> Result<Vec<DeviceBuffer>> {
        plan.validate()?;
        check_inputs(plan, inputs)?;
        let lanes = plan.devices.iter().map(|d| Ok(self.lane(d)?.1)).collect::<Result<Vec<_>>>()?;
        let mut run = Run { plan, op, lanes: &lanes, owned: Vec::new(), scratch: Vec::new(), tables: Vec::new(), events: HashMap::new() };
        let issued = run.issue(inputs);
        // Also after a failure: nothing still running may use the memory about to be freed.
        let synced = lanes.iter().try_for_each(|l| l.stream.synchronize().map_err(cuda("cuStreamSynchronize")));
        issued.and(synced)?;
        Ok(run.outputs())
    }

    /// A new buffer on logical device `device` holding `parts` end to end: elements
    /// `[offset, offset + len)` of each buffer `(buffer, offset, len)`, all of `dtype` (copied
    /// within the GPU, or from peers). Returns when the copies are done.
    pub fn concat(&self, device: &str, dtype: DType, parts: &[(&DeviceBuffer, usize, usize)]) -> Result<DeviceBuffer> {
        let size = dtype.size();
        let mut len = 0usize;
        for &(b, offset, n) in parts {
            let end = offset.checked_add(n).filter(|&e| e <= b.len && e.checked_mul(size).is_some_and(|bytes| bytes <= b.data.len()));
            if b.dtype != dtype || end.is_none() {
                return Err(invalid(format!("elements {offset}.. ({n} of them) of a buffer of {} {} elements as {}", b.len, b.dtype.name(), dtype.name())));
            }
            len = len.checked_add(n).ok_or_else(|| invalid("parts too long to concatenate".into()))?;
        }
        let bytes = len.checked_mul(size).ok_or_else(|| invalid("parts too long to concatenate".into()))?;
        let (name, lane) = self.lane(device)?;
        // SAFETY: written in full by the copies just below; an empty buffer is never read.
        let data = unsafe { lane.stream.alloc::<u8>(bytes.max(1)) }.map_err(cuda("cuMemAllocAsync"))?;
        let out = address(&data);
        let mut at = 0;
        for &(b, offset, n) in parts {
            // After the work issued so far on the part's own stream, including the wait for its
            // last write that cudarc tracks, which taking its address there adds (as for a
            // plan's inputs: events stay within their context, the part's maybe another GPU's).
            let from = address(&b.data);
            let ready = b.data.stream().record_event(None).map_err(cuda("cuEventRecord"))?;
            lane.stream.wait(&ready).map_err(cuda("cuStreamWaitEvent"))?;
            copy(&lane, out + (at * size) as u64, from + (offset * size) as u64, b.data.context().cu_ctx(), n * size)?;
            at += n;
        }
        // The parts may be freed (on their own streams) as soon as this returns.
        lane.stream.synchronize().map_err(cuda("cuStreamSynchronize"))?;
        Ok(DeviceBuffer { device: name, data, dtype, len })
    }
}

fn check_count(plan: &Plan, inputs: usize) -> Result<()> {
    if inputs != plan.inputs {
        return Err(invalid(format!("the plan takes {} inputs, got {inputs}", plan.inputs)));
    }
    Ok(())
}

fn check_inputs(plan: &Plan, inputs: &[&DeviceBuffer]) -> Result<()> {
    check_count(plan, inputs.len())?;
    for (i, b) in inputs.iter().enumerate() {
        if b.dtype != plan.dtype || b.len != plan.elements {
            return Err(invalid(format!("the plan takes {} {} elements per input, got {} {}", plan.elements, plan.dtype.name(), b.len, b.dtype.name())));
        }
        if b.data.len() < b.bytes() {
            return Err(invalid(format!("input {i} holds {} bytes, fewer than its {} elements", b.data.len(), b.len)));
        }
        let device = &plan.devices[plan.buffers[i].device];
        if canonicalize(&b.device, None)? != *device {
            return Err(invalid(format!("input {i} is on {}, the plan has it on {device}", b.device)));
        }
    }
    Ok(())
}

/// A source of a reduction: its address in the destination's context, or memory of another
/// context that is peer-copied to `scratch` bytes into the destination lane's scratch first.
enum Source {
    Local(u64),
    Remote { from: u64, ctx: sys::CUcontext, scratch: usize, bytes: usize },
}

/// A reduce step made ready: where its pointers sit in its lane's pointer table, and its sources.
struct Reduction {
    table: usize,
    sources: Vec<Source>,
}

/// The memory and events of one plan run; dropped only after its streams are synchronised.
struct Run<'a> {
    plan: &'a Plan,
    op: ReduceOp,
    lanes: &'a [Arc<Lane>],
    /// The buffers the run allocates, by plan buffer index minus `plan.inputs`.
    owned: Vec<Option<CudaSlice<u8>>>,
    /// Per lane: room for the largest set of other-context sources of one of its reductions.
    scratch: Vec<Option<CudaSlice<u8>>>,
    /// Per lane: the input pointer arrays of all its reductions, uploaded once.
    tables: Vec<Option<CudaSlice<u64>>>,
    /// Events recorded so far.
    events: HashMap<Event, CudaEvent>,
}

impl Run<'_> {
    fn issue(&mut self, inputs: &[&DeviceBuffer]) -> Result<()> {
        let plan = self.plan;
        let size = plan.dtype.size();
        // Where every buffer is: its address and its context.
        let mut place: Vec<(u64, sys::CUcontext)> = inputs.iter().map(|b| (address(&b.data), b.data.context().cu_ctx())).collect();
        for spec in &plan.buffers[plan.inputs..] {
            let lane = &self.lanes[spec.device];
            // SAFETY: a validated plan writes every element of a non-input buffer before any
            // step reads it, and outputs are fully written.
            let slice = unsafe { lane.stream.alloc::<u8>((spec.len * size).max(1)) }.map_err(cuda("cuMemAllocAsync"))?;
            place.push((address(&slice), lane.context.ctx.cu_ctx()));
            self.owned.push(Some(slice));
        }
        let at = |c: &Chunk| place[c.buf].0 + (c.offset * size) as u64;
        let ctx_of = |lane: usize| self.lanes[lane].context.ctx.cu_ctx();
        let schedule = Schedule::of(plan);

        // Reductions: their sources, scratch needs and pointer tables.
        let lanes = self.lanes.len();
        let mut reductions: Vec<Vec<Option<Reduction>>> = plan.stages.iter().map(|s| s.iter().map(|_| None).collect()).collect();
        let (mut scratch_bytes, mut table_len) = (vec![0usize; lanes], vec![0usize; lanes]);
        for (s, blocks) in schedule.stages.iter().enumerate().skip(1) {
            for block in blocks {
                for &i in &block.steps {
                    let Step::Reduce { srcs, .. } = &plan.stages[s - 1][i] else { continue };
                    let mut remote = 0;
                    let sources = srcs
                        .iter()
                        .map(|c| match place[c.buf].1 {
                            ctx if ctx == ctx_of(block.stream) => Source::Local(at(c)),
                            ctx => {
                                let bytes = c.len * size;
                                remote += bytes;
                                Source::Remote { from: at(c), ctx, scratch: remote - bytes, bytes }
                            }
                        })
                        .collect();
                    scratch_bytes[block.stream] = scratch_bytes[block.stream].max(remote);
                    reductions[s - 1][i] = Some(Reduction { table: table_len[block.stream], sources });
                    table_len[block.stream] += srcs.len();
                }
            }
        }
        for (d, lane) in self.lanes.iter().enumerate() {
            // SAFETY: scratch is written (peer copies) before each reduction reads it.
            let scratch = (scratch_bytes[d] > 0).then(|| unsafe { lane.stream.alloc::<u8>(scratch_bytes[d]) }).transpose().map_err(cuda("cuMemAllocAsync"))?;
            self.scratch.push(scratch);
        }
        let scratch_at: Vec<u64> = self.scratch.iter().map(|s| s.as_ref().map_or(0, address)).collect();
        let mut tables: Vec<Vec<u64>> = table_len.iter().map(|&n| vec![0; n]).collect();
        for (s, blocks) in schedule.stages.iter().enumerate().skip(1) {
            for block in blocks {
                for r in block.steps.iter().filter_map(|&i| reductions[s - 1][i].as_ref()) {
                    for (k, source) in r.sources.iter().enumerate() {
                        tables[block.stream][r.table + k] = match source {
                            Source::Local(a) => *a,
                            Source::Remote { scratch, .. } => scratch_at[block.stream] + *scratch as u64,
                        };
                    }
                }
            }
        }
        for (lane, table) in self.lanes.iter().zip(&tables) {
            let uploaded = (!table.is_empty()).then(|| lane.stream.clone_htod(table)).transpose().map_err(cuda("cuMemcpyHtoDAsync"))?;
            self.tables.push(uploaded);
        }
        let table_at: Vec<u64> = self.tables.iter().map(|t| t.as_ref().map_or(0, |t| t.device_ptr(t.stream()).0)).collect();
        let functions: Vec<CudaFunction> = self.lanes.iter().map(|l| l.context.kernels.function(plan.dtype, self.op)).collect::<Result<_>>()?;
        let divide_by = if self.op == ReduceOp::Mean { plan.inputs } else { 0 };

        for (s, blocks) in schedule.stages.iter().enumerate() {
            for block in blocks {
                let lane = &self.lanes[block.stream];
                for e in &block.waits {
                    lane.stream.wait(&self.events[e]).map_err(cuda("cuStreamWaitEvent"))?;
                }
                if s == 0 {
                    // The inputs of this device are ready once the work issued on their own
                    // streams is done.
                    for input in inputs.iter().enumerate().filter(|&(i, _)| plan.buffers[i].device == block.stream).map(|(_, b)| b) {
                        let ready = input.data.stream().record_event(None).map_err(cuda("cuEventRecord"))?;
                        lane.stream.wait(&ready).map_err(cuda("cuStreamWaitEvent"))?;
                    }
                }
                for &i in &block.steps {
                    match &plan.stages[s - 1][i] {
                        Step::Copy { src, dst } => copy(lane, at(dst), at(src), place[src.buf].1, dst.len * size)?,
                        Step::Reduce { srcs, dst, last } => {
                            let r = reductions[s - 1][i].as_ref().expect("every reduction is prepared");
                            for source in &r.sources {
                                if let Source::Remote { from, ctx, scratch, bytes } = source {
                                    copy(lane, scratch_at[block.stream] + *scratch as u64, *from, *ctx, *bytes)?;
                                }
                            }
                            let divide = if *last { divide_by } else { 0 };
                            // SAFETY: the function comes from the lane's context; the pointer
                            // table entries hold `srcs.len()` addresses of `dst.len` elements in
                            // that context (buffers, or scratch filled just above on this
                            // stream); `dst` lies inside its buffer and overlaps no source (a
                            // validated plan); all of it lives until the final synchronisation.
                            let table = table_at[block.stream] + 8 * r.table as u64;
                            unsafe { lane.context.kernels.launch(&lane.stream, &functions[block.stream], at(dst), table, srcs.len(), dst.len, divide) }?;
                        }
                    }
                }
                if block.record {
                    let event = lane.stream.record_event(None).map_err(cuda("cuEventRecord"))?;
                    self.events.insert(Event { stream: block.stream, stage: s }, event);
                }
            }
        }
        Ok(())
    }

    /// The output buffers, their last writes recorded for cudarc's per-buffer tracking.
    fn outputs(mut self) -> Vec<DeviceBuffer> {
        let plan = self.plan;
        plan.outputs
            .iter()
            .map(|&o| {
                let mut data = self.owned[o - plan.inputs].take().expect("outputs are distinct allocated buffers");
                let stream = data.stream().clone();
                drop(data.device_ptr_mut(&stream));
                DeviceBuffer { device: plan.devices[plan.buffers[o].device].clone(), data, dtype: plan.dtype, len: plan.elements }
            })
            .collect()
    }
}

/// Enqueues a copy of `bytes` from `from` (memory of context `from_ctx`) to `to` (memory of
/// `lane`'s context) on `lane`'s stream: a device-to-device copy within one context, else a
/// peer copy (direct where peer access is enabled, staged through host memory by the driver
/// otherwise).
fn copy(lane: &Lane, to: u64, from: u64, from_ctx: sys::CUcontext, bytes: usize) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let ctx = &lane.context.ctx;
    ctx.bind_to_thread().map_err(cuda("cuCtxSetCurrent"))?;
    let stream = lane.stream.cu_stream();
    // SAFETY: both ranges lie inside live allocations of their contexts (validated plan,
    // scratch sized for it) and do not overlap (different buffers, or disjoint chunks).
    if from_ctx == ctx.cu_ctx() {
        unsafe { cu::memcpy_dtod_async(to, from, bytes, stream) }.map_err(cuda("cuMemcpyDtoDAsync"))
    } else {
        unsafe { cu::memcpy_peer_async(ctx.cu_ctx(), to, from_ctx, from, bytes, stream) }.map_err(cuda("cuMemcpyPeerAsync"))
    }
}
