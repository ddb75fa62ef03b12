//! The GPU memory behind crossdev's resident tensors ([`crossdev_core::resident`]): a
//! [`ResidentStore`] of [`DeviceBuffer`]s on the logical GPUs of a [`GpuExecutor`], which runs the
//! plans of all-reduces of resident tensors where they are; the native addon installs it when it
//! loads.
//!
//! Nothing touches CUDA until the first upload: the executor (driver, NVRTC and GPU probed
//! first, so a missing library is `ERR_NO_CUDA`, never cudarc's panic) is made then, with
//! `CROSSDEV_VIRTUAL_GPUS` as it is at that moment, and kept (or its error kept) for the
//! process's lifetime.

use crate::executor::{Contexts, DeviceBuffer, GpuExecutor};
use crate::nccl::Communicator;
use crate::probe::libraries;
use cudarc::driver::CudaSlice;
use crossdev_core::dtype::DType;
use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::plan::Plan;
use crossdev_core::reduce_op::ReduceOp;
use crossdev_core::resident::{Resident, ResidentStore, Usage};
use crossdev_core::tensor::Buffer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The environment variable that leaves NCCL out of [`GpuStore::new`]'s all-reduces when `0`.
pub const NCCL_VAR: &str = "CROSSDEV_NCCL";

/// Resident tensors in GPU memory, by handle.
pub struct GpuStore {
    make: fn() -> Result<GpuExecutor>,
    executor: OnceLock<Result<GpuExecutor>>,
    /// Live buffers. Shared (`Arc`) so that a download runs outside the lock and a concurrent
    /// release frees the memory only once the download is done.
    buffers: Mutex<HashMap<u64, Arc<DeviceBuffer>>>,
    next: AtomicU64,
    /// NCCL communicators by the GPUs they span (`None`: NCCL could not be set up for them).
    communicators: Mutex<HashMap<Vec<usize>, Option<Arc<Mutex<Communicator>>>>>,
    /// Whether NCCL may run all-reduces (see [`GpuStore::without_nccl`]).
    nccl: bool,
}

impl Default for GpuStore {
    fn default() -> Self {
        GpuStore::new()
    }
}

impl GpuStore {
    /// An empty store whose logical GPUs `CROSSDEV_VIRTUAL_GPUS` sets (CUDA is probed at the
    /// first upload), without NCCL where `CROSSDEV_NCCL=0` (read now).
    pub fn new() -> GpuStore {
        let store = GpuStore::with_executor(GpuExecutor::from_env);
        match std::env::var(NCCL_VAR) {
            Ok(v) if v == "0" => store.without_nccl(),
            _ => store,
        }
    }

    /// An empty store over the executor `make` returns at the first upload (tests pick the
    /// number of logical GPUs and the contexts this way).
    pub fn with_executor(make: fn() -> Result<GpuExecutor>) -> GpuStore {
        GpuStore { make, executor: OnceLock::new(), buffers: Mutex::new(HashMap::new()), next: AtomicU64::new(1), communicators: Mutex::new(HashMap::new()), nccl: true }
    }

    /// This store with NCCL left out: every all-reduce runs its op's plan, so that results are
    /// those of host tensors bit for bit on any number of GPUs (NCCL combines in its own order).
    pub fn without_nccl(self) -> GpuStore {
        GpuStore { nccl: false, ..self }
    }

