//! SPEC §3 (per-device values), §5.1 (destinations), §5.2 (input normalisation), §5.3
//! (`_simple_reduce` errors), and the parsers of reduce ops and accumulation functions.

mod common;

use common::*;
use crossdev_core::ops::aggregate::simple_reduce;
use crossdev_core::values::{normalize_pairs, RawPair};
use crossdev_core::{
    Accumulation, CrossDeviceOps, Destinations, ErrorCode, Input, PerDevice, ReduceOp, ReductionToOneDevice,
    Value,
};

const DEST_KIND_MSG: &str = "destinations must be one of a `DistributedValues` object, a tf.Variable object, \
                             a device string, a list of device strings";
const EMPTY_DEST_MSG: &str = "destinations can not be empty";
const NO_DEVICE_MSG: &str =
    "Cannot convert `input_tensor` to a `PerDevice` object because it doesn't have device set.";
const EMPTY_VALUE_MSG: &str = "`per_device_value` must be non-empty";

fn ops() -> ReductionToOneDevice {
    ReductionToOneDevice::new(None, Accumulation::AddN).unwrap()
}

fn pd2() -> PerDevice<Value<'static>> {
    per_device(vec![("/cpu:0", scalar32(1.0)), ("/cpu:1", scalar32(2.0))])
}

// ---- §3 DistributedValues ---------------------------------------------------------------

#[test]
fn per_device_keys_are_canonical_and_insertion_ordered() {
    let pd = per_device(vec![("/cpu:1", scalar32(1.0)), ("/gpu:0", scalar32(2.0)), ("CPU:0", scalar32(3.0))]);
    assert_eq!(pd.devices(), canon_all(&["/cpu:1", "/gpu:0", "/cpu:0"]));
    assert_eq!(pd.len(), 3);
    assert!(!pd.is_empty());
    let values: Vec<f32> = pd.iter().map(|(_, v)| dense_f32(v).1[0]).collect();
    assert_eq!(values, vec![1.0, 2.0, 3.0]);
}

#[test]
fn per_device_duplicate_keys_collapse_last_wins_in_first_position() {
    let pd = per_device(vec![
        ("/cpu:0", scalar32(1.0)),
        ("/cpu:1", scalar32(2.0)),
        ("/job:localhost/replica:0/task:0/device:CPU:0", scalar32(3.0)),
    ]);
    assert_eq!(pd.devices(), canon_all(&["/cpu:0", "/cpu:1"]));
    assert_eq!(dense_f32(pd.get("/cpu:0").unwrap()).1, vec![3.0]);
}

#[test]
fn per_device_get_accepts_any_spelling_and_reports_missing_devices() {
    let pd = pd2();
    assert_eq!(dense_f32(pd.get("CPU:1").unwrap()).1, vec![2.0]);
    assert_eq!(dense_f32(pd.get("/device:CPU:1").unwrap()).1, vec![2.0]);
    assert_eq!(
        err(pd.get("/gpu:0")),
        (
            ErrorCode::DeviceNotFound,
            "Device /job:localhost/replica:0/task:0/device:GPU:0 not found in \
             [\"/job:localhost/replica:0/task:0/device:CPU:0\", \"/job:localhost/replica:0/task:0/device:CPU:1\"] \
             (current device None)"
                .to_string()
        )
    );
    assert_eq!(
        err(pd.get("/device:gpu:0")),
        (ErrorCode::InvalidDevice, "Device type 'gpu' must be all-caps.".to_string())
    );
}

#[test]
fn per_device_new_rejects_bad_devices() {
    let r = PerDevice::new(vec![("/cpu:0/gpu:0".to_string(), scalar32(1.0))]);
    assert_eq!(
        err(r),
        (ErrorCode::InvalidDevice, "Cannot specify multiple device types: /cpu:0/gpu:0".to_string())
    );
}

// ---- §5.1 destinations ------------------------------------------------------------------

