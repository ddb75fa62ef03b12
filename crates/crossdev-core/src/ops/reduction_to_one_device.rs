//! `ReductionToOneDevice` (SPEC §5.5): reduce everything on one device, then copy the result out.
//! The universal fallback: it works for any devices, dense or sparse values, and any destinations.

use super::aggregate::{distinct, simple_reduce};
use super::CrossDeviceOps;
use crate::device::resolve;
use crate::error::{fail, ErrorCode, Result};
use crate::reduce_op::ReduceOp;
use crate::values::{Destinations, Mirrored, PerDevice, Value};

/// The accumulation function TensorFlow let callers pick. Both sum in one pass here (there is no
/// graph whose memory `accumulate_n` would save); the choice is kept so ported code keeps working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accumulation {
    /// `tf.add_n`.
    AddN,
    /// `tf.math.accumulate_n`.
    AccumulateN,
}

impl Accumulation {
    /// Parses `"add_n"` or `"accumulate_n"`.
    pub fn parse(name: &str) -> Result<Accumulation> {
        match name {
            "add_n" => Ok(Accumulation::AddN),
            "accumulate_n" => Ok(Accumulation::AccumulateN),
            other => fail(
                ErrorCode::InvalidArgument,
                format!("accumulation must be 'add_n' or 'accumulate_n', got {other:?}"),
            ),
        }
    }
}

/// Reduces on `reduce_to_device` (default: the first destination), then broadcasts.
#[derive(Clone, Debug, PartialEq)]
pub struct ReductionToOneDevice {
    /// Where the reduction runs (canonical), if fixed.
    pub reduce_to_device: Option<String>,
    /// The accumulation function named by the caller.
    pub accumulation: Accumulation,
}

impl ReductionToOneDevice {
    /// Validates the device and the accumulation.
    pub fn new(reduce_to_device: Option<&str>, accumulation: Accumulation) -> Result<Self> {
        let reduce_to_device = reduce_to_device.map(|d| resolve(d, None)).transpose()?;
        Ok(ReductionToOneDevice { reduce_to_device, accumulation })
    }
}

impl CrossDeviceOps for ReductionToOneDevice {
    fn reduce_implementation(
        &self,
        op: ReduceOp,
        value: &PerDevice<Value>,
        destinations: &Destinations,
    ) -> Result<Mirrored<Value<'static>>> {
        let devices = distinct(destinations.devices()?);
        crate::log::note(|| {
            format!(
                "ReductionToOneDevice: {} of {} device values on {} ({:?}), then copied to {:?}",
                op.name(),
                value.len(),
                self.reduce_to_device.as_deref().or(devices.first().map(String::as_str)).unwrap_or("-"),
                self.accumulation,
                devices
            )
        });
        let results = simple_reduce(op, value, devices.len())?;
        Mirrored::new(devices.into_iter().zip(results))
    }
}
