//! crossdev-cuda: the GPU side of crossdev.
//!
//! CUDA's libraries are loaded at run time (cudarc's `dynamic-loading`), so this crate builds,
//! and its non-GPU tests run, on machines without CUDA; a missing library is reported as a
//! `CrossDeviceError` with code `ERR_NO_CUDA` ([`probe`]) instead of cudarc's panic. The kernels
//! are CUDA C ([`kernels`]), compiled by NVRTC for the GPU at hand. Plans run on the GPUs through
//! [`executor`], a CUDA stream per logical device (several may share one physical GPU).
//! [`resident`] holds the GPU tensors that JavaScript sees as handles.

pub mod executor;
pub mod kernels;
pub mod nccl;
pub mod nccl_group;
pub mod probe;
pub mod resident;
mod schedule;
