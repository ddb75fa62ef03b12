//! Every dtype through `ReductionToOneDevice` with every reduce op (SPEC Part A.4): vectors,
//! scalars (shape `[]`) and zero-size tensors.

mod common;

use common::*;
use crossdev_core::{
    Accumulation, Buffer, CrossDeviceOps, DType, Destinations, ErrorCode, Input, PerDevice, ReduceOp,
    ReductionToOneDevice, Tensor, Value,
};
use half::{bf16, f16};
use std::borrow::Cow;

/// A buffer of `dtype` holding `xs` (exactly representable in every dtype used here).
fn buf(dtype: DType, xs: &[f64]) -> Buffer<'static> {
    match dtype {
        DType::Float32 => Buffer::F32(Cow::Owned(xs.iter().map(|&x| x as f32).collect())),
        DType::Float64 => Buffer::F64(Cow::Owned(xs.to_vec())),
        DType::Float16 => Buffer::F16(Cow::Owned(xs.iter().map(|&x| f16::from_f64(x)).collect())),
        DType::BFloat16 => Buffer::BF16(Cow::Owned(xs.iter().map(|&x| bf16::from_f64(x)).collect())),
        DType::Int32 => Buffer::I32(Cow::Owned(xs.iter().map(|&x| x as i32).collect())),
        DType::Int64 => Buffer::I64(Cow::Owned(xs.iter().map(|&x| x as i64).collect())),
    }
}

/// MEAN of integer-valued sums over `n` contributions, as each dtype computes it: floats divide
/// in their accumulator (f32 for the half types) and round once; integers truncate toward zero.
fn mean_buf(dtype: DType, sums: &[f64], n: usize) -> Buffer<'static> {
    match dtype {
        DType::Float32 => Buffer::F32(Cow::Owned(sums.iter().map(|&s| s as f32 / n as f32).collect())),
        DType::Float64 => Buffer::F64(Cow::Owned(sums.iter().map(|&s| s / n as f64).collect())),
        DType::Float16 => {
            Buffer::F16(Cow::Owned(sums.iter().map(|&s| f16::from_f32(s as f32 / n as f32)).collect()))
        }
        DType::BFloat16 => {
            Buffer::BF16(Cow::Owned(sums.iter().map(|&s| bf16::from_f32(s as f32 / n as f32)).collect()))
        }
        DType::Int32 => Buffer::I32(Cow::Owned(sums.iter().map(|&s| s as i32 / n as i32).collect())),
        DType::Int64 => Buffer::I64(Cow::Owned(sums.iter().map(|&s| s as i64 / n as i64).collect())),
    }
}

fn tensor(dtype: DType, shape: &[usize], xs: &[f64]) -> Tensor<'static> {
    Tensor::new(shape.to_vec(), buf(dtype, xs)).unwrap()
}

const DEVICES: [&str; 3] = ["/cpu:0", "/cpu:1", "/cpu:2"];

fn pd(dtype: DType, shape: &[usize], inputs: &[&[f64]]) -> PerDevice<Value<'static>> {
    per_device(DEVICES.iter().zip(inputs).map(|(d, xs)| (*d, Value::Dense(tensor(dtype, shape, xs)))).collect())
}

fn all_ops() -> Vec<ReductionToOneDevice> {
    vec![
        ReductionToOneDevice::new(None, Accumulation::AddN).unwrap(),
        ReductionToOneDevice::new(Some("/device:CPU:0"), Accumulation::AddN).unwrap(),
        ReductionToOneDevice::new(None, Accumulation::AccumulateN).unwrap(),
    ]
}

/// Reduces `pd` with `op` to `[/cpu:1, /cpu:0]` and checks every copy against `want`.
fn check(ops: &ReductionToOneDevice, op: ReduceOp, pd: &PerDevice<Value<'static>>, want: &Tensor, what: &str) {
    let dest = Destinations::Devices(vec!["/cpu:1".into(), "/cpu:0".into()]);
    let m = ops.reduce(op, Input::PerDevice(pd.clone()), &dest).unwrap();
    assert_eq!(m.devices(), canon_all(&["/cpu:1", "/cpu:0"]), "{what}");
    for (d, v) in m.iter() {
        match v {
            Value::Dense(t) => {
                assert_eq!(t.dtype(), want.dtype(), "{what} {op:?} on {d}: dtype");
                assert_eq!(t.shape, want.shape, "{what} {op:?} on {d}: shape");
                assert_eq!(t.data, want.data, "{what} {op:?} on {d}: data");
            }
            other => panic!("{what} {op:?}: expected a dense result, got {other:?}"),
        }
    }
}

