//! Which CUDA libraries this process can load, checked before any CUDA call: cudarc panics on
//! a missing library, and a panic must never reach Node.

use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};

/// The CUDA libraries found by the dynamic loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Libraries {
    /// The driver (`libcuda.so.1`), present wherever an NVIDIA driver is installed.
    pub driver: bool,
    /// NVRTC (`libnvrtc.so.13`), e.g. from the `nvidia-cuda-nvrtc` wheel.
    pub nvrtc: bool,
    /// NCCL (`libnccl.so`; pip's `libnccl.so.2` needs a `libnccl.so` link on the search path).
    pub nccl: bool,
}

/// Probes the loader for each library (loading it if present; never panics).
pub fn libraries() -> Libraries {
    // SAFETY: these only try to open the libraries and report whether that worked.
    unsafe {
        Libraries {
            driver: cudarc::driver::sys::is_culib_present(),
            nvrtc: cudarc::nvrtc::sys::is_culib_present(),
            nccl: cudarc::nccl::sys::is_culib_present(),
        }
    }
}

fn missing(what: &str, how: &str) -> CrossDeviceError {
    CrossDeviceError::new(ErrorCode::NoCuda, format!("{what} was not found by the dynamic loader; {how}"))
}

/// `Ok` when NVRTC can be loaded.
pub fn require_nvrtc() -> Result<()> {
    if libraries().nvrtc {
        return Ok(());
    }
    Err(missing(
        "NVRTC (libnvrtc.so.13)",
        "install the nvidia-cuda-nvrtc wheel (scripts/setup.sh puts it in .tools/python) and start the process with its nvidia/cu13/lib folder on LD_LIBRARY_PATH",
    ))
}

/// The number of GPUs, or `ERR_NO_CUDA` when there is no driver or no GPU.
pub fn gpu_count() -> Result<usize> {
    if !libraries().driver {
        return Err(missing("The CUDA driver (libcuda.so.1)", "this machine has no NVIDIA driver, so no GPU can be used"));
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| CrossDeviceError::new(ErrorCode::Cuda, format!("cuDeviceGetCount failed: {e:?}")))?;
    match usize::try_from(count) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(missing("A GPU", "the CUDA driver is installed but reports no device")),
    }
}
