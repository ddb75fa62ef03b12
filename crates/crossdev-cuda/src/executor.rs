//! Runs crossdev plans on a GPU: every logical device of the plan is a separate buffer on the
//! same physical GPU (`CROSSDEV_VIRTUAL_GPUS` logical devices on a one-GPU machine), copies are
//! device-to-device copies and reductions are launches of the N-way reduce kernel. So ring,
//! recursive halving-doubling, shuffle and hierarchical plans run with real kernels and copies
//! on a single GPU, bit-identical to the host executor (same plan, same combination order).
//!
//! This first executor issues every step on one stream, in plan order; a stream per logical
//! device with events between stages is the next step.

use crate::kernels::{compile, reduce_kernel};
use crate::probe::gpu_count;
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::plan::{Chunk, Plan, Step};
use crossdev_core::reduce_op::ReduceOp;
use crossdev_core::tensor::Buffer;
use cudarc::driver::{CudaContext, CudaModule, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use std::sync::Arc;

fn cuda(what: &str) -> impl Fn(cudarc::driver::DriverError) -> CrossDeviceError + '_ {
    move |e| CrossDeviceError::new(ErrorCode::Cuda, format!("{what} failed: {e:?}"))
}

/// A GPU with crossdev's kernels loaded.
pub struct Gpu {
    stream: Arc<CudaStream>,
    reduce: Arc<CudaModule>,
}

impl Gpu {
    /// GPU `ordinal`, kernels compiled by NVRTC as PTX for `compute_80` (which every GPU since
    /// Ampere runs, JIT-compiled by the driver).
    pub fn open(ordinal: usize) -> Result<Gpu> {
        let count = gpu_count()?;
        if ordinal >= count {
            return Err(CrossDeviceError::new(ErrorCode::NoCuda, format!("GPU {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda("cuCtxCreate"))?;
        let mut modules = compile("compute_80")?;
        let reduce_ptx = modules.remove(modules.iter().position(|(name, _)| *name == "reduce_n.cu").expect("reduce_n.cu is a kernel source")).1;
        let reduce = ctx.load_module(reduce_ptx).map_err(cuda("cuModuleLoadData"))?;
        Ok(Gpu { stream: ctx.default_stream(), reduce })
    }

    /// Runs `plan` with `op` over host `inputs` (uploaded first); returns the host results.
    pub fn run_plan(&self, plan: &Plan, op: ReduceOp, inputs: &[&Buffer]) -> Result<Vec<Buffer<'static>>> {
        plan.validate()?;
        let size = plan.dtype.size();
        let s = &self.stream;
        let mut bufs: Vec<CudaSlice<u8>> = inputs.iter().map(|b| s.clone_htod(b.as_bytes())).collect::<std::result::Result<_, _>>().map_err(cuda("upload"))?;
        for spec in &plan.buffers[plan.inputs..] {
            bufs.push(s.alloc_zeros::<u8>(spec.len * size).map_err(cuda("cuMemAlloc"))?);
        }
        let function = self.reduce.load_function(&reduce_kernel(plan.dtype, op)).map_err(cuda("cuModuleGetFunction"))?;
        let divide_by: i32 = if op == ReduceOp::Mean { plan.inputs as i32 } else { 0 };
        let address = |c: &Chunk, bufs: &[CudaSlice<u8>]| {
            let (base, _sync) = bufs[c.buf].device_ptr(s);
            base + (c.offset * size) as u64
        };
        for step in plan.stages.iter().flatten() {
            match step {
                Step::Copy { src, dst } => {
                    let (from, to) = (address(src, &bufs), address(dst, &bufs));
                    // SAFETY: both ranges lie inside their buffers (validated) and do not overlap
                    // (different buffers, or disjoint chunks: validated).
                    unsafe { cudarc::driver::result::memcpy_dtod_async(to, from, src.len * size, s.cu_stream()) }.map_err(cuda("cuMemcpyDtoDAsync"))?;
                }
                Step::Reduce { srcs, dst, last } => {
                    let pointers: Vec<u64> = srcs.iter().map(|c| address(c, &bufs)).collect();
                    let pointers = s.clone_htod(&pointers).map_err(cuda("upload of input addresses"))?;
                    let out = address(dst, &bufs);
                    let (n, len, div) = (srcs.len() as i32, dst.len as u64, if *last { divide_by } else { 0 });
                    let mut launch = s.launch_builder(&function);
                    launch.arg(&out).arg(&pointers).arg(&n).arg(&len).arg(&div);
                    let blocks = dst.len.div_ceil(256).clamp(1, 65_535) as u32;
                    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                    // SAFETY: the kernel's parameters are (T* out, const T* const* inputs, int n,
                    // u64 len, int divide_by), matching the arguments; every address lies inside
                    // a buffer of at least `len` elements (validated plan).
                    unsafe { launch.launch(cfg) }.map_err(cuda("kernel launch"))?;
                }
            }
        }
        let outputs = plan
            .outputs
            .iter()
            .map(|&o| {
                let bytes = s.clone_dtoh(&bufs[o].slice(0..plan.elements * size)).map_err(cuda("download"))?;
                Ok(Buffer::from_bytes(plan.dtype, &bytes).into_owned())
            })
            .collect::<Result<Vec<_>>>()?;
        s.synchronize().map_err(cuda("cuStreamSynchronize"))?;
        Ok(outputs)
    }
}
