//! NCCL through `cudarc::nccl`: one communicator per GPU of this process (`ncclCommInitAll`),
//! all-reduces issued together inside one NCCL group (required when one thread drives several
//! communicators). With one GPU this is a one-rank communicator, which the GPU check exercises.

use crate::probe::{gpu_count, libraries};
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::reduce_op::ReduceOp;
use cudarc::driver::{CudaContext, CudaSlice};
use cudarc::nccl::{result, Comm, NcclType, ReduceOp as NcclOp};

fn nccl(what: &str) -> impl Fn(result::NcclError) -> CrossDeviceError + '_ {
    move |e| CrossDeviceError::new(ErrorCode::Cuda, format!("{what} failed: {e:?}"))
}

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

/// Communicators over GPUs `0..n` of this process, rank `i` on GPU `i`.
pub struct Communicator {
    comms: Vec<Comm>,
}

impl Communicator {
    /// One communicator per GPU, `n` of them (`ERR_NO_CUDA` without NCCL or enough GPUs).
    pub fn over_gpus(n: usize) -> Result<Communicator> {
        let present = gpu_count()?;
        if n == 0 || n > present {
            return Err(CrossDeviceError::new(ErrorCode::NoCuda, format!("{n} GPUs requested, {present} present")));
        }
        if !libraries().nccl {
            return Err(CrossDeviceError::new(
                ErrorCode::NoCuda,
                "NCCL (libnccl.so) was not found by the dynamic loader; pip's nvidia-nccl-cu13 ships libnccl.so.2: link it as libnccl.so in a folder on LD_LIBRARY_PATH (scripts/gpu-check.sh does)",
            ));
        }
        let streams = (0..n)
            .map(|i| CudaContext::new(i).map(|c| c.default_stream()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| CrossDeviceError::new(ErrorCode::Cuda, format!("cuCtxCreate failed: {e:?}")))?;
        Ok(Communicator { comms: Comm::from_devices(streams).map_err(nccl("ncclCommInitAll"))? })
    }

    /// Ranks in the communicator.
    pub fn size(&self) -> usize {
        self.comms.len()
    }

    /// All-reduces `bufs[i]` (on GPU `i`) in place with `op`, all ranks in one NCCL group.
    pub fn all_reduce<T: NcclType>(&self, bufs: &mut [CudaSlice<T>], op: ReduceOp) -> Result<()> {
        if bufs.len() != self.comms.len() {
            return Err(CrossDeviceError::new(
                ErrorCode::InvalidArgument,
                format!("{} buffers for {} ranks", bufs.len(), self.comms.len()),
            ));
        }
        let op = nccl_op(op);
        result::group_start().map_err(nccl("ncclGroupStart"))?;
        let issued: std::result::Result<Vec<_>, _> = self.comms.iter().zip(bufs.iter_mut()).map(|(c, b)| c.all_reduce_in_place(b, &op)).collect();
        result::group_end().map_err(nccl("ncclGroupEnd"))?;
        issued.map_err(nccl("ncclAllReduce"))?;
        for c in &self.comms {
            c.stream().synchronize().map_err(|e| CrossDeviceError::new(ErrorCode::Cuda, format!("cuStreamSynchronize failed: {e:?}")))?;
        }
        Ok(())
    }
}
