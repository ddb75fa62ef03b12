//! GPU-resident tensors: tensors whose elements stay in GPU memory between operations, which a
//! binding hands to its host language as opaque handles (JavaScript's `GpuTensor`).
//!
//! The core has no GPU code (it compiles to wasm32), so the memory lives behind
//! [`ResidentStore`], which a binding that can reach GPUs installs once per process (the native
//! addon installs crossdev-cuda's, as MPI's process group is installed through
//! [`crate::group::install`]). With no store installed (the WebAssembly backend), every request
//! that needs one fails with `ERR_NO_CUDA`.
//!
//! An all-reduce in this process (`AllReduce`, `CollectiveAllReduce`, `MultiWorkerAllReduce`,
//! any packing) of GPU tensors on the devices they are keyed by runs where the tensors are:
//! packs are concatenated in device memory ([`ResidentStore::concat`]), the store runs the op's
//! own plan for each pack there ([`ResidentStore::run_plan`]) and the results are cut out of the
//! reduced packs (see [`crate::ops::on_device`]). The plans combine in the order of the host executor,
//! so results are the host ones bit for bit. Plans through devices other than the tensors'
//! (`pscpu`'s host gathers) stage instead, and NCCL's part of a plan runs through NCCL where the
//! store has it.
//!
//! Every other operation on resident tensors stages through host memory in [`crate::wire`]: each
//! input handle is downloaded, the same core code that serves host tensors runs (so results are
//! bit-identical to the host ones by construction), and the results whose device is a GPU are
//! uploaded into new handles. Staging keeps one implementation of every op, its validation and
//! its combination order; its cost is a copy each way over the host link.

use crate::device::{canonicalize, DeviceSpec};
use crate::dtype::DType;
use crate::error::{CrossDeviceError, ErrorCode, Result};
use crate::plan::Plan;
use crate::reduce_op::ReduceOp;
use crate::tensor::Buffer;
use std::sync::{Arc, RwLock};

/// Live device memory held by a [`ResidentStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Tensors held (uploaded, or results, and not yet released).
    pub buffers: usize,
    /// Bytes of their elements.
    pub bytes: usize,
}

/// What a resident tensor is: where it lives and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resident {
    /// The canonical name of its (logical) GPU.
    pub device: String,
    /// Element type.
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
}

/// Device memory for resident tensors, addressed by handles (non-zero, never reused within a
/// process). Implementations are shared by every thread that runs requests.
pub trait ResidentStore: Send + Sync {
    /// Copies `data` into new memory of GPU `device` (a canonical GPU name) and returns its
    /// handle. `ERR_NO_CUDA` without a GPU for `device`.
    fn upload(&self, device: &str, data: &Buffer) -> Result<u64>;

    /// The elements of `handle`, copied to the host; `ERR_DISPOSED` for a released or unknown
    /// handle.
    fn download(&self, handle: u64) -> Result<Buffer<'static>>;

    /// Where `handle` lives and what it holds; `ERR_DISPOSED` for a released or unknown handle.
    fn describe(&self, handle: u64) -> Result<Resident>;

    /// A new resident tensor on GPU `device` (canonical) holding `parts` end to end: elements
    /// `[offset, offset + len)` of each resident tensor `(handle, offset, len)`, all of `dtype`
    /// (the packs of an all-reduce, and the results unpacked from them).
    fn concat(&self, device: &str, dtype: DType, parts: &[(u64, usize, usize)]) -> Result<u64>;

    /// Runs `plan` with `op` in device memory over the resident tensors `inputs` (input `i` on
    /// the plan's device for it, `plan.elements` elements of `plan.dtype`) and returns the
    /// handles of new resident tensors holding the results, one per input on its device, each
    /// combined in the order the plan gives (as [`crate::plan::host`] combines it).
    fn run_plan(&self, plan: &Plan, op: ReduceOp, inputs: &[u64]) -> Result<Vec<u64>>;

    /// All-reduces the resident tensors `inputs` (one per device, all of one dtype and size) with
    /// `op` through the GPUs' own collective library, NCCL, when the store has it for their
    /// devices (distinct GPUs): the handles of new resident tensors holding the results, one per
    /// input on its device; `Ok(None)` when it has not (then the op runs its plan). NCCL
    /// combines in its own order: on several GPUs, float results may differ from the plan's in
    /// their last bits.
    fn collective_all_reduce(&self, _op: ReduceOp, _inputs: &[u64]) -> Result<Option<Vec<u64>>> {
        Ok(None)
    }

    /// Frees the memory of `handle`; `false` when it was released already or never existed.
    fn release(&self, handle: u64) -> bool;

    /// What the store holds now (for tests, and to watch for leaks).
    fn usage(&self) -> Usage;
}

static STORE: RwLock<Option<Arc<dyn ResidentStore>>> = RwLock::new(None);

/// Makes `store` hold this process's resident tensors (a binding does this once, at load).
pub fn install(store: Arc<dyn ResidentStore>) {
    *STORE.write().unwrap_or_else(|e| e.into_inner()) = Some(store);
}

/// The installed store, if any.
pub fn installed() -> Option<Arc<dyn ResidentStore>> {
    STORE.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The installed store, or `ERR_NO_CUDA` when this build has no GPU support.
pub fn store() -> Result<Arc<dyn ResidentStore>> {
    installed().ok_or_else(|| {
        CrossDeviceError::new(
            ErrorCode::NoCuda,
            "GPU tensors need crossdev's native addon on a machine with a CUDA GPU; this backend has no GPU support (the WebAssembly backend never has)",
        )
    })
}

/// Whether `device` (canonical) is a GPU.
pub fn is_gpu(device: &str) -> bool {
    DeviceSpec::parse(device).is_ok_and(|s| s.device_type.as_deref() == Some("GPU"))
}

/// The canonical name of `device`, which must be a GPU (`ERR_INVALID_DEVICE` otherwise: only
/// GPUs hold resident tensors).
pub fn gpu_device(device: &str) -> Result<String> {
    let canonical = canonicalize(device, None)?;
    if !is_gpu(&canonical) {
        return Err(CrossDeviceError::new(
            ErrorCode::InvalidDevice,
            format!("GPU tensors live on GPUs; {canonical} is not one (host tensors need no resident option)"),
        ));
    }
    Ok(canonical)
}