#[test]
fn validate_destinations_kind() {
    assert_eq!(
        err(Destinations::Invalid("tuple".into()).validate()),
        (ErrorCode::InvalidDestinations, DEST_KIND_MSG.to_string())
    );
    // `None` is rejected by type, too.
    assert_eq!(
        err(Destinations::Invalid("NoneType".into()).devices()),
        (ErrorCode::InvalidDestinations, DEST_KIND_MSG.to_string())
    );
}

#[test]
fn validate_destinations_empty() {
    for d in [
        Destinations::Device(String::new()),
        Destinations::Devices(vec![]),
        Destinations::Variable(String::new()),
    ] {
        assert_eq!(err(d.validate()), (ErrorCode::EmptyDestinations, EMPTY_DEST_MSG.to_string()), "{d:?}");
    }
    // DistributedValues have no truthiness: always accepted.
    assert!(Destinations::Values(vec![]).validate().is_ok());
    // A list holding an empty string is a non-empty list.
    assert!(Destinations::Devices(vec![String::new()]).validate().is_ok());
    assert!(Destinations::Variable("/cpu:0".into()).validate().is_ok());
    assert!(Destinations::Device("/cpu:0".into()).validate().is_ok());
}

#[test]
fn get_devices_from() {
    assert_eq!(Destinations::Device("/gpu:1".into()).devices().unwrap(), canon_all(&["/gpu:1"]));
    assert_eq!(
        Destinations::Devices(vec!["/cpu:1".into(), "GPU:0".into(), "/cpu:1".into(), String::new()])
            .devices()
            .unwrap(),
        canon_all(&["/cpu:1", "/gpu:0", "/cpu:1", "/cpu:0"])
    );
    assert_eq!(Destinations::Variable("/gpu:0".into()).devices().unwrap(), canon_all(&["/gpu:0"]));
    let devs = canon_all(&["/cpu:1", "/cpu:0"]);
    assert_eq!(Destinations::Values(devs.clone()).devices().unwrap(), devs);
    assert_eq!(
        err(Destinations::Device("/device:gpu:0".into()).devices()),
        (ErrorCode::InvalidDevice, "Device type 'gpu' must be all-caps.".to_string())
    );
}

#[test]
fn reduce_broadcast_and_batch_reduce_validate_destinations() {
    let ops = ops();
    let bad = [
        (Destinations::Invalid("tuple".into()), ErrorCode::InvalidDestinations, DEST_KIND_MSG),
        (Destinations::Device(String::new()), ErrorCode::EmptyDestinations, EMPTY_DEST_MSG),
        (Destinations::Devices(vec![]), ErrorCode::EmptyDestinations, EMPTY_DEST_MSG),
        (Destinations::Variable(String::new()), ErrorCode::EmptyDestinations, EMPTY_DEST_MSG),
    ];
    for (d, code, msg) in bad {
        let want = (code, msg.to_string());
        assert_eq!(err(ops.reduce(ReduceOp::Sum, Input::PerDevice(pd2()), &d)), want, "reduce {d:?}");
        assert_eq!(err(ops.broadcast(&scalar32(1.0), &d)), want, "broadcast {d:?}");
        let pairs = vec![(pd2(), Destinations::Device("/cpu:0".into())), (pd2(), d.clone())];
        assert_eq!(err(ops.batch_reduce(ReduceOp::Mean, &pairs)), want, "batch_reduce {d:?}");
    }
}

#[test]
fn batch_reduce_validates_every_destination_before_reducing() {
    // The first pair would fail to reduce (no values); the destination error of the second
    // pair is reported first, as in TensorFlow.
    let empty = per_device(vec![("/cpu:0", Value::Many(vec![]))]);
    let pairs = vec![
        (empty, Destinations::Device("/cpu:0".into())),
        (pd2(), Destinations::Invalid("tuple".into())),
    ];
    assert_eq!(
        err(ops().batch_reduce(ReduceOp::Sum, &pairs)),
        (ErrorCode::InvalidDestinations, DEST_KIND_MSG.to_string())
    );
}

#[test]
fn variable_destination_reduces_to_its_device() {
    let m = ops().reduce(ReduceOp::Sum, Input::PerDevice(pd2()), &Destinations::Variable("/cpu:1".into())).unwrap();
    assert_mirrored_f32(&m, &canon_all(&["/cpu:1"]), &[], &[3.0]);
}

