//! NCCL through `cudarc::nccl`: one communicator per GPU of this process (`ncclCommInitAll`),
//! all-reduces issued together inside one NCCL group (required when one thread drives several
//! communicators). With one GPU this is a one-rank communicator, which the GPU check exercises.
//! `NcclAllReduce` (and `AllReduce` with `nccl`) of GPU tensors on distinct GPUs runs through it
//! (see [`crate::resident`]).

use crate::probe::{gpu_count, libraries};
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::reduce_op::ReduceOp;
use crossdev_core::dtype::DType;
use cudarc::driver::{CudaContext, CudaSlice, CudaViewMut};
use cudarc::nccl::{result, Comm, NcclType, ReduceOp as NcclOp};
use std::sync::Mutex;

fn nccl(what: &str) -> impl Fn(result::NcclError) -> CrossDeviceError + '_ {
    move |e| CrossDeviceError::new(ErrorCode::Cuda, format!("{what} failed: {e:?}"))
}

/// Held while a collective is issued and waited for (see [`Communicator::all_reduce`]).
static ISSUE: Mutex<()> = Mutex::new(());

/// NCCL's op for `op` (MEAN is NCCL's `Avg`).
pub fn nccl_op(op: ReduceOp) -> NcclOp {
    match op {
        ReduceOp::Sum => NcclOp::Sum,
        ReduceOp::Mean => NcclOp::Avg,
        ReduceOp::Max => NcclOp::Max,
        ReduceOp::Min => NcclOp::Min,
        ReduceOp::Product => NcclOp::Prod,
    }
}

/// Communicators over GPUs of this process, one rank per GPU.
pub struct Communicator {
    comms: Vec<Comm>,
}

// SAFETY: an NCCL communicator may be used from any thread, one call at a time; `Communicator`
// is not `Sync`, so sharing it takes a lock (as `GpuStore` does).
unsafe impl Send for Communicator {}

impl Communicator {
    /// One communicator per GPU, `n` of them (`ERR_NO_CUDA` without NCCL or enough GPUs).
    pub fn over_gpus(n: usize) -> Result<Communicator> {
        Communicator::over(&(0..n).collect::<Vec<_>>())
    }

    /// One communicator per GPU of `ordinals` (distinct), rank `i` on GPU `ordinals[i]`
    /// (`ERR_NO_CUDA` without NCCL or those GPUs).
    pub fn over(ordinals: &[usize]) -> Result<Communicator> {
        let present = gpu_count()?;
        if ordinals.is_empty() || ordinals.iter().any(|&o| o >= present) {
            return Err(CrossDeviceError::new(ErrorCode::NoCuda, format!("GPUs {ordinals:?} requested, {present} present")));
        }
        if !libraries().nccl {
            return Err(CrossDeviceError::new(
                ErrorCode::NoCuda,
                "NCCL (libnccl.so) was not found by the dynamic loader; pip's nvidia-nccl-cu13 ships libnccl.so.2: link it as libnccl.so in a folder on LD_LIBRARY_PATH (scripts/gpu-check.sh does)",
            ));
        }
        let streams = ordinals
            .iter()
            .map(|&i| CudaContext::new(i).map(|c| c.default_stream()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| CrossDeviceError::new(ErrorCode::Cuda, format!("cuCtxCreate failed: {e:?}")))?;
        Ok(Communicator { comms: Comm::from_devices(streams).map_err(nccl("ncclCommInitAll"))? })
    }

    /// Ranks in the communicator.
    pub fn size(&self) -> usize {
        self.comms.len()
    }

    /// All-reduces `bufs[i]` (on the GPU of rank `i`) in place with `op`, all ranks in one NCCL
    /// group.
    pub fn all_reduce<T: NcclType>(&self, bufs: &mut [CudaSlice<T>], op: ReduceOp) -> Result<()> {
        self.all_reduce_views(bufs.iter_mut().map(|b| b.as_view_mut()).collect(), op)
    }

    /// [`Self::all_reduce`] of the first `len` elements of `dtype` in each of `bufs` (raw bytes).
    pub fn all_reduce_bytes(&self, bufs: &mut [CudaSlice<u8>], dtype: DType, len: usize, op: ReduceOp) -> Result<()> {
        fn typed<T: NcclType>(c: &Communicator, bufs: &mut [CudaSlice<u8>], len: usize, op: ReduceOp) -> Result<()> {
            // SAFETY: each buffer holds at least `len` elements of `T` (checked below), which
            // NCCL reads and writes as `T`.
            let views = bufs.iter_mut().map(|b| unsafe { b.transmute_mut::<T>(len) }).collect::<Option<Vec<_>>>();
            let views = views.ok_or_else(|| CrossDeviceError::new(ErrorCode::InvalidArgument, format!("a buffer holds fewer than {len} elements")))?;
            c.all_reduce_views(views, op)
        }
        match dtype {
            DType::Float32 => typed::<f32>(self, bufs, len, op),
            DType::Float64 => typed::<f64>(self, bufs, len, op),
            DType::Float16 => typed::<half::f16>(self, bufs, len, op),
            DType::BFloat16 => typed::<half::bf16>(self, bufs, len, op),
            DType::Int32 => typed::<i32>(self, bufs, len, op),
            DType::Int64 => typed::<i64>(self, bufs, len, op),
        }
    }

    fn all_reduce_views<T: NcclType>(&self, mut bufs: Vec<CudaViewMut<T>>, op: ReduceOp) -> Result<()> {
        if bufs.len() != self.comms.len() {
            return Err(CrossDeviceError::new(
                ErrorCode::InvalidArgument,
                format!("{} buffers for {} ranks", bufs.len(), self.comms.len()),
            ));
        }
        let op = nccl_op(op);
        // One collective at a time in the process: communicators over overlapping GPUs issue on
        // the same streams, and two issued in opposite orders on two GPUs would wait for each
        // other forever.
        let _one = ISSUE.lock().unwrap_or_else(|e| e.into_inner());
        result::group_start().map_err(nccl("ncclGroupStart"))?;
        let issued: std::result::Result<Vec<_>, _> = self.comms.iter().zip(bufs.iter_mut()).map(|(c, b)| c.all_reduce_in_place(b, &op)).collect();
        let ended = result::group_end().map_err(nccl("ncclGroupEnd"));
        // Waited for even after a failure: the caller frees the buffers once this returns, and
        // nothing NCCL queued may still use them.
        let synced = self.comms.iter().try_for_each(|c| c.stream().synchronize().map_err(|e| CrossDeviceError::new(ErrorCode::Cuda, format!("cuStreamSynchronize failed: {e:?}"))));
        ended?;
        issued.map_err(nccl("ncclAllReduce"))?;
        synced
    }
}