const A: [f64; 6] = [1.0, -2.0, 6.0, 0.0, 4.0, -4.0];
const B: [f64; 6] = [3.0, 5.0, -4.0, 7.0, 0.0, 0.0];
const C: [f64; 6] = [2.0, -3.0, 1.0, -1.0, 0.0, 0.0];
const SUM: [f64; 6] = [6.0, 0.0, 3.0, 6.0, 4.0, -4.0];
const MAX: [f64; 6] = [3.0, 5.0, 6.0, 7.0, 4.0, 0.0];
const MIN: [f64; 6] = [1.0, -3.0, -4.0, -1.0, 0.0, -4.0];
const PRODUCT: [f64; 6] = [6.0, 30.0, -24.0, 0.0, 0.0, 0.0];

#[test]
fn every_dtype_every_op_vectors() {
    for dtype in DType::ALL {
        let shape = [2, 3];
        let input = pd(dtype, &shape, &[&A, &B, &C]);
        for ops in all_ops() {
            let what = format!("{} with {:?}", dtype.name(), ops);
            check(&ops, ReduceOp::Sum, &input, &tensor(dtype, &shape, &SUM), &what);
            check(&ops, ReduceOp::Max, &input, &tensor(dtype, &shape, &MAX), &what);
            check(&ops, ReduceOp::Min, &input, &tensor(dtype, &shape, &MIN), &what);
            check(&ops, ReduceOp::Product, &input, &tensor(dtype, &shape, &PRODUCT), &what);
            let mean = Tensor::new(shape.to_vec(), mean_buf(dtype, &SUM, 3)).unwrap();
            check(&ops, ReduceOp::Mean, &input, &mean, &what);
        }
    }
}

#[test]
fn integer_mean_truncates_toward_zero() {
    // 4/3 -> 1 and -4/3 -> -1 (not -2).
    for dtype in [DType::Int32, DType::Int64] {
        let m = mean_buf(dtype, &SUM, 3);
        assert_eq!(m, buf(dtype, &[2.0, 0.0, 1.0, 2.0, 1.0, -1.0]));
    }
    // And the float results are not truncated.
    assert_eq!(mean_buf(DType::Float64, &[4.0], 3), Buffer::F64(Cow::Owned(vec![4.0 / 3.0])));
}

#[test]
fn every_dtype_every_op_scalars() {
    for dtype in DType::ALL {
        let input = pd(dtype, &[], &[&[2.0], &[3.0], &[-1.0]]);
        let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
        let what = format!("scalar {}", dtype.name());
        check(&ops, ReduceOp::Sum, &input, &tensor(dtype, &[], &[4.0]), &what);
        check(&ops, ReduceOp::Max, &input, &tensor(dtype, &[], &[3.0]), &what);
        check(&ops, ReduceOp::Min, &input, &tensor(dtype, &[], &[-1.0]), &what);
        check(&ops, ReduceOp::Product, &input, &tensor(dtype, &[], &[-6.0]), &what);
        check(&ops, ReduceOp::Mean, &input, &Tensor::new(vec![], mean_buf(dtype, &[4.0], 3)).unwrap(), &what);
    }
}

#[test]
fn every_dtype_every_op_zero_size() {
    for dtype in DType::ALL {
        for shape in [vec![0], vec![2, 0, 3]] {
            let input = pd(dtype, &shape, &[&[], &[], &[]]);
            let want = tensor(dtype, &shape, &[]);
            assert_eq!(want.num_elements(), 0);
            for ops in all_ops() {
                for op in ReduceOp::ALL {
                    check(&ops, op, &input, &want, &format!("zero-size {} {shape:?}", dtype.name()));
                }
            }
            // Broadcast of a zero-size tensor, too.
            let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
            let m = ops.broadcast(&Value::Dense(want.clone()), &Destinations::Device("/cpu:2".into())).unwrap();
            assert_eq!(m.devices(), canon_all(&["/cpu:2"]));
            assert_eq!(m.get("/cpu:2").unwrap(), &Value::Dense(want));
        }
    }
}

