//! IndexedSlices: SPEC §1.16, §6.1 (testSimpleReduceWithIndexedSlices, testIndexedSlicesAllReduce)
//! and §6.2 (cross_tower_utils_test).

mod common;

use common::*;
use crossdev_core::indexed_slices::{self, IndexedSlices};
use crossdev_core::ops::aggregate::{aggregate, copy_value, simple_reduce};
use crossdev_core::{
    Accumulation, Buffer, CrossDeviceOps, Destinations, ErrorCode, Input, PerDevice, ReduceOp, ReductionToOneDevice,
    Value,
};
use std::borrow::Cow;

const DENSE_SUM: [f32; 10] = [0.0, 0.0, 4.0, 6.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0];
const DENSE_MEAN: [f32; 10] = [0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 2.5, 3.0, 0.0, 0.0];

fn t0() -> IndexedSlices<'static> {
    is32(&[1.0, 2.0], 2, &[1], &[5, 2])
}

fn t1() -> IndexedSlices<'static> {
    is32(&[3.0, 4.0, 5.0, 6.0], 2, &[1, 3], &[5, 2])
}

fn pd_t0_t1() -> PerDevice<Value<'static>> {
    per_device(vec![("/cpu:0", Value::Sparse(t0())), ("/cpu:1", Value::Sparse(t1()))])
}

fn sparse<'a>(v: &'a Value<'a>) -> &'a IndexedSlices<'a> {
    match v {
        Value::Sparse(s) => s,
        other => panic!("expected IndexedSlices, got {other:?}"),
    }
}

fn ops_both() -> Vec<ReductionToOneDevice> {
    vec![
        ReductionToOneDevice::new(None, Accumulation::AddN).unwrap(),
        ReductionToOneDevice::new(Some("/cpu:0"), Accumulation::AccumulateN).unwrap(),
    ]
}

// ---- §6.1 ---------------------------------------------------------------------------------

#[test]
fn simple_reduce_with_indexed_slices() {
    let r = simple_reduce(ReduceOp::Sum, &pd_t0_t1(), 1).map(|mut v| v.remove(0)).unwrap();
    let s = sparse(&r);
    // Concatenated, duplicates kept.
    assert_eq!(s.values, t32(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    assert_eq!(s.indices, ti32(&[3], &[1, 1, 3]));
    assert_eq!(s.dense_shape, vec![5, 2]);
    assert_eq!(dense_f32(&Value::Dense(s.densify().unwrap())), (vec![5, 2], DENSE_SUM.to_vec()));
    // Equal (densified) to the deduplicated slices.
    let dedup = is32(&[4.0, 6.0, 5.0, 6.0], 2, &[1, 3], &[5, 2]);
    assert_eq!(s.densify().unwrap(), dedup.densify().unwrap());
}

#[test]
fn indexed_slices_all_reduce() {
    let devices = canon_all(&["/cpu:0", "/cpu:1"]);
    for ops in ops_both() {
        for (op, values, dense) in [
            (ReduceOp::Sum, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], DENSE_SUM),
            (ReduceOp::Mean, vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0], DENSE_MEAN),
        ] {
            let check = |m: &crossdev_core::Mirrored<Value>| {
                assert_eq!(m.devices(), devices, "{op:?}");
                for (d, v) in m.iter() {
                    let s = sparse(v);
                    assert_eq!(s.values, t32(&[3, 2], &values), "{op:?} on {d}");
                    assert_eq!(s.indices, ti32(&[3], &[1, 1, 3]), "{op:?} on {d}");
                    assert_eq!(s.dense_shape, vec![5, 2]);
                    assert_eq!(densified_f32(v), (vec![5, 2], dense.to_vec()), "{op:?} on {d}");
                }
            };
            let dest = Destinations::Devices(vec!["/cpu:0".into(), "/cpu:1".into()]);
            check(&ops.reduce(op, Input::PerDevice(pd_t0_t1()), &dest).unwrap());
            check(&ops.reduce(op, Input::PerDevice(pd_t0_t1()), &Destinations::Values(devices.clone())).unwrap());
            let batch = ops.batch_reduce(op, &[(pd_t0_t1(), dest)]).unwrap();
            assert_eq!(batch.len(), 1);
            check(&batch[0]);
        }
    }
}