    /// The executor whose logical GPUs hold the tensors (made on first use).
    pub fn executor(&self) -> Result<&GpuExecutor> {
        self.executor.get_or_init(self.make).as_ref().map_err(Clone::clone)
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<DeviceBuffer>>> {
        self.buffers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `buffer` under a new handle.
    fn insert(&self, buffer: DeviceBuffer) -> u64 {
        let handle = self.next.fetch_add(1, Ordering::Relaxed);
        self.buffers().insert(handle, Arc::new(buffer));
        handle
    }

    /// The NCCL communicator over GPUs `ordinals` (rank `i` on `ordinals[i]`), made on first use;
    /// `None` where NCCL cannot be set up for them (the op's plan then runs instead; the failure
    /// is remembered, not retried for every pack).
    fn communicator(&self, ordinals: &[usize]) -> Option<Arc<Mutex<Communicator>>> {
        let communicators = || self.communicators.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = communicators().get(ordinals) {
            return c.clone();
        }
        // Made outside the lock: setting NCCL up takes a while.
        let made = Communicator::over(ordinals).map_err(|e| crossdev_core::log::note(|| format!("NCCL over GPUs {ordinals:?} could not be set up ({e}); the plans run instead")));
        communicators().entry(ordinals.to_vec()).or_insert_with(|| made.ok().map(|c| Arc::new(Mutex::new(c)))).clone()
    }

    /// The buffer of `handle`, or `ERR_DISPOSED`.
    pub fn get(&self, handle: u64) -> Result<Arc<DeviceBuffer>> {
        self.buffers().get(&handle).cloned().ok_or_else(|| {
            CrossDeviceError::new(ErrorCode::Disposed, format!("GPU tensor {handle} was disposed (or never existed in this process): it can no longer be read or reduced"))
        })
    }
}

impl ResidentStore for GpuStore {
    fn upload(&self, device: &str, data: &Buffer) -> Result<u64> {
        let buffer = self.executor()?.upload(device, data)?;
        Ok(self.insert(buffer))
    }

    fn describe(&self, handle: u64) -> Result<Resident> {
        let buffer = self.get(handle)?;
        Ok(Resident { device: buffer.device.clone(), dtype: buffer.dtype, len: buffer.len })
    }

    fn concat(&self, device: &str, dtype: DType, parts: &[(u64, usize, usize)]) -> Result<u64> {
        let buffers = parts.iter().map(|&(h, _, _)| self.get(h)).collect::<Result<Vec<_>>>()?;
        let parts: Vec<(&DeviceBuffer, usize, usize)> = buffers.iter().zip(parts).map(|(b, &(_, offset, len))| (b.as_ref(), offset, len)).collect();
        Ok(self.insert(self.executor()?.concat(device, dtype, &parts)?))
    }

    fn collective_all_reduce(&self, op: ReduceOp, inputs: &[u64]) -> Result<Option<Vec<u64>>> {
        let executor = self.executor()?;
        let buffers = inputs.iter().map(|&h| self.get(h)).collect::<Result<Vec<_>>>()?;
        let Some(first) = buffers.first() else { return Ok(None) };
        let ordinals = buffers.iter().map(|b| executor.mapping().physical_gpu(&b.device)).collect::<Result<Vec<_>>>()?;
        let mut distinct = ordinals.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // NCCL's ranks are GPUs, and its streams those of the GPUs' primary contexts; it reduces
        // equal lengths of one type.
        let alike = buffers.iter().all(|b| b.dtype == first.dtype && b.len == first.len);
        if !self.nccl || distinct.len() != ordinals.len() || !alike || executor.contexts() != Contexts::PerGpu || !libraries().nccl {
            return Ok(None);
        }
        let Some(communicator) = self.communicator(&ordinals) else { return Ok(None) };
        // NCCL reduces in place: into copies, on each input's device.
        let copies = buffers.iter().map(|b| executor.concat(&b.device, b.dtype, &[(b.as_ref(), 0, b.len)])).collect::<Result<Vec<_>>>()?;
        let (described, mut data): (Vec<(String, DType, usize)>, Vec<CudaSlice<u8>>) = copies.into_iter().map(|c| ((c.device, c.dtype, c.len), c.data)).unzip();
        let (dtype, len) = (first.dtype, first.len);
        communicator.lock().unwrap_or_else(|e| e.into_inner()).all_reduce_bytes(&mut data, dtype, len, op)?;
        Ok(Some(described.into_iter().zip(data).map(|((device, dtype, len), data)| self.insert(DeviceBuffer { device, data, dtype, len })).collect()))
    }

    fn run_plan(&self, plan: &Plan, op: ReduceOp, inputs: &[u64]) -> Result<Vec<u64>> {
        // Held (shared) for the run: a concurrent release frees an input only after it.
        let buffers = inputs.iter().map(|&h| self.get(h)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&DeviceBuffer> = buffers.iter().map(|b| b.as_ref()).collect();
        let outputs = self.executor()?.run_plan_on_device(plan, op, &refs)?;
        Ok(outputs.into_iter().map(|b| self.insert(b)).collect())
    }

    fn download(&self, handle: u64) -> Result<Buffer<'static>> {
        self.get(handle)?.to_host()
    }

    fn release(&self, handle: u64) -> bool {
        let Some(buffer) = self.buffers().remove(&handle) else { return false };
        // cudarc frees on the buffer's stream without making its context current, and this may
        // be a thread that never used it (a finalizer, a pool thread): make it current first.
        let _ = buffer.data.context().bind_to_thread();
        drop(buffer);
        true
    }

    fn usage(&self) -> Usage {
        let buffers = self.buffers();
        Usage { buffers: buffers.len(), bytes: buffers.values().map(|b| b.bytes()).sum() }
    }
}
