//! Helpers shared by the integration tests (each test file includes this module).
#![allow(dead_code)]

use crossdev_core::indexed_slices::IndexedSlices;
use crossdev_core::values::{Mirrored, PerDevice};
use crossdev_core::{canonicalize, Buffer, CrossDeviceError, ErrorCode, Tensor, Value};
use std::borrow::Cow;

/// The canonical form of a device string (panics on a bad one: tests only pass good ones).
pub fn canon(d: &str) -> String {
    canonicalize(d, None).unwrap()
}

/// Canonical forms of several device strings, in order.
pub fn canon_all(ds: &[&str]) -> Vec<String> {
    ds.iter().map(|d| canon(d)).collect()
}

/// An owned float32 tensor.
pub fn t32(shape: &[usize], data: &[f32]) -> Tensor<'static> {
    Tensor::new(shape.to_vec(), Buffer::F32(Cow::Owned(data.to_vec()))).unwrap()
}

/// An owned float64 tensor.
pub fn t64(shape: &[usize], data: &[f64]) -> Tensor<'static> {
    Tensor::new(shape.to_vec(), Buffer::F64(Cow::Owned(data.to_vec()))).unwrap()
}

/// An owned int32 tensor.
pub fn ti32(shape: &[usize], data: &[i32]) -> Tensor<'static> {
    Tensor::new(shape.to_vec(), Buffer::I32(Cow::Owned(data.to_vec()))).unwrap()
}

/// An owned int64 tensor.
pub fn ti64(shape: &[usize], data: &[i64]) -> Tensor<'static> {
    Tensor::new(shape.to_vec(), Buffer::I64(Cow::Owned(data.to_vec()))).unwrap()
}

/// A dense float32 value.
pub fn dense32(shape: &[usize], data: &[f32]) -> Value<'static> {
    Value::Dense(t32(shape, data))
}

/// A float32 scalar value (shape `[]`).
pub fn scalar32(x: f32) -> Value<'static> {
    dense32(&[], &[x])
}

/// float32 IndexedSlices with int32 indices; `values` rows have `row_width` elements.
pub fn is32(values: &[f32], row_width: usize, indices: &[i32], dense_shape: &[usize]) -> IndexedSlices<'static> {
    let rows = values.len() / row_width;
    IndexedSlices::new(t32(&[rows, row_width], values), ti32(&[indices.len()], indices), dense_shape.to_vec())
        .unwrap()
}

/// float32 IndexedSlices with int64 indices.
pub fn is32_i64(values: &[f32], row_width: usize, indices: &[i64], dense_shape: &[usize]) -> IndexedSlices<'static> {
    let rows = values.len() / row_width;
    IndexedSlices::new(t32(&[rows, row_width], values), ti64(&[indices.len()], indices), dense_shape.to_vec())
        .unwrap()
}

/// A PerDevice value from `(device, value)` pairs.
pub fn per_device(pairs: Vec<(&str, Value<'static>)>) -> PerDevice<Value<'static>> {
    PerDevice::new(pairs.into_iter().map(|(d, v)| (d.to_string(), v))).unwrap()
}

/// Shape and float32 elements of a dense value (panics otherwise).
pub fn dense_f32(v: &Value) -> (Vec<usize>, Vec<f32>) {
    match v {
        Value::Dense(t) => match &t.data {
            Buffer::F32(d) => (t.shape.clone(), d.to_vec()),
            other => panic!("expected float32, got {:?}", other.dtype()),
        },
        other => panic!("expected a dense value, got {other:?}"),
    }
}

/// Shape and float32 elements of a dense value, or of densified IndexedSlices.
pub fn densified_f32(v: &Value) -> (Vec<usize>, Vec<f32>) {
    match v {
        Value::Sparse(s) => dense_f32(&Value::Dense(s.densify().unwrap())),
        other => dense_f32(other),
    }
}

/// Asserts that `m` holds, on exactly `devices` (in order), a float32 value equal to
/// (`shape`, `data`); sparse values are compared densified.
pub fn assert_mirrored_f32(m: &Mirrored<Value>, devices: &[String], shape: &[usize], data: &[f32]) {
    assert_eq!(&m.devices(), devices, "result devices");
    for (d, v) in m.iter() {
        assert_eq!(densified_f32(v), (shape.to_vec(), data.to_vec()), "value on {d}");
    }
}

/// The error of a result that must fail.
pub fn err<T: std::fmt::Debug>(r: Result<T, CrossDeviceError>) -> (ErrorCode, String) {
    let e = r.expect_err("expected an error");
    (e.code, e.message)
}