#[test]
fn indexed_slices_only_sum_or_mean() {
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::Product] {
        assert_eq!(
            err(ops.reduce(op, Input::PerDevice(pd_t0_t1()), &Destinations::Device("/cpu:0".into()))),
            (
                ErrorCode::InvalidReduceOp,
                format!("IndexedSlices can only be reduced with SUM or MEAN, not {}", op.name())
            )
        );
    }
}

#[test]
fn map_output_of_indexed_slices_counts_each_element() {
    // cpu:0 has a list [t0, t0] (2 contributions), cpu:1 has t1 (1): MEAN divides by 3.
    let pd = per_device(vec![
        ("/cpu:0", Value::Many(vec![Value::Sparse(t0()), Value::Sparse(t0())])),
        ("/cpu:1", Value::Sparse(t1())),
    ]);
    let r = simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0)).unwrap();
    let s = sparse(&r);
    let raw = [1.0f32, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let want: Vec<f32> = raw.iter().map(|x| x / 3.0).collect();
    assert_eq!(s.values, t32(&[4, 2], &want));
    assert_eq!(s.indices, ti32(&[4], &[1, 1, 1, 3]));
    let r = simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(densified_f32(&r), (vec![5, 2], vec![0.0, 0.0, 5.0, 8.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0]));
}

#[test]
fn single_indexed_slices_is_returned_as_is() {
    let pd = per_device(vec![("/cpu:0", Value::Sparse(t1()))]);
    assert_eq!(simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0)).unwrap(), Value::Sparse(t1()));
    let mean = simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(mean, Value::Sparse(t1()), "MEAN over one contribution divides by 1");
}

#[test]
fn dense_and_sparse_mix_concatenates() {
    // A dense [5, 2] tensor becomes slices of all its rows (int32 indices 0..5).
    let dense = dense32(&[5, 2], &[1.0; 10]);
    let pd = per_device(vec![("/cpu:0", Value::Sparse(t0())), ("/cpu:1", dense)]);
    let r = simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0)).unwrap();
    let s = sparse(&r);
    assert_eq!(s.indices, ti32(&[6], &[1, 0, 1, 2, 3, 4]));
    assert_eq!(s.values.shape, vec![6, 2]);
    assert_eq!(densified_f32(&r), (vec![5, 2], vec![1.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]));
}

#[test]
fn mixed_int32_int64_indices_become_int64() {
    let a = is32(&[1.0, 2.0], 2, &[1], &[5, 2]);
    let b = is32_i64(&[3.0, 4.0, 5.0, 6.0], 2, &[1, 3], &[5, 2]);
    let pd = per_device(vec![("/cpu:0", Value::Sparse(a.clone())), ("/cpu:1", Value::Sparse(b.clone()))]);
    let r = simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(sparse(&r).indices, ti64(&[3], &[1, 1, 3]));
    assert_eq!(densified_f32(&r), (vec![5, 2], DENSE_SUM.to_vec()));

    let c = indexed_slices::concat(&[b.clone(), a.clone()]).unwrap();
    assert_eq!(c.indices, ti64(&[3], &[1, 3, 1]));
    assert_eq!(c.values, t32(&[3, 2], &[3.0, 4.0, 5.0, 6.0, 1.0, 2.0]));
    // All int64 stays int64, all int32 stays int32.
    assert_eq!(indexed_slices::concat(&[b.clone(), b]).unwrap().indices.dtype(), crossdev_core::DType::Int64);
    assert_eq!(indexed_slices::concat(&[a.clone(), a]).unwrap().indices.dtype(), crossdev_core::DType::Int32);

    // A dense tensor (int32 row indices) with int64 slices.
    let pd = per_device(vec![
        ("/cpu:0", dense32(&[5, 2], &[1.0; 10])),
        ("/cpu:1", Value::Sparse(is32_i64(&[7.0, 8.0], 2, &[4], &[5, 2]))),
    ]);
    let r = simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(sparse(&r).indices, ti64(&[6], &[0, 1, 2, 3, 4, 4]));
    assert_eq!(densified_f32(&r), (vec![5, 2], vec![0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 4.0, 4.5]));
}

