//! NCCL across processes: one rank per GPU, the communicator built from a unique id that rank 0
//! makes and shares over the process group (MPI) it joins. [`NcclGroup`] is that process group
//! with NCCL's all-reduce: the flat all-reduces of `CollectiveAllReduce` and of the `nccl`
//! specs run on the GPUs (NCCL over NVLink, PCIe or the network), while plans still move their
//! messages over the group it was built on. `mpirun -np 8 node train.js` on an 8-GPU machine
//! gives each rank its GPU by local rank.

use crate::nccl::nccl_op;
use crate::probe::{gpu_count, libraries};
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::group::bootstrap::share_from_root;
use crossdev_core::group::{Incoming, Outgoing, ProcessGroup, Wait};
use crossdev_core::{DType, ReduceOp};
use cudarc::driver::{CudaContext, CudaStream, DeviceRepr};
use cudarc::nccl::{Comm, Id, NcclType};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes of NCCL's unique id.
const ID_BYTES: usize = 128;

/// The GPU a rank uses when not told: its rank among the processes of its machine (Open MPI,
/// MPICH and Slurm name it), modulo the GPUs there.
pub fn local_gpu(rank: usize, gpus: usize) -> usize {
    let local = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
        .unwrap_or(rank);
    local % gpus.max(1)
}

/// A process group whose all-reduce is NCCL's over one GPU per rank; its messages and its
/// bootstrap go over `inner`.
pub struct NcclGroup {
    inner: Arc<dyn ProcessGroup>,
    gpu: usize,
    comm: Mutex<Comm>,
}

// SAFETY: the communicator is used under its mutex only.
unsafe impl Send for NcclGroup {}
unsafe impl Sync for NcclGroup {}

fn cuda(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CrossDeviceError {
    move |e| CrossDeviceError::new(ErrorCode::Cuda, format!("{what} failed: {e:?}"))
}

fn nccl(what: &'static str) -> impl Fn(cudarc::nccl::result::NcclError) -> CrossDeviceError {
    move |e| CrossDeviceError::new(ErrorCode::Cuda, format!("{what} failed: {e:?}"))
}

impl NcclGroup {
    /// Joins every rank of `inner` into one NCCL communicator, this rank on `gpu` (default:
    /// [`local_gpu`]). Fails with `ERR_NO_CUDA` on every rank when rank 0 or this rank has no
    /// GPU or no NCCL library.
    pub fn join(inner: Arc<dyn ProcessGroup>, gpu: Option<usize>, timeout: Duration) -> Result<NcclGroup> {
        let wait = Wait::new("NCCL bootstrap (sharing ncclUniqueId)", timeout);
        let usable = || -> Result<usize> {
            let gpus = gpu_count()?;
            if !libraries().nccl {
                return Err(CrossDeviceError::new(ErrorCode::NoCuda, "NCCL (libnccl.so) was not found by the dynamic loader; pip's nvidia-nccl-cu13 ships libnccl.so.2: link it as libnccl.so in a folder on LD_LIBRARY_PATH"));
            }
            Ok(gpus)
        };
        // Rank 0 checks before making the id, so that its failure reaches every rank.
        let id = share_from_root(
            inner.as_ref(),
            ID_BYTES,
            || {
                usable()?;
                let id = Id::new().map_err(nccl("ncclGetUniqueId"))?;
                Ok(id.internal().iter().map(|&c| c as u8).collect())
            },
            &wait,
        )?;
        let gpus = usable()?;
        let gpu = gpu.unwrap_or_else(|| local_gpu(inner.rank(), gpus));
        if gpu >= gpus {
            return Err(CrossDeviceError::new(ErrorCode::NoCuda, format!("GPU {gpu} requested, {gpus} present")));
        }
        let stream = CudaContext::new(gpu).map_err(cuda("cuCtxCreate"))?.new_stream().map_err(cuda("cuStreamCreate"))?;
        let mut internal = [0 as std::ffi::c_char; ID_BYTES];
        for (c, b) in internal.iter_mut().zip(&id) {
            *c = *b as std::ffi::c_char;
        }
        let comm = Comm::from_rank(stream, inner.rank(), inner.size(), Id::uninit(internal)).map_err(nccl("ncclCommInitRank"))?;
        Ok(NcclGroup { inner, gpu, comm: Mutex::new(comm) })
    }

    /// The GPU this rank reduces on.
    pub fn gpu(&self) -> usize {
        self.gpu
    }

    fn all_reduce_typed<T: NcclType + DeviceRepr + bytemuck::Pod>(&self, op: ReduceOp, input: &[u8], output: &mut [u8], wait: &Wait) -> Result<()> {
        let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        let stream: Arc<CudaStream> = comm.stream();
        let send = stream.clone_htod(bytemuck::cast_slice::<u8, T>(input)).map_err(cuda("upload"))?;
        let mut recv = stream.alloc_zeros::<u8>(output.len()).map_err(cuda("cuMemAlloc"))?;
        // SAFETY: a u8 buffer of the same byte length viewed as T (Pod, aligned by cuMemAlloc).
        let mut recv_t = unsafe { recv.transmute_mut::<T>(output.len() / std::mem::size_of::<T>()) }
            .ok_or_else(|| CrossDeviceError::new(ErrorCode::Internal, "output length is not a whole number of elements"))?;
        comm.all_reduce(&send, &mut recv_t, &nccl_op(op)).map_err(nccl("ncclAllReduce"))?;
        let done = stream.record_event(None).map_err(cuda("cuEventRecord"))?;
        while !done.try_is_complete().map_err(cuda("cuEventQuery"))? {
            if std::time::Instant::now() >= wait.deadline {
                // NCCL cannot be cancelled: abort the communicator (its Drop), after which this
                // group is unusable.
                let missing = self.inner.roll_call(wait);
                return Err(wait.timed_out("in ncclAllReduce", &missing));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        stream.memcpy_dtoh(&recv, output).map_err(cuda("download"))?;
        Ok(())
    }
}

impl ProcessGroup for NcclGroup {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn size(&self) -> usize {
        self.inner.size()
    }

    fn exchange(&self, sends: &[Outgoing], recvs: &mut [Incoming], wait: &Wait) -> Result<()> {
        self.inner.exchange(sends, recvs, wait)
    }

    fn has_all_reduce(&self, dtype: DType, op: ReduceOp) -> bool {
        match op {
            ReduceOp::Sum | ReduceOp::Product => true,
            // NCCL's MAX and MIN on floats do not let NaN win.
            ReduceOp::Max | ReduceOp::Min => matches!(dtype, DType::Int32 | DType::Int64),
            ReduceOp::Mean => false,
        }
    }

    fn all_reduce(&self, dtype: DType, op: ReduceOp, input: &[u8], output: &mut [u8], wait: &Wait) -> Result<()> {
        match dtype {
            DType::Float32 => self.all_reduce_typed::<f32>(op, input, output, wait),
            DType::Float64 => self.all_reduce_typed::<f64>(op, input, output, wait),
            DType::Float16 => self.all_reduce_typed::<half::f16>(op, input, output, wait),
            DType::BFloat16 => self.all_reduce_typed::<half::bf16>(op, input, output, wait),
            DType::Int32 => self.all_reduce_typed::<i32>(op, input, output, wait),
            DType::Int64 => self.all_reduce_typed::<i64>(op, input, output, wait),
        }
    }

    fn roll_call(&self, wait: &Wait) -> Vec<usize> {
        self.inner.roll_call(wait)
    }
}
