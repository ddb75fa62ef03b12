//! crossdev-core: cross-device reduction and broadcast of gradients, in pure Rust.
//!
//! The concepts follow TensorFlow's `cross_tower_ops.py` (see the project's SPEC): device strings
//! and their canonical form ([`device`]), host [`tensor`]s and [`indexed_slices`], per-device
//! [`values`], [`reduce_op::ReduceOp`], the CPU [`kernels`], and the [`ops`] that reduce and
//! broadcast. [`wire`] is the protocol the Node.js and WebAssembly bindings speak.

pub mod algo;
pub mod device;
pub mod dtype;
pub mod error;
pub mod group;
pub mod indexed_slices;
pub mod kernels;
pub mod log;
pub mod memo;
pub mod ops;
pub mod pack;
pub mod plan;
pub mod pool;
pub mod reduce_op;
pub mod resident;
pub mod spec;
pub mod tensor;
pub mod topology;
pub mod values;
pub mod wire;

pub use device::{canonicalize, resolve, DeviceSpec};
pub use dtype::DType;
pub use error::{CrossDeviceError, ErrorCode, Result};
pub use indexed_slices::IndexedSlices;
pub use ops::{Accumulation, CrossDeviceOps, ReductionToOneDevice};
pub use reduce_op::ReduceOp;
pub use tensor::{Buffer, Tensor};
pub use values::{Destinations, Input, Mirrored, PerDevice, Value};
