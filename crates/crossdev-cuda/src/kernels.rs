//! The CUDA C kernels and their compilation by NVRTC.
//!
//! Sources live in `kernels/*.cu` beside this crate and share `common.cuh`, which is spliced in
//! here (NVRTC gets one self-contained source per file, with no include path to set up).

use crate::probe::require_nvrtc;
use crossdev_core::dtype::DType;
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::reduce_op::ReduceOp;
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

const COMMON: &str = include_str!("../kernels/common.cuh");

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

/// Compiles every source to PTX for `arch` (e.g. `"compute_90"`), one module per file.
pub fn compile(arch: &'static str) -> Result<Vec<(&'static str, Ptx)>> {
    require_nvrtc()?;
    sources()
        .into_iter()
        .map(|(name, src)| {
            let opts = CompileOptions { arch: Some(arch), name: Some(name.to_string()), ..Default::default() };
            compile_ptx_with_opts(src, opts)
                .map(|ptx| (name, ptx))
                .map_err(|e| CrossDeviceError::new(ErrorCode::Cuda, format!("NVRTC could not compile {name} for {arch}: {e:?}")))
        })
        .collect()
}
