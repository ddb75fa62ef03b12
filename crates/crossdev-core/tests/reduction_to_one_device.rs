//! SPEC §6.1 `_testReductionAndBroadcast` for `ReductionToOneDevice` on host devices, §5.3/§5.5
//! (MapOutput counting, broadcast placement).

mod common;

use common::*;
use crossdev_core::ops::aggregate::simple_reduce;
use crossdev_core::{
    Accumulation, CrossDeviceOps, Destinations, ErrorCode, Input, PerDevice, ReduceOp, ReductionToOneDevice,
    Value,
};

const CPU_DEVICE: &str = "/device:CPU:0";

/// The three single-worker configurations of §6.1.
fn all_ops() -> Vec<(&'static str, ReductionToOneDevice)> {
    vec![
        ("ReductionToOneDevice()", ReductionToOneDevice::new(None, Accumulation::AddN).unwrap()),
        (
            "ReductionToOneDevice(reduce_to_device=/device:CPU:0)",
            ReductionToOneDevice::new(Some(CPU_DEVICE), Accumulation::AddN).unwrap(),
        ),
        (
            "ReductionToOneDevice(accumulation_fn=accumulate_n)",
            ReductionToOneDevice::new(None, Accumulation::AccumulateN).unwrap(),
        ),
    ]
}

/// Worker-device lists ("distributions") on the host.
fn distributions() -> Vec<Vec<&'static str>> {
    vec![
        vec![CPU_DEVICE],
        vec!["/cpu:0", "/cpu:1"],
        vec!["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"],
        // Unsorted, mixed spellings, a second job.
        vec!["/cpu:2", "/job:localhost/replica:0/task:0/device:CPU:0", "/job:worker/replica:0/task:1/device:CPU:0"],
    ]
}

/// `_make_per_device(values, devices)`.
fn make_per_device(values: &[f32], devices: &[&str]) -> PerDevice<Value<'static>> {
    per_device(devices.iter().zip(values).map(|(d, &v)| (*d, scalar32(v))).collect())
}

/// The destinations of §6.1 with the devices each one names.
fn destinations(devices: &[&str]) -> Vec<(Destinations, Vec<String>)> {
    let canonical = canon_all(devices);
    vec![
        // `_fake_mirrored(value, devices)`
        (Destinations::Values(canonical.clone()), canonical.clone()),
        // `_fake_mirrored(value, _cpu_device)`
        (Destinations::Values(vec![canon(CPU_DEVICE)]), vec![canon(CPU_DEVICE)]),
        // The device string.
        (Destinations::Device(CPU_DEVICE.into()), vec![canon(CPU_DEVICE)]),
        // The list of devices.
        (Destinations::Devices(devices.iter().map(|d| d.to_string()).collect()), canonical),
    ]
}

fn assert_scalar_mirrored(m: &crossdev_core::Mirrored<Value>, devices: &[String], want: f32, what: &str) {
    assert_eq!(&m.devices(), devices, "{what}: devices");
    for (d, v) in m.iter() {
        assert_eq!(dense_f32(v), (vec![], vec![want]), "{what}: value on {d}");
    }
}

