//! Cross-device ops: the `CrossDeviceOps` contract and its implementations.

pub mod aggregate;
pub mod all_reduce;
pub mod collective;
pub mod multi_worker;
pub mod on_device;
pub mod processes;
pub mod reduction_to_one_device;

use crate::dtype::DType;
use crate::error::Result;
use crate::reduce_op::ReduceOp;
use crate::values::{Destinations, Input, Mirrored, PerDevice, Value};

pub use all_reduce::{AllReduce, AllReduceAlgorithm, Packing};
pub use collective::CollectiveAllReduce;
pub use multi_worker::MultiWorkerAllReduce;
pub use reduction_to_one_device::{Accumulation, ReductionToOneDevice};

/// Reduces per-device values and broadcasts values to devices (`CrossDeviceOps`, SPEC §5.4).
///
/// Implementors provide the `*_implementation` hooks; the provided methods normalise inputs and
/// validate destinations first, so every implementation sees well-formed arguments and every
/// caller gets the same errors.
pub trait CrossDeviceOps: Send + Sync {
    /// Reduces `value` and places the result on the devices of `destinations` (already validated).
    fn reduce_implementation(
        &self,
        op: ReduceOp,
        value: &PerDevice<Value>,
        destinations: &Destinations,
    ) -> Result<Mirrored<Value<'static>>>;

    /// Reduces several values; by default one [`Self::reduce_implementation`] each.
    fn batch_reduce_implementation(
        &self,
        op: ReduceOp,
        pairs: &[(PerDevice<Value>, Destinations)],
    ) -> Result<Vec<Mirrored<Value<'static>>>> {
        pairs.iter().map(|(v, d)| self.reduce_implementation(op, v, d)).collect()
    }

    /// How this op all-reduces dense tensors of `counts` elements of `dtypes` on `devices` in
    /// this process, so that GPU tensors are all-reduced where they are ([`on_device`]); `None`
    /// where GPU tensors stage through the host (by default; ops across processes; arguments the
    /// host path refuses, which it then reports).
    fn resident_shares<'a>(&'a self, _devices: &'a [String], _counts: &[usize], _dtypes: &[DType]) -> Result<Option<Vec<on_device::Share<'a>>>> {
        Ok(None)
    }

    /// Copies `value` to the devices of `destinations` (already validated).
    fn broadcast_implementation(
        &self,
        value: &Value,
        destinations: &Destinations,
    ) -> Result<Mirrored<Value<'static>>> {
        aggregate::simple_broadcast(value, destinations)
    }

    /// Reduces `input` (a per-device value, or one value with a device) with `op` and places
    /// the result on `destinations`.
    fn reduce(
        &self,
        op: ReduceOp,
        input: Input,
        destinations: &Destinations,
    ) -> Result<Mirrored<Value<'static>>> {
        let value = input.into_per_device()?;
        destinations.validate()?;
        self.reduce_implementation(op, &value, destinations)
    }

    /// Reduces each `(value, destinations)` pair (normalised by [`crate::values::normalize_pairs`]).
    fn batch_reduce(
        &self,
        op: ReduceOp,
        pairs: &[(PerDevice<Value>, Destinations)],
    ) -> Result<Vec<Mirrored<Value<'static>>>> {
        for (_, d) in pairs {
            d.validate()?;
        }
        self.batch_reduce_implementation(op, pairs)
    }

    /// Copies `value` to every device of `destinations`.
    fn broadcast(&self, value: &Value, destinations: &Destinations) -> Result<Mirrored<Value<'static>>> {
        destinations.validate()?;
        if matches!(value, Value::Many(_)) {
            return Err(crate::error::CrossDeviceError::new(
                crate::error::ErrorCode::InvalidInput,
                "Cannot broadcast a list of values (MapOutput): broadcast a tensor or IndexedSlices",
            ));
        }
        self.broadcast_implementation(value, destinations)
    }
}