#[test]
fn indexed_slices_mismatch_errors() {
    let a = is32(&[1.0, 2.0], 2, &[1], &[5, 2]);
    let b64 = IndexedSlices::new(Value::Dense(t64(&[1, 2], &[1.0, 2.0])).dense(), ti32(&[1], &[0]), vec![5, 2]).unwrap();
    assert_eq!(
        err(indexed_slices::concat(&[a.clone(), b64.clone()])),
        (ErrorCode::DtypeMismatch, "Cannot aggregate IndexedSlices of float32 with float64".to_string())
    );
    let pd = per_device(vec![("/cpu:0", Value::Sparse(a.clone())), ("/cpu:1", Value::Sparse(b64))]);
    assert_eq!(
        err(simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0))),
        (ErrorCode::DtypeMismatch, "Cannot aggregate IndexedSlices of float32 with float64".to_string())
    );
    let wide = is32(&[1.0, 2.0, 3.0], 3, &[0], &[5, 3]);
    assert_eq!(
        err(indexed_slices::concat(&[a.clone(), wide.clone()])),
        (ErrorCode::ShapeMismatch, "Cannot aggregate IndexedSlices with rows of shape [2] and [3]".to_string())
    );
    let pd = per_device(vec![("/cpu:0", Value::Sparse(a)), ("/cpu:1", Value::Sparse(wide))]);
    assert_eq!(
        err(simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0))),
        (ErrorCode::ShapeMismatch, "Cannot aggregate IndexedSlices with rows of shape [2] and [3]".to_string())
    );
    // A scalar cannot become slices.
    let pd = per_device(vec![("/cpu:0", Value::Sparse(t0())), ("/cpu:1", scalar32(1.0))]);
    assert_eq!(
        err(simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0))),
        (ErrorCode::ShapeMismatch, "A scalar cannot be aggregated with IndexedSlices".to_string())
    );
}

trait DenseOf {
    fn dense(self) -> crossdev_core::Tensor<'static>;
}
impl DenseOf for Value<'static> {
    fn dense(self) -> crossdev_core::Tensor<'static> {
        match self {
            Value::Dense(t) => t,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn indexed_slices_new_validates() {
    assert_eq!(
        err(IndexedSlices::new(t32(&[1, 2], &[1.0, 2.0]), t32(&[1], &[0.0]), vec![5, 2])),
        (
            ErrorCode::InvalidTensor,
            "IndexedSlices indices must be a 1-D int32 or int64 tensor, got float32 of shape [1]".to_string()
        )
    );
    assert_eq!(
        err(IndexedSlices::new(t32(&[1, 2], &[1.0, 2.0]), ti32(&[1, 1], &[0]), vec![5, 2])),
        (
            ErrorCode::InvalidTensor,
            "IndexedSlices indices must be a 1-D int32 or int64 tensor, got int32 of shape [1, 1]".to_string()
        )
    );
    assert_eq!(
        err(IndexedSlices::new(t32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]), ti32(&[3], &[0, 1, 2]), vec![5, 2])),
        (
            ErrorCode::ShapeMismatch,
            "IndexedSlices values of shape [2, 2] do not fit 3 indices of a dense shape [5, 2]".to_string()
        )
    );
    assert_eq!(
        err(IndexedSlices::new(t32(&[1, 2], &[1.0, 2.0]), ti32(&[1], &[0]), vec![5, 3])),
        (
            ErrorCode::ShapeMismatch,
            "IndexedSlices values of shape [1, 2] do not fit 1 indices of a dense shape [5, 3]".to_string()
        )
    );
    assert_eq!(
        err(IndexedSlices::new(t32(&[], &[1.0]), ti32(&[1], &[0]), vec![5])),
        (
            ErrorCode::ShapeMismatch,
            "IndexedSlices values of shape [] do not fit 1 indices of a dense shape [5]".to_string()
        )
    );
    assert_eq!(
        err(IndexedSlices::new(t32(&[1], &[1.0]), ti32(&[1], &[0]), vec![])),
        (
            ErrorCode::ShapeMismatch,
            "IndexedSlices values of shape [1] do not fit 1 indices of a dense shape []".to_string()
        )
    );
}