// ---- §5.2 input normalisation -----------------------------------------------------------

#[test]
fn sequence_input_is_rejected() {
    let want = (
        ErrorCode::InvalidInput,
        "Cannot convert `input_tensor` to a `PerDevice` object, got [<tf.Tensor 'a'>, <tf.Tensor 'b'>] \
         but expected a object that is not a tuple or list."
            .to_string(),
    );
    let input = Input::Sequence("[<tf.Tensor 'a'>, <tf.Tensor 'b'>]".into());
    assert_eq!(err(input.clone().into_per_device()), want);
    assert_eq!(err(ops().reduce(ReduceOp::Sum, input, &Destinations::Device("/cpu:0".into()))), want);
}

#[test]
fn input_without_device_is_rejected() {
    let want = (ErrorCode::InvalidInput, NO_DEVICE_MSG.to_string());
    assert_eq!(err(Input::Other("1.0".into()).into_per_device()), want);
    assert_eq!(err(Input::Located(None, scalar32(1.0)).into_per_device()), want);
    let dest = Destinations::Device("/cpu:0".into());
    assert_eq!(err(ops().reduce(ReduceOp::Mean, Input::Other("1.0".into()), &dest)), want);
    assert_eq!(err(ops().reduce(ReduceOp::Mean, Input::Located(None, scalar32(1.0)), &dest)), want);
}

#[test]
fn input_is_normalised_before_destinations_are_validated() {
    assert_eq!(
        err(ops().reduce(ReduceOp::Sum, Input::Other("x".into()), &Destinations::Invalid("tuple".into()))),
        (ErrorCode::InvalidInput, NO_DEVICE_MSG.to_string())
    );
}

#[test]
fn located_input_becomes_a_one_device_per_device() {
    let pd = Input::Located(Some("/gpu:1".into()), scalar32(5.0)).into_per_device().unwrap();
    assert_eq!(pd.devices(), canon_all(&["/gpu:1"]));
    // An empty device string canonicalises to CPU:0.
    let pd = Input::Located(Some(String::new()), scalar32(5.0)).into_per_device().unwrap();
    assert_eq!(pd.devices(), vec!["/job:localhost/replica:0/task:0/device:CPU:0".to_string()]);
    let m = ops()
        .reduce(ReduceOp::Mean, Input::Located(Some("/cpu:1".into()), scalar32(5.0)), &Destinations::Device("/cpu:0".into()))
        .unwrap();
    assert_mirrored_f32(&m, &canon_all(&["/cpu:0"]), &[], &[5.0]);
}

#[test]
fn normalize_pairs_errors() {
    assert_eq!(
        err(normalize_pairs(None)),
        (ErrorCode::InvalidPairs, "`value_destination_pairs` should be a list or tuple".to_string())
    );
    assert_eq!(
        err(normalize_pairs(Some(vec![
            RawPair::Pair(Input::PerDevice(pd2()), Destinations::Device("/cpu:0".into())),
            RawPair::NotTuple,
        ]))),
        (ErrorCode::InvalidPairs, "Each element of `value_destination_pairs` should be a tuple.".to_string())
    );
    for n in [0, 1, 3] {
        assert_eq!(
            err(normalize_pairs(Some(vec![RawPair::Arity(n)]))),
            (
                ErrorCode::InvalidPairs,
                "Each element of `value_destination_pairs` should be a tuple of size 2.".to_string()
            )
        );
    }
    assert_eq!(
        err(normalize_pairs(Some(vec![RawPair::Pair(
            Input::Sequence("(1, 2)".into()),
            Destinations::Device("/cpu:0".into())
        )]))),
        (
            ErrorCode::InvalidInput,
            "Cannot convert `input_tensor` to a `PerDevice` object, got (1, 2) but expected a object that \
             is not a tuple or list."
                .to_string()
        )
    );
    assert_eq!(
        err(normalize_pairs(Some(vec![RawPair::Pair(Input::Other("3".into()), Destinations::Device("/cpu:0".into()))]))),
        (ErrorCode::InvalidInput, NO_DEVICE_MSG.to_string())
    );
}

