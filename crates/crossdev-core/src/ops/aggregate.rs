//! Combining the values of several devices into one, and copying one value to several devices
//! (SPEC §1.16 and §5.3): the building blocks of every `CrossDeviceOps`.

use std::borrow::Cow;

use crate::error::{fail, ErrorCode, Result};
use crate::indexed_slices::{self, IndexedSlices};
use crate::kernels::copy::to_vec;
use crate::kernels::reduce_n::reduce_buffers;
use crate::map_buffer;
use crate::reduce_op::ReduceOp;
use crate::tensor::Tensor;
use crate::values::{Destinations, Mirrored, PerDevice, Value};

/// `aggregate_tensors_or_indexed_slices`, then MEAN's divide, into `copies` (≥ 1) identical
/// results: dense values are reduced with `combiner` in one pass that also divides by
/// `divide_by` and writes every copy; if any value is `IndexedSlices`, all are concatenated
/// (only summing makes sense for rows).
pub fn aggregate(combiner: ReduceOp, values: &[&Value], divide_by: Option<usize>, copies: usize) -> Result<Vec<Value<'static>>> {
    if values.iter().any(|v| matches!(v, Value::Many(_))) {
        return fail(ErrorCode::InvalidInput, "A list of values (MapOutput) cannot contain another list");
    }
    if values.iter().any(|v| v.contains_indexed_slices()) {
        if combiner != ReduceOp::Sum {
            return fail(
                ErrorCode::InvalidReduceOp,
                format!(
                    "IndexedSlices can only be reduced with SUM or MEAN, not {}",
                    combiner.name()
                ),
            );
        }
        let sum = if let [only] = values {
            only_slices(only)?.into_owned()
        } else {
            let parts = values.iter().map(|v| only_slices(v)).collect::<Result<Vec<_>>>()?;
            indexed_slices::concat(&parts)?
        };
        let out = Value::Sparse(match divide_by {
            Some(n) => indexed_slices::divide(&sum, n)?,
            None => sum,
        });
        let mut all: Vec<Value<'static>> = (1..copies).map(|_| copy_value(&out)).collect();
        all.insert(0, out);
        return Ok(all);
    }
    let tensors: Vec<&Tensor> = values
        .iter()
        .map(|v| match v {
            Value::Dense(t) => t,
            _ => unreachable!("lists and slices handled above"),
        })
        .collect();
    let first = tensors[0];
    for t in &tensors[1..] {
        if t.dtype() != first.dtype() {
            return fail(
                ErrorCode::DtypeMismatch,
                format!(
                    "Cannot reduce tensors of different dtypes: {} and {}",
                    first.dtype().name(),
                    t.dtype().name()
                ),
            );
        }
        if t.shape != first.shape {
            return fail(
                ErrorCode::ShapeMismatch,
                format!(
                    "Shapes of all inputs must match: {:?} != {:?}",
                    first.shape, t.shape
                ),
            );
        }
    }
    let bufs: Vec<_> = tensors.iter().map(|t| &t.data).collect();
    reduce_buffers(combiner, &bufs, divide_by, copies.max(1))
        .into_iter()
        .map(|data| Ok(Value::Dense(Tensor::new(first.shape.clone(), data)?)))
        .collect()
}

fn only_slices<'a>(v: &Value<'a>) -> Result<IndexedSlices<'a>> {
    match v {
        Value::Sparse(s) => Ok(s.clone()),
        Value::Dense(t) => IndexedSlices::from_dense(t.clone()),
        Value::Many(_) => unreachable!("rejected by aggregate"),
    }
}

/// `_simple_reduce`: each device's value (a list is first reduced on its device, and counts once
/// per element for MEAN), then all of them, on one device; the result in `copies` copies (the
/// broadcast that follows, fused into the same pass).
pub fn simple_reduce(op: ReduceOp, value: &PerDevice<Value>, copies: usize) -> Result<Vec<Value<'static>>> {
    let combiner = op.combiner();
    let mut all: Vec<Cow<Value>> = Vec::new();
    let mut count = 0;
    for (_, v) in value.iter() {
        match v {
            Value::Many(list) if list.is_empty() => continue,
            Value::Many(list) => {
                count += list.len();
                all.push(Cow::Owned(aggregate(combiner, &list.iter().collect::<Vec<_>>(), None, 1)?.remove(0)));
            }
            _ => {
                count += 1;
                all.push(Cow::Borrowed(v));
            }
        }
    }
    if all.is_empty() {
        return fail(ErrorCode::EmptyValue, "`per_device_value` must be non-empty");
    }
    let all: Vec<&Value> = all.iter().map(|v| v.as_ref()).collect();
    aggregate(combiner, &all, (op == ReduceOp::Mean).then_some(count), copies)
}

/// A copy of `value` in new memory (`copy_tensor_or_indexed_slices_to_device`).
pub fn copy_value(value: &Value) -> Value<'static> {
    let copy_tensor = |t: &Tensor| Tensor { shape: t.shape.clone(), data: map_buffer!(&t.data, v => to_vec(v)) };
    match value {
        Value::Dense(t) => Value::Dense(copy_tensor(t)),
        Value::Sparse(s) => Value::Sparse(IndexedSlices {
            values: copy_tensor(&s.values),
            indices: copy_tensor(&s.indices),
            dense_shape: s.dense_shape.clone(),
        }),
        Value::Many(vs) => Value::Many(vs.iter().map(copy_value).collect()),
    }
}

/// Distinct devices in first-seen order.
pub fn distinct(devices: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::with_capacity(devices.len());
    for d in devices {
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    seen
}

/// `_simple_broadcast`: a copy of `value` on every destination device.
pub fn simple_broadcast(value: &Value, destinations: &Destinations) -> Result<Mirrored<Value<'static>>> {
    let devices = distinct(destinations.devices()?);
    Mirrored::new(devices.into_iter().map(|d| (d, copy_value(value))))
}

/// `_devices_match`: whether `value` lives on exactly the devices `destinations` names (as sets).
pub fn devices_match<V>(value: &PerDevice<V>, destinations: &Destinations) -> Result<bool> {
    let mut a = value.devices();
    let mut b = destinations.devices()?;
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    Ok(a == b)
}