#[test]
fn reduction_and_broadcast() {
    for (name, ops) in all_ops() {
        for devices in distributions() {
            let n = devices.len();
            let values: Vec<f32> = (0..n).map(|d| d as f32).collect();
            let values_2: Vec<f32> = (0..n).map(|d| d as f32 + 1.0).collect();
            let mean = (n as f32 - 1.0) / 2.0;
            let mean_2 = mean + 1.0;
            let pd = make_per_device(&values, &devices);
            let pd2 = make_per_device(&values_2, &devices);
            assert_eq!(pd.devices(), canon_all(&devices));
            let dests = destinations(&devices);

            for (dest, want_devices) in &dests {
                let what = |s: &str| format!("{name} on {devices:?}: {s} to {dest:?}");
                let reduce = |op, v: &PerDevice<Value<'static>>| {
                    ops.reduce(op, Input::PerDevice(v.clone()), dest).unwrap()
                };
                assert_scalar_mirrored(&reduce(ReduceOp::Mean, &pd), want_devices, mean, &what("MEAN pd"));
                assert_scalar_mirrored(&reduce(ReduceOp::Mean, &pd2), want_devices, mean_2, &what("MEAN pd2"));
                assert_scalar_mirrored(&reduce(ReduceOp::Sum, &pd), want_devices, mean * n as f32, &what("SUM pd"));
                assert_scalar_mirrored(
                    &reduce(ReduceOp::Sum, &pd2),
                    want_devices,
                    mean_2 * n as f32,
                    &what("SUM pd2"),
                );
                let b = ops.broadcast(&scalar32(1.0), dest).unwrap();
                assert_scalar_mirrored(&b, want_devices, 1.0, &what("broadcast"));
            }

            // batch_reduce over every ordered pair of destinations, mismatched ones included.
            for (d1, want1) in &dests {
                for (d2, want2) in &dests {
                    let pairs = vec![(pd.clone(), d1.clone()), (pd2.clone(), d2.clone())];
                    let what = format!("{name} on {devices:?}: batch_reduce to {d1:?}, {d2:?}");
                    let out = ops.batch_reduce(ReduceOp::Mean, &pairs).unwrap();
                    assert_eq!(out.len(), 2, "{what}");
                    assert_scalar_mirrored(&out[0], want1, mean, &what);
                    assert_scalar_mirrored(&out[1], want2, mean_2, &what);
                    let out = ops.batch_reduce(ReduceOp::Sum, &pairs).unwrap();
                    assert_eq!(out.len(), 2, "{what}");
                    assert_scalar_mirrored(&out[0], want1, mean * n as f32, &what);
                    assert_scalar_mirrored(&out[1], want2, mean_2 * n as f32, &what);
                }
            }
        }
    }
}

#[test]
fn reduction_of_vectors_keeps_shape_and_device_order() {
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let pd = per_device(vec![
        ("/cpu:0", dense32(&[2, 2], &[1.0, 2.0, 3.0, 4.0])),
        ("/cpu:1", dense32(&[2, 2], &[10.0, 20.0, 30.0, 40.0])),
        ("/cpu:2", dense32(&[2, 2], &[100.0, 200.0, 300.0, 400.0])),
    ]);
    let dest = Destinations::Devices(vec!["/cpu:2".into(), "/gpu:0".into(), "/cpu:0".into()]);
    let m = ops.reduce(ReduceOp::Sum, Input::PerDevice(pd.clone()), &dest).unwrap();
    assert_mirrored_f32(&m, &canon_all(&["/cpu:2", "/gpu:0", "/cpu:0"]), &[2, 2], &[111.0, 222.0, 333.0, 444.0]);
    let m = ops.reduce(ReduceOp::Mean, Input::PerDevice(pd), &dest).unwrap();
    assert_mirrored_f32(&m, &canon_all(&["/cpu:2", "/gpu:0", "/cpu:0"]), &[2, 2], &[37.0, 74.0, 111.0, 148.0]);
}

#[test]
fn duplicate_destinations_collapse() {
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let pd = make_per_device(&[1.0, 2.0], &["/cpu:0", "/cpu:1"]);
    let dest = Destinations::Devices(vec!["/cpu:1".into(), "/cpu:0".into(), "/device:CPU:1".into(), "CPU:0".into()]);
    let m = ops.reduce(ReduceOp::Sum, Input::PerDevice(pd), &dest).unwrap();
    assert_mirrored_f32(&m, &canon_all(&["/cpu:1", "/cpu:0"]), &[], &[3.0]);
    let b = ops.broadcast(&dense32(&[2], &[1.0, 2.0]), &dest).unwrap();
    assert_mirrored_f32(&b, &canon_all(&["/cpu:1", "/cpu:0"]), &[2], &[1.0, 2.0]);
}

#[test]
fn results_own_their_memory_even_for_borrowed_inputs() {
    use crossdev_core::Buffer;
    use std::borrow::Cow;
    static DATA: [f32; 3] = [1.0, 2.0, 3.0];
    let borrowed = Value::Dense(crossdev_core::Tensor::new(vec![3], Buffer::F32(Cow::Borrowed(&DATA[..]))).unwrap());
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let dest = Destinations::Devices(vec!["/cpu:0".into(), "/cpu:1".into()]);
    let b = ops.broadcast(&borrowed, &dest).unwrap();
    let r = ops.reduce(ReduceOp::Sum, Input::Located(Some("/cpu:0".into()), borrowed), &dest).unwrap();
    for m in [b, r] {
        assert_eq!(m.devices(), canon_all(&["/cpu:0", "/cpu:1"]));
        for (d, v) in m.iter() {
            match v {
                Value::Dense(t) => {
                    assert!(matches!(&t.data, Buffer::F32(Cow::Owned(x)) if x == &DATA), "{d}: {t:?}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

// ---- MapOutput (Value::Many) counting -----------------------------------------------------

#[test]
fn map_output_counts_each_element_for_mean() {
    // cpu:0 contributes a list of 2 values, cpu:1 one value: MEAN = (1 + 2 + 6) / 3.
    let pd = per_device(vec![
        ("/cpu:0", Value::Many(vec![scalar32(1.0), scalar32(2.0)])),
        ("/cpu:1", scalar32(6.0)),
    ]);
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![], vec![3.0]));
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![], vec![9.0]));
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Max, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![], vec![6.0]));
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Min, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![], vec![1.0]));
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Product, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![], vec![12.0]));

    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let m = ops.reduce(ReduceOp::Mean, Input::PerDevice(pd), &Destinations::Devices(vec!["/cpu:0".into(), "/cpu:1".into()])).unwrap();
    assert_mirrored_f32(&m, &canon_all(&["/cpu:0", "/cpu:1"]), &[], &[3.0]);
}

