//! Per-device values (SPEC §3): what each device holds, and how a caller names destinations.

use crate::device::{canonicalize, resolve};
use crate::error::{fail, ErrorCode, Result};
use crate::indexed_slices::IndexedSlices;
use crate::tensor::Tensor;

/// What one device contributes: a dense tensor, sparse rows, or a list of values (TensorFlow's
/// `MapOutput`, whose elements each count as one contribution for MEAN).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// A dense tensor.
    Dense(Tensor<'a>),
    /// Sparse rows of a dense tensor.
    Sparse(IndexedSlices<'a>),
    /// Zero or more values produced on one device.
    Many(Vec<Value<'a>>),
}

impl Value<'_> {
    /// Whether this value is or contains `IndexedSlices` (`contains_indexed_slices`).
    pub fn contains_indexed_slices(&self) -> bool {
        match self {
            Value::Dense(_) => false,
            Value::Sparse(_) => true,
            Value::Many(vs) => vs.iter().any(Value::contains_indexed_slices),
        }
    }
}

/// An insertion-ordered map from canonical device strings to values (`DistributedValues`).
/// A key that canonicalises to one already present replaces its value in place.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceMap<V> {
    entries: Vec<(String, V)>,
}

/// Unsynchronised values, one per device: the input of a reduction.
pub type PerDevice<V> = DeviceMap<V>;
/// Identical values, one per device: the output of a reduction or broadcast.
pub type Mirrored<V> = DeviceMap<V>;

impl<V> DeviceMap<V> {
    /// A map from `(device, value)` pairs; devices are canonicalised.
    pub fn new(pairs: impl IntoIterator<Item = (String, V)>) -> Result<Self> {
        let mut map = DeviceMap { entries: Vec::new() };
        for (device, value) in pairs {
            map.insert(canonicalize(&device, None)?, value);
        }
        Ok(map)
    }

    fn insert(&mut self, device: String, value: V) {
        match self.entries.iter_mut().find(|(d, _)| *d == device) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((device, value)),
        }
    }

    /// Devices in insertion order.
    pub fn devices(&self) -> Vec<String> {
        self.entries.iter().map(|(d, _)| d.clone()).collect()
    }

    /// `(device, value)` pairs in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(d, v)| (d, v))
    }

    /// The value on `device` (any spelling), or `ERR_DEVICE_NOT_FOUND`.
    pub fn get(&self, device: &str) -> Result<&V> {
        let key = canonicalize(device, None)?;
        match self.entries.iter().find(|(d, _)| *d == key) {
            Some((_, v)) => Ok(v),
            None => fail(
                ErrorCode::DeviceNotFound,
                format!("Device {key} not found in {:?} (current device None)", self.devices()),
            ),
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no device holds a value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `(device, value)` pairs.
    pub fn into_entries(self) -> Vec<(String, V)> {
        self.entries
    }
}

/// Where a result should live, as a caller may name it (SPEC §5.1). Requests carry it as it is
/// (`{"values": […]}`, `{"device": "…"}`, …).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Destinations {
    /// The devices of a `PerDevice` or `Mirrored` value (always non-empty as an argument, even
    /// when it has no device, like TensorFlow's objects without truthiness).
    Values(Vec<String>),
    /// A variable-like object with a `device` (empty: no device).
    Variable(String),
    /// One device string (resolved).
    Device(String),
    /// Several device strings (resolved; duplicates kept).
    Devices(Vec<String>),
    /// Anything else; holds the name of its type for the message.
    Invalid(String),
}

impl Destinations {
    /// `validate_destinations`: a kind that can name devices, and not empty.
    pub fn validate(&self) -> Result<()> {
        let non_empty = match self {
            Destinations::Invalid(_) => {
                return fail(
                    ErrorCode::InvalidDestinations,
                    "destinations must be one of a `DistributedValues` object, a tf.Variable \
                     object, a device string, a list of device strings",
                )
            }
            Destinations::Values(_) => true,
            Destinations::Variable(d) | Destinations::Device(d) => !d.is_empty(),
            Destinations::Devices(ds) => !ds.is_empty(),
        };
        if non_empty {
            Ok(())
        } else {
            fail(ErrorCode::EmptyDestinations, "destinations can not be empty")
        }
    }

    /// `get_devices_from`: the canonical devices named, in order, duplicates kept.
    pub fn devices(&self) -> Result<Vec<String>> {
        match self {
            Destinations::Values(ds) => Ok(ds.clone()),
            Destinations::Variable(d) => Ok(vec![canonicalize(d, None)?]),
            Destinations::Device(d) => Ok(vec![resolve(d, None)?]),
            Destinations::Devices(ds) => ds.iter().map(|d| resolve(d, None)).collect(),
            Destinations::Invalid(_) => self.validate().map(|_| Vec::new()),
        }
    }
}

/// A reduce input before normalisation (SPEC §5.2 `_make_tensor_into_per_device`).
#[derive(Clone, Debug, PartialEq)]
pub enum Input<'a> {
    /// Already per-device.
    PerDevice(PerDevice<Value<'a>>),
    /// One value and the device it is on (`None`: the object has no device).
    Located(Option<String>, Value<'a>),
    /// A list or tuple; holds its printed form for the message.
    Sequence(String),
    /// Anything else without a device; holds its printed form.
    Other(String),
}

impl<'a> Input<'a> {
    /// The per-device value this input stands for.
    pub fn into_per_device(self) -> Result<PerDevice<Value<'a>>> {
        match self {
            Input::PerDevice(pd) => Ok(pd),
            Input::Located(Some(device), v) => PerDevice::new([(device, v)]),
            Input::Sequence(repr) => fail(
                ErrorCode::InvalidInput,
                format!(
                    "Cannot convert `input_tensor` to a `PerDevice` object, got {repr} but \
                     expected a object that is not a tuple or list."
                ),
            ),
            Input::Located(None, _) | Input::Other(_) => fail(
                ErrorCode::InvalidInput,
                "Cannot convert `input_tensor` to a `PerDevice` object because it doesn't have \
                 device set.",
            ),
        }
    }
}

/// One element of `value_destination_pairs` as a caller passed it.
#[derive(Clone, Debug, PartialEq)]
pub enum RawPair<'a> {
    /// A tuple of size 2.
    Pair(Input<'a>, Destinations),
    /// A tuple of another size.
    Arity(usize),
    /// Not a tuple.
    NotTuple,
}

/// `_normalize_value_destination_pairs`: `None` stands for an argument that is not a list.
pub fn normalize_pairs(raw: Option<Vec<RawPair>>) -> Result<Vec<(PerDevice<Value>, Destinations)>> {
    let Some(raw) = raw else {
        return fail(ErrorCode::InvalidPairs, "`value_destination_pairs` should be a list or tuple");
    };
    raw.into_iter()
        .map(|p| match p {
            RawPair::Pair(input, d) => Ok((input.into_per_device()?, d)),
            RawPair::Arity(_) => fail(
                ErrorCode::InvalidPairs,
                "Each element of `value_destination_pairs` should be a tuple of size 2.",
            ),
            RawPair::NotTuple => fail(
                ErrorCode::InvalidPairs,
                "Each element of `value_destination_pairs` should be a tuple.",
            ),
        })
        .collect()
}