#[test]
fn every_dtype_broadcast() {
    for dtype in DType::ALL {
        let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
        let t = tensor(dtype, &[3], &[1.0, -2.0, 8.0]);
        let m = ops.broadcast(&Value::Dense(t.clone()), &Destinations::Devices(vec!["/cpu:3".into(), "/cpu:0".into()])).unwrap();
        assert_eq!(m.devices(), canon_all(&["/cpu:3", "/cpu:0"]));
        for (_, v) in m.iter() {
            assert_eq!(v, &Value::Dense(t.clone()), "{}", dtype.name());
        }
    }
}

#[test]
fn half_types_accumulate_in_f32() {
    // In f16, 2048 + 1 rounds back to 2048 (spacing 2), so summing left to right in f16 would
    // give 2048; accumulated in f32 the sum is 2050, which f16 represents exactly.
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let input = pd(DType::Float16, &[], &[&[2048.0], &[1.0], &[1.0]]);
    check(&ops, ReduceOp::Sum, &input, &tensor(DType::Float16, &[], &[2050.0]), "f16");
    // bfloat16: spacing 2 at 256.
    let input = pd(DType::BFloat16, &[], &[&[256.0], &[1.0], &[1.0]]);
    check(&ops, ReduceOp::Sum, &input, &tensor(DType::BFloat16, &[], &[258.0]), "bf16");
    check(&ops, ReduceOp::Mean, &input, &tensor(DType::BFloat16, &[], &[86.0]), "bf16 mean");
}

#[test]
fn integer_sums_and_products_wrap() {
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let dest = Destinations::Device("/cpu:0".into());
    let pd32 = per_device(vec![
        ("/cpu:0", Value::Dense(ti32(&[2], &[i32::MAX, i32::MIN]))),
        ("/cpu:1", Value::Dense(ti32(&[2], &[1, -1]))),
    ]);
    let m = ops.reduce(ReduceOp::Sum, Input::PerDevice(pd32.clone()), &dest).unwrap();
    assert_eq!(m.get("/cpu:0").unwrap(), &Value::Dense(ti32(&[2], &[i32::MIN, i32::MAX])));
    let m = ops.reduce(ReduceOp::Max, Input::PerDevice(pd32), &dest).unwrap();
    assert_eq!(m.get("/cpu:0").unwrap(), &Value::Dense(ti32(&[2], &[i32::MAX, -1])));
    let pd64 = per_device(vec![
        ("/cpu:0", Value::Dense(ti64(&[1], &[i64::MAX]))),
        ("/cpu:1", Value::Dense(ti64(&[1], &[2]))),
    ]);
    let m = ops.reduce(ReduceOp::Product, Input::PerDevice(pd64), &dest).unwrap();
    assert_eq!(m.get("/cpu:0").unwrap(), &Value::Dense(ti64(&[1], &[-2])));
}

#[test]
fn float_max_and_min_propagate_nan() {
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let dest = Destinations::Device("/cpu:0".into());
    let input = per_device(vec![
        ("/cpu:0", dense32(&[2], &[f32::NAN, 1.0])),
        ("/cpu:1", dense32(&[2], &[0.0, f32::NAN])),
    ]);
    for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Product] {
        let m = ops.reduce(op, Input::PerDevice(input.clone()), &dest).unwrap();
        let (_, xs) = dense_f32(m.get("/cpu:0").unwrap());
        assert!(xs[0].is_nan() && xs[1].is_nan(), "{op:?}: {xs:?}");
    }
}

#[test]
fn large_tensors_take_the_parallel_path() {
    // More than 2 * 65536 elements, not a multiple of the block size.
    let n = 3 * 65536 + 17;
    let a: Vec<f64> = (0..n).map(|i| (i % 1000) as f64).collect();
    let b: Vec<f64> = (0..n).map(|i| -((i % 7) as f64)).collect();
    let input = per_device(vec![
        ("/cpu:0", Value::Dense(tensor(DType::Int64, &[n], &a))),
        ("/cpu:1", Value::Dense(tensor(DType::Int64, &[n], &b))),
    ]);
    let sums: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    check(&ops, ReduceOp::Sum, &input, &tensor(DType::Int64, &[n], &sums), "large");
    check(&ops, ReduceOp::Mean, &input, &Tensor::new(vec![n], mean_buf(DType::Int64, &sums, 2)).unwrap(), "large");
}