#[test]
fn densify_checks_indices() {
    let s = is32(&[1.0, 2.0], 2, &[5], &[5, 2]);
    assert_eq!(
        err(s.densify()),
        (ErrorCode::InvalidTensor, "IndexedSlices index 5 is outside [0, 5)".to_string())
    );
    let s = is32_i64(&[1.0, 2.0], 2, &[-1], &[5, 2]);
    assert_eq!(
        err(s.densify()),
        (ErrorCode::InvalidTensor, "IndexedSlices index -1 is outside [0, 5)".to_string())
    );
    // 1-D dense shape: rows are scalars.
    let s = IndexedSlices::new(t32(&[3], &[1.0, 2.0, 3.0]), ti32(&[3], &[2, 0, 2]), vec![3]).unwrap();
    assert_eq!(s.densify().unwrap(), t32(&[3], &[2.0, 0.0, 4.0]));
}

// ---- §6.2 cross_tower_utils_test ------------------------------------------------------------

fn a() -> Value<'static> {
    dense32(&[3, 2], &[1.0, 2.0, 0.0, 0.0, 3.0, 4.0])
}

fn b() -> Value<'static> {
    dense32(&[3, 2], &[0.0, 0.0, 5.0, 6.0, 7.0, 8.0])
}

const A_PLUS_B: [f32; 6] = [1.0, 2.0, 5.0, 6.0, 10.0, 12.0];