#[test]
fn map_output_lists_on_every_device() {
    // 2 + 3 contributions: MEAN = (1+2+3+4+10) / 5 = 4.
    let pd = per_device(vec![
        ("/cpu:0", Value::Many(vec![dense32(&[2], &[1.0, 0.0]), dense32(&[2], &[2.0, 5.0])])),
        ("/cpu:1", Value::Many(vec![dense32(&[2], &[3.0, 5.0]), dense32(&[2], &[4.0, 5.0]), dense32(&[2], &[10.0, 0.0])])),
    ]);
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![2], vec![4.0, 3.0]));
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![2], vec![20.0, 15.0]));
}

#[test]
fn empty_map_output_is_skipped_and_not_counted() {
    let pd = per_device(vec![
        ("/cpu:0", Value::Many(vec![])),
        ("/cpu:1", scalar32(4.0)),
        ("/cpu:2", Value::Many(vec![scalar32(2.0)])),
    ]);
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Mean, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![], vec![3.0]));
    assert_eq!(dense_f32(&simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![], vec![6.0]));
}

#[test]
fn single_value_reduces_to_itself() {
    let pd = per_device(vec![("/cpu:3", dense32(&[3], &[1.5, -2.0, 7.0]))]);
    for op in ReduceOp::ALL {
        assert_eq!(dense_f32(&simple_reduce(op, &pd, 1).map(|mut v| v.remove(0)).unwrap()), (vec![3], vec![1.5, -2.0, 7.0]), "{op:?}");
    }
}

#[test]
fn mismatched_inputs_are_errors() {
    let ops = ReductionToOneDevice::new(None, Accumulation::AddN).unwrap();
    let dest = Destinations::Device("/cpu:0".into());
    let pd = per_device(vec![("/cpu:0", dense32(&[2], &[1.0, 2.0])), ("/cpu:1", Value::Dense(t64(&[2], &[1.0, 2.0])))]);
    assert_eq!(
        err(ops.reduce(ReduceOp::Sum, Input::PerDevice(pd), &dest)),
        (ErrorCode::DtypeMismatch, "Cannot reduce tensors of different dtypes: float32 and float64".to_string())
    );
    let pd = per_device(vec![("/cpu:0", dense32(&[2], &[1.0, 2.0])), ("/cpu:1", dense32(&[3], &[1.0, 2.0, 3.0]))]);
    assert_eq!(
        err(ops.reduce(ReduceOp::Mean, Input::PerDevice(pd), &dest)),
        (ErrorCode::ShapeMismatch, "Shapes of all inputs must match: [2] != [3]".to_string())
    );
    // Same element count, different shape.
    let pd = per_device(vec![("/cpu:0", dense32(&[2, 1], &[1.0, 2.0])), ("/cpu:1", dense32(&[1, 2], &[1.0, 2.0]))]);
    assert_eq!(
        err(ops.reduce(ReduceOp::Max, Input::PerDevice(pd), &dest)),
        (ErrorCode::ShapeMismatch, "Shapes of all inputs must match: [2, 1] != [1, 2]".to_string())
    );
    // Inside a MapOutput.
    let pd = per_device(vec![("/cpu:0", Value::Many(vec![scalar32(1.0), Value::Dense(ti32(&[], &[1]))]))]);
    assert_eq!(
        err(ops.reduce(ReduceOp::Sum, Input::PerDevice(pd), &dest)),
        (ErrorCode::DtypeMismatch, "Cannot reduce tensors of different dtypes: float32 and int32".to_string())
    );
}