#[test]
fn normalize_pairs_converts_inputs() {
    let pairs = normalize_pairs(Some(vec![
        RawPair::Pair(Input::Located(Some("/cpu:1".into()), scalar32(2.0)), Destinations::Device("/cpu:0".into())),
        RawPair::Pair(Input::PerDevice(pd2()), Destinations::Devices(vec!["/cpu:1".into()])),
    ]))
    .unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].0.devices(), canon_all(&["/cpu:1"]));
    assert_eq!(pairs[0].1, Destinations::Device("/cpu:0".into()));
    assert_eq!(pairs[1].0, pd2());
    let out = ops().batch_reduce(ReduceOp::Sum, &pairs).unwrap();
    assert_eq!(out.len(), 2);
    assert_mirrored_f32(&out[0], &canon_all(&["/cpu:0"]), &[], &[2.0]);
    assert_mirrored_f32(&out[1], &canon_all(&["/cpu:1"]), &[], &[3.0]);
    // An empty list of pairs is valid and reduces to nothing.
    let none = normalize_pairs(Some(vec![])).unwrap();
    assert!(ops().batch_reduce(ReduceOp::Sum, &none).unwrap().is_empty());
}

// ---- §5.3 `_simple_reduce` errors -------------------------------------------------------

#[test]
fn per_device_value_must_be_non_empty() {
    let want = (ErrorCode::EmptyValue, EMPTY_VALUE_MSG.to_string());
    let only_empty_list = per_device(vec![("/cpu:0", Value::Many(vec![]))]);
    assert_eq!(err(simple_reduce(ReduceOp::Sum, &only_empty_list, 1).map(|mut v| v.remove(0))), want);
    let two_empty_lists = per_device(vec![("/cpu:0", Value::Many(vec![])), ("/cpu:1", Value::Many(vec![]))]);
    assert_eq!(err(simple_reduce(ReduceOp::Mean, &two_empty_lists, 1).map(|mut v| v.remove(0))), want);
    let no_devices: PerDevice<Value> = PerDevice::new(vec![]).unwrap();
    assert_eq!(err(simple_reduce(ReduceOp::Sum, &no_devices, 1).map(|mut v| v.remove(0))), want);
    for op in ReduceOp::ALL {
        assert_eq!(
            err(ops().reduce(op, Input::PerDevice(only_empty_list.clone()), &Destinations::Device("/cpu:0".into()))),
            want,
            "{op:?}"
        );
    }
}

#[test]
fn nested_lists_are_rejected() {
    let pd = per_device(vec![("/cpu:0", Value::Many(vec![Value::Many(vec![scalar32(1.0)])]))]);
    assert_eq!(
        err(simple_reduce(ReduceOp::Sum, &pd, 1).map(|mut v| v.remove(0))),
        (ErrorCode::InvalidInput, "A list of values (MapOutput) cannot contain another list".to_string())
    );
}

#[test]
fn reduce_op_parse() {
    for op in ReduceOp::ALL {
        assert_eq!(ReduceOp::parse(op.name()).unwrap(), op);
    }
    assert_eq!(
        ReduceOp::ALL.map(|o| o.name()),
        ["SUM", "MEAN", "MAX", "MIN", "PRODUCT"]
    );
    assert_eq!(
        err(ReduceOp::parse("ONLY_FIRST_REPLICA")),
        (
            ErrorCode::InvalidReduceOp,
            "`aggregation` must be VariableAggregation.SUM or VariableAggregation.MEAN. (crossdev accepts \
             ReduceOp SUM, MEAN, MAX, MIN, PRODUCT; got \"ONLY_FIRST_REPLICA\")"
                .to_string()
        )
    );
    assert_eq!(
        err(ReduceOp::parse("sum")),
        (
            ErrorCode::InvalidReduceOp,
            "`aggregation` must be VariableAggregation.SUM or VariableAggregation.MEAN. (crossdev accepts \
             ReduceOp SUM, MEAN, MAX, MIN, PRODUCT; got \"sum\")"
                .to_string()
        )
    );
    assert_eq!(ReduceOp::Mean.combiner(), ReduceOp::Sum);
    assert_eq!(ReduceOp::Max.combiner(), ReduceOp::Max);
}

