//! GPU tensors over GPU memory: crossdev-core's resident checks (every op class × algorithm ×
//! packing × dtype × ReduceOp through the wire protocol, GPU tensors against host tensors bit for
//! bit; all-reduces with whole packs run in device memory; dispose semantics) with this crate's
//! `GpuStore` installed without NCCL, on 8 logical GPUs sharing the machine's GPU(s). Without a
//! GPU they print `skipped: no GPU` after checking that making a GPU tensor is a clean
//! `ERR_NO_CUDA` error.

#[path = "../../crossdev-core/tests/resident_matrix/mod.rs"]
mod resident_matrix;

use crossdev_core::resident::install;
use crossdev_core::DType;
use crossdev_cuda::executor::{Contexts, GpuExecutor};
use crossdev_cuda::resident::GpuStore;
use resident_matrix::{check_dispose, check_every_op, check_in_device_memory, serial, upload, usage};
use std::sync::Arc;

/// Installs a store of 8 logical GPUs (once); whether a GPU is there (printing the skip if not).
/// It uploads a tensor, which another test's counts would see: call it holding `serial()`.
fn gpu() -> bool {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // Without NCCL: on a machine with several GPUs some logical ones are distinct GPUs, where NCCL
    // would combine in its own order (crates/crossdev-cuda/tests/nccl_ops.rs checks NCCL's route).
    ONCE.call_once(|| install(Arc::new(GpuStore::with_executor(|| GpuExecutor::new(Some(8), Contexts::PerGpu)).without_nccl())));
    match upload("/gpu:7", DType::Float32, &[1], &[0; 4]) {
        Ok(handle) => {
            resident_matrix::release(handle);
            true
        }
        Err((code, message)) => {
            assert_eq!(code, "ERR_NO_CUDA", "{message}");
            // Straight to stderr, past the test harness's capture, so that the skip is visible.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped: no GPU ({message})\n").as_bytes());
            false
        }
    }
}

#[test]
fn every_op_on_gpu_tensors_matches_host_tensors_bit_for_bit() {
    let _one = serial();
    if !gpu() {
        return;
    }
    let compared = check_every_op();
    assert!(compared > 5000, "only {compared} results compared");
    assert_eq!(usage().buffers, 0);
}

#[test]
fn all_reduces_onto_their_own_devices_run_in_device_memory() {
    let _one = serial();
    if !gpu() {
        return;
    }
    check_in_device_memory(false);
    assert_eq!(usage().buffers, 0);
}

#[test]
fn dispose_semantics() {
    let _one = serial();
    if !gpu() {
        return;
    }
    check_dispose();
    assert_eq!(upload("/gpu:8", DType::Float32, &[1], &[0; 4]).unwrap_err().0, "ERR_NO_CUDA", "a GPU beyond the 8 logical ones");
}