#[test]
fn tensor_construction_errors() {
    assert_eq!(
        err(Tensor::new(vec![2, 2], buf(DType::Float32, &[1.0, 2.0, 3.0]))),
        (ErrorCode::InvalidTensor, "A tensor of shape [2, 2] needs 4 elements, but its float32 data has 3".to_string())
    );
    assert_eq!(
        err(Tensor::new(vec![], buf(DType::Int64, &[]))),
        (ErrorCode::InvalidTensor, "A tensor of shape [] needs 1 elements, but its int64 data has 0".to_string())
    );
    // Element counts that overflow usize are errors (not wrapped to a small count).
    assert_eq!(
        err(Tensor::new(vec![1 << 32, 1 << 32], buf(DType::Float32, &[]))),
        (
            ErrorCode::InvalidTensor,
            "A tensor of shape [4294967296, 4294967296] has more elements than can be addressed".to_string()
        )
    );
    assert_eq!(
        err(Tensor::new(vec![usize::MAX, 2, 0, 3], buf(DType::Int32, &[1.0]))),
        (ErrorCode::InvalidTensor, format!("A tensor of shape [{}, 2, 0, 3] needs 0 elements, but its int32 data has 1", usize::MAX))
    );
    assert_eq!(
        err(Tensor::from_bytes(DType::Float64, vec![1], &[0u8; 7])),
        (ErrorCode::InvalidTensor, "7 bytes are not a whole number of float64 elements".to_string())
    );
    assert_eq!(
        err(DType::parse("float8")),
        (
            ErrorCode::InvalidTensor,
            "Unknown dtype 'float8'; expected one of float32, float64, float16, bfloat16, int32, int64".to_string()
        )
    );
    for d in DType::ALL {
        assert_eq!(DType::parse(d.name()).unwrap(), d);
        assert_eq!(buf(d, &[0.0, 1.0]).as_bytes().len(), 2 * d.size());
    }
}

#[test]
fn from_bytes_round_trips_every_dtype_aligned_or_not() {
    for dtype in DType::ALL {
        let t = tensor(dtype, &[2, 2], &[1.0, -2.0, 3.0, 100.0]);
        let bytes = t.data.as_bytes().to_vec();
        assert_eq!(Tensor::from_bytes(dtype, vec![2, 2], &bytes).unwrap(), t);
        // Misaligned: copied, same elements.
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        assert_eq!(Tensor::from_bytes(dtype, vec![2, 2], &shifted[1..]).unwrap(), t);
    }
}

#[test]
fn large_reductions_stream_their_outputs_with_the_same_results() {
    use crossdev_core::kernels::reduce_n::{reduce_n, reduce_n_into};
    // Outputs of 12 MB in all take the streaming path; misaligned starts test its head and tail.
    let len = (1 << 20) + 3;
    let inputs: Vec<Vec<f32>> = (0..3).map(|d| (0..len + 1).map(|i| ((i * 7 + d * 13) % 101) as f32 * 0.37 - 11.0).collect()).collect();
    let views: Vec<&[f32]> = inputs.iter().map(|x| &x[1..]).collect();
    for op in ReduceOp::ALL {
        let mut outs: Vec<Vec<f32>> = (0..3).map(|_| vec![0.0; len + 1]).collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[1..]).collect();
        reduce_n_into(op, &views, (op == ReduceOp::Mean).then_some(3), &mut slices);
        // The same reduction one small (cache-resident, plainly stored) piece at a time.
        let mut want = vec![0.0f32; len];
        for (k, w) in want.chunks_mut(1000).enumerate() {
            let pieces: Vec<&[f32]> = views.iter().map(|x| &x[k * 1000..k * 1000 + w.len()]).collect();
            reduce_n(op, &pieces, (op == ReduceOp::Mean).then_some(3), w);
        }
        for o in &outs {
            assert_eq!(o[0], 0.0, "{op:?}: the element before the output is untouched");
            assert!(o[1..].iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{op:?}");
        }
    }
}