fn as_slices(v: Value<'static>) -> Value<'static> {
    Value::Sparse(IndexedSlices::from_dense(v.dense()).unwrap())
}

#[test]
fn aggregate_tensors() {
    let r = aggregate(ReduceOp::Sum, &[&a(), &b()], None, 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(dense_f32(&r), (vec![3, 2], A_PLUS_B.to_vec()));
}

#[test]
fn aggregate_indexed_slices() {
    let r = aggregate(ReduceOp::Sum, &[&as_slices(a()), &as_slices(b())], None, 1).map(|mut v| v.remove(0)).unwrap();
    let s = sparse(&r);
    assert_eq!(s.indices, ti32(&[6], &[0, 1, 2, 0, 1, 2]));
    assert_eq!(s.dense_shape, vec![3, 2]);
    assert_eq!(densified_f32(&r), (vec![3, 2], A_PLUS_B.to_vec()));
}

#[test]
fn divide_tensor() {
    let r = aggregate(ReduceOp::Sum, &[&a()], Some(2), 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(dense_f32(&r), (vec![3, 2], vec![0.5, 1.0, 0.0, 0.0, 1.5, 2.0]));
}

#[test]
fn divide_indexed_slices() {
    let s = IndexedSlices::from_dense(a().dense()).unwrap();
    let d = indexed_slices::divide(&s, 2).unwrap();
    assert_eq!(d.indices, ti32(&[3], &[0, 1, 2]));
    assert_eq!(d.dense_shape, vec![3, 2]);
    assert_eq!(d.densify().unwrap(), t32(&[3, 2], &[0.5, 1.0, 0.0, 0.0, 1.5, 2.0]));
    // Through aggregate, too: the result stays IndexedSlices.
    let r = aggregate(ReduceOp::Sum, &[&Value::Sparse(s)], Some(2), 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(densified_f32(&r), (vec![3, 2], vec![0.5, 1.0, 0.0, 0.0, 1.5, 2.0]));
    assert!(matches!(r, Value::Sparse(_)));
}

#[test]
fn contains_indexed_slices() {
    let is = Value::Sparse(t0());
    assert!(is.contains_indexed_slices());
    assert!(Value::Many(vec![is.clone(), is.clone()]).contains_indexed_slices());
    assert!(Value::Many(vec![scalar32(1.0), is.clone()]).contains_indexed_slices());
    assert!(!Value::Many(vec![]).contains_indexed_slices());
    assert!(!scalar32(1.0).contains_indexed_slices());
    assert!(!Value::Many(vec![scalar32(1.0)]).contains_indexed_slices());
    // PerDevice of IS, and of MapOutput([IS]).
    let pd = per_device(vec![("/gpu:0", is.clone()), ("/cpu:0", is.clone())]);
    assert!(pd.iter().any(|(_, v)| v.contains_indexed_slices()));
    let pd = per_device(vec![("/gpu:0", Value::Many(vec![is.clone()])), ("/cpu:0", Value::Many(vec![is]))]);
    assert!(pd.iter().all(|(_, v)| v.contains_indexed_slices()));
}

#[test]
fn copy_tensor_and_indexed_slices() {
    let t = a();
    assert_eq!(copy_value(&t), t);
    let s = Value::Sparse(t1());
    let c = copy_value(&s);
    assert_eq!(c, s);
    assert!(matches!(c, Value::Sparse(_)));
    // Broadcast copies an IS to every device as an IS.
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let m = ops.broadcast(&s, &Destinations::Devices(vec!["/gpu:0".into(), "/cpu:0".into()])).unwrap();
    assert_eq!(m.devices(), canon_all(&["/gpu:0", "/cpu:0"]));
    for (_, v) in m.iter() {
        assert_eq!(v, &s);
    }
}

#[test]
fn densify_half_and_int_values() {
    let vals = crossdev_core::Tensor::new(
        vec![2, 1],
        Buffer::F16(Cow::Owned(vec![half::f16::from_f32(1.5), half::f16::from_f32(2.0)])),
    )
    .unwrap();
    let s = IndexedSlices::new(vals, ti64(&[2], &[1, 1]), vec![3, 1]).unwrap();
    let d = s.densify().unwrap();
    assert_eq!(d.shape, vec![3, 1]);
    assert_eq!(
        d.data,
        Buffer::F16(Cow::Owned(vec![half::f16::ZERO, half::f16::from_f32(3.5), half::f16::ZERO]))
    );
    let s = IndexedSlices::new(ti32(&[2, 2], &[1, 2, 3, 4]), ti32(&[2], &[0, 0]), vec![2, 2]).unwrap();
    assert_eq!(s.densify().unwrap(), ti32(&[2, 2], &[4, 6, 0, 0]));
}

#[test]
fn zero_row_slices() {
    let empty = IndexedSlices::new(t32(&[0, 2], &[]), ti32(&[0], &[]), vec![3, 2]).unwrap();
    assert_eq!(empty.densify().unwrap(), t32(&[3, 2], &[0.0; 6]));
    let pd = per_device(vec![("/cpu:0", Value::Sparse(empty.clone())), ("/cpu:1", Value::Sparse(empty))]);
    let r = simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0)).unwrap();
    assert_eq!(sparse(&r).values.shape, vec![0, 2]);
    assert_eq!(densified_f32(&r), (vec![3, 2], vec![0.0; 6]));
}

#[test]
fn dense_shapes_that_overflow_are_rejected() {
    let big = 1usize << 32;
    let empty_rows = || crossdev_core::Tensor::new(vec![0, big], Buffer::F32(Cow::Owned(vec![]))).unwrap();
    assert_eq!(
        err(IndexedSlices::new(empty_rows(), ti32(&[0], &[]), vec![big, big])),
        (
            ErrorCode::InvalidTensor,
            "IndexedSlices dense shape [4294967296, 4294967296] has more elements than can be addressed".to_string()
        )
    );
    // Zero rows, but a row itself too large.
    let empty = crossdev_core::Tensor::new(vec![0, big, big], Buffer::F32(Cow::Owned(vec![]))).unwrap();
    assert_eq!(
        err(IndexedSlices::new(empty, ti32(&[0], &[]), vec![0, big, big])),
        (
            ErrorCode::InvalidTensor,
            "IndexedSlices dense shape [0, 4294967296, 4294967296] has more elements than can be addressed".to_string()
        )
    );
    // Large but addressable is fine (and densifying zero rows of zero width allocates nothing).
    let ok = IndexedSlices::new(
        crossdev_core::Tensor::new(vec![0, 0], Buffer::F32(Cow::Owned(vec![]))).unwrap(),
        ti32(&[0], &[]),
        vec![big, 0],
    )
    .unwrap();
    assert_eq!(ok.densify().unwrap().shape, vec![big, 0]);
}
