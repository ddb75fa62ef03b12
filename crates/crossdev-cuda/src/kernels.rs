//! The CUDA C kernels, their compilation by NVRTC, and the launch of the N-way reduce kernel.
//!
//! Sources live in `kernels/*.cu` beside this crate and share `common.cuh`, which is spliced in
//! here (NVRTC gets one self-contained source per file, with no include path to set up).

use crate::probe::require_nvrtc;
use crossdev_core::dtype::DType;
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::reduce_op::ReduceOp;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use std::sync::{Arc, Mutex};

const COMMON: &str = include_str!("../kernels/common.cuh");

/// The virtual architecture the kernels are compiled for at run time: PTX for `compute_80`
/// runs on every GPU since Ampere (JIT-compiled by the driver for the GPU at hand).
pub const RUNTIME_ARCH: &str = "compute_80";

/// Threads per block of the reduce kernel (a grid-stride loop, so any grid covers any length).
const REDUCE_BLOCK: u32 = 256;

/// Kernel sources by file name, with `common.cuh` spliced in.
pub fn sources() -> Vec<(&'static str, String)> {
    [("reduce_n.cu", include_str!("../kernels/reduce_n.cu")), ("pack.cu", include_str!("../kernels/pack.cu"))]
        .into_iter()
        .map(|(name, src)| (name, src.replace("#include \"common.cuh\"", COMMON)))
        .collect()
}

/// The entry point reducing `dtype` with `op` (MEAN sums, then divides in the same kernel).
pub fn reduce_kernel(dtype: DType, op: ReduceOp) -> String {
    let op = match op.combiner() {
        ReduceOp::Sum | ReduceOp::Mean => "sum",
        ReduceOp::Product => "product",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
    };
    format!("reduce_n_{}_{op}", dtype.name())
}

/// Every entry point the sources define.
pub fn entry_points() -> Vec<String> {
    let mut names: Vec<String> = DType::ALL
        .iter()
        .flat_map(|&d| [ReduceOp::Sum, ReduceOp::Product, ReduceOp::Max, ReduceOp::Min].map(|op| reduce_kernel(d, op)))
        .collect();
    names.extend(["pack_bytes", "unpack_bytes", "widen_indices"].map(String::from));
    names
}

fn compile_one(name: &'static str, src: String, arch: &'static str) -> Result<Ptx> {
    let opts = CompileOptions { arch: Some(arch), name: Some(name.to_string()), ..Default::default() };
    compile_ptx_with_opts(src, opts).map_err(|e| CrossDeviceError::new(ErrorCode::Cuda, format!("NVRTC could not compile {name} for {arch}: {e:?}")))
}

/// Compiles every source to PTX for `arch` (e.g. `"compute_90"`), one module per file.
pub fn compile(arch: &'static str) -> Result<Vec<(&'static str, Ptx)>> {
    require_nvrtc()?;
    sources().into_iter().map(|(name, src)| Ok((name, compile_one(name, src, arch)?))).collect()
}

/// `reduce_n.cu` compiled for [`RUNTIME_ARCH`], once per process (NVRTC takes a while, and
/// every CUDA context loads the same PTX).
fn reduce_ptx() -> Result<Ptx> {
    static PTX: Mutex<Option<Ptx>> = Mutex::new(None);
    let mut cached = PTX.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ptx) = cached.as_ref() {
        return Ok(ptx.clone());
    }
    require_nvrtc()?;
    let (name, src) = sources().into_iter().find(|(name, _)| *name == "reduce_n.cu").expect("reduce_n.cu is a kernel source");
    let ptx = compile_one(name, src, RUNTIME_ARCH)?;
    *cached = Some(ptx.clone());
    Ok(ptx)
}

fn cuda(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CrossDeviceError {
    move |e| CrossDeviceError::new(ErrorCode::Cuda, format!("{what} failed: {e:?}"))
}

/// The N-way reduce kernels loaded in one CUDA context, and the one place that launches them
/// (the plan executor and `gpu-bench` both go through [`ReduceKernels::launch`]).
pub struct ReduceKernels {
    module: Arc<CudaModule>,
    /// Most blocks per launch: enough to fill every multiprocessor of the GPU (the kernel loops
    /// over the rest), so that a launch over a huge chunk does not queue millions of blocks.
    max_blocks: u32,
}

impl ReduceKernels {
    /// Loads `reduce_n.cu` (compiled by NVRTC on first use) into `ctx`.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<ReduceKernels> {
        let module = ctx.load_module(reduce_ptx()?).map_err(cuda("cuModuleLoadData"))?;
        let sms = ctx.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(cuda("cuDeviceGetAttribute"))?;
        // 2048 resident threads per multiprocessor on every GPU since Volta: 8 blocks of 256.
        Ok(ReduceKernels { module, max_blocks: (sms.max(1) as u32) * 8 })
    }

    /// The kernel reducing `dtype` with `op` (look it up once per run, launch it many times).
    pub fn function(&self, dtype: DType, op: ReduceOp) -> Result<CudaFunction> {
        self.module.load_function(&reduce_kernel(dtype, op)).map_err(cuda("cuModuleGetFunction"))
    }

    /// Enqueues `out[i] = in_0[i] ⊕ … ⊕ in_{n-1}[i]` for `i < len` on `stream`, divided by
    /// `divide_by` when it is positive (MEAN's last reduction); `function` comes from
    /// [`ReduceKernels::function`] of these kernels and fixes the dtype and the combiner.
    ///
    /// # Safety
    /// `stream` belongs to the context these kernels were loaded in; `inputs` is the device
    /// address of `n` device addresses (u64), each of `len` elements of the function's dtype;
    /// `out` is the device address of `len` such elements that no input overlaps. All of it is
    /// memory of that context and stays allocated until the launch completes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn launch(&self, stream: &CudaStream, function: &CudaFunction, out: u64, inputs: u64, n: usize, len: usize, divide_by: usize) -> Result<()> {
        let (n, len64, divide_by) = (n as i32, len as u64, divide_by as i32);
        let blocks = (len.div_ceil(REDUCE_BLOCK as usize) as u64).clamp(1, u64::from(self.max_blocks)) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (REDUCE_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let mut launch = stream.launch_builder(function);
        // The kernel's parameters: (T* out, const T* const* inputs, int n, u64 len, int divide_by).
        launch.arg(&out).arg(&inputs).arg(&n).arg(&len64).arg(&divide_by);
        launch.launch(cfg).map_err(cuda("cuLaunchKernel"))?;
        Ok(())
    }
}