#[test]
fn accumulation_parse() {
    assert_eq!(Accumulation::parse("add_n").unwrap(), Accumulation::AddN);
    assert_eq!(Accumulation::parse("accumulate_n").unwrap(), Accumulation::AccumulateN);
    assert_eq!(
        err(Accumulation::parse("sum")),
        (ErrorCode::InvalidArgument, "accumulation must be 'add_n' or 'accumulate_n', got \"sum\"".to_string())
    );
    assert_eq!(
        err(Accumulation::parse("")),
        (ErrorCode::InvalidArgument, "accumulation must be 'add_n' or 'accumulate_n', got \"\"".to_string())
    );
}

#[test]
fn reduction_to_one_device_validates_its_device() {
    let r = ReductionToOneDevice::new(Some("/cpu:0"), Accumulation::AccumulateN).unwrap();
    assert_eq!(r.reduce_to_device.as_deref(), Some("/job:localhost/replica:0/task:0/device:CPU:0"));
    assert_eq!(r.accumulation, Accumulation::AccumulateN);
    assert_eq!(ReductionToOneDevice::new(None, Accumulation::AddN).unwrap().reduce_to_device, None);
    assert_eq!(
        err(ReductionToOneDevice::new(Some("/device:gpu:0"), Accumulation::AddN)),
        (ErrorCode::InvalidDevice, "Device type 'gpu' must be all-caps.".to_string())
    );
}

#[test]
fn error_codes_have_stable_strings() {
    let codes = [
        (ErrorCode::EmptyDestinations, "ERR_EMPTY_DESTINATIONS"),
        (ErrorCode::InvalidDestinations, "ERR_INVALID_DESTINATIONS"),
        (ErrorCode::InvalidInput, "ERR_INVALID_INPUT"),
        (ErrorCode::InvalidPairs, "ERR_INVALID_PAIRS"),
        (ErrorCode::EmptyValue, "ERR_EMPTY_VALUE"),
        (ErrorCode::InvalidReduceOp, "ERR_INVALID_REDUCE_OP"),
        (ErrorCode::ShapeMismatch, "ERR_SHAPE_MISMATCH"),
        (ErrorCode::DtypeMismatch, "ERR_DTYPE_MISMATCH"),
        (ErrorCode::InvalidDevice, "ERR_INVALID_DEVICE"),
        (ErrorCode::DeviceNotFound, "ERR_DEVICE_NOT_FOUND"),
        (ErrorCode::InvalidTensor, "ERR_INVALID_TENSOR"),
        (ErrorCode::InvalidArgument, "ERR_INVALID_ARGUMENT"),
        (ErrorCode::Timeout, "ERR_TIMEOUT"),
        (ErrorCode::PeerLost, "ERR_PEER_LOST"),
        (ErrorCode::RankMismatch, "ERR_RANK_MISMATCH"),
        (ErrorCode::Protocol, "ERR_PROTOCOL"),
        (ErrorCode::Internal, "ERR_INTERNAL"),
    ];
    for (code, s) in codes {
        assert_eq!(code.as_str(), s);
    }
}

#[test]
fn broadcast_rejects_lists_after_validating_destinations() {
    let list = Value::Many(vec![scalar32(1.0)]);
    assert_eq!(
        err(ops().broadcast(&list, &Destinations::Device("/cpu:0".into()))),
        (
            ErrorCode::InvalidInput,
            "Cannot broadcast a list of values (MapOutput): broadcast a tensor or IndexedSlices".to_string()
        )
    );
    assert_eq!(
        err(ops().broadcast(&list, &Destinations::Devices(vec![]))),
        (ErrorCode::EmptyDestinations, EMPTY_DEST_MSG.to_string())
    );
}
