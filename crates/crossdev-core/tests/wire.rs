//! `wire::execute`: the JSON + buffers protocol of the bindings.

use crossdev_core::wire::{execute, Response};
use crossdev_core::{Buffer, DType};
use half::{bf16, f16};
use serde_json::{json, Value as Json};
use std::borrow::Cow;

const CPU0: &str = "/job:localhost/replica:0/task:0/device:CPU:0";
const CPU1: &str = "/job:localhost/replica:0/task:0/device:CPU:1";

fn run(request: &Json, inputs: &[&[u8]]) -> (Json, Vec<Buffer<'static>>) {
    let Response { meta, buffers } = execute(&request.to_string(), inputs);
    (serde_json::from_str(&meta).unwrap_or_else(|e| panic!("meta is not JSON ({e}): {meta}")), buffers)
}

fn error_of(meta: &Json) -> (String, String) {
    let e = meta.get("error").unwrap_or_else(|| panic!("expected an error, got {meta}"));
    (e["code"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string())
}

fn ops() -> Json {
    json!({"kind": "ReductionToOneDevice"})
}

fn dense(buf: usize, dtype: &str, shape: &[i64]) -> Json {
    json!({"dense": {"buf": buf, "dtype": dtype, "shape": shape}})
}

fn f32s(xs: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(xs).to_vec()
}

fn f32_buffer(xs: &[f32]) -> Buffer<'static> {
    Buffer::F32(Cow::Owned(xs.to_vec()))
}

#[test]
fn reduce_round_trip() {
    let a = f32s(&[1.0, 2.0]);
    let b = f32s(&[3.0, 5.0]);
    let req = json!({
        "call": "reduce", "ops": ops(), "op": "MEAN",
        "value": {"perDevice": [["/cpu:0", dense(0, "float32", &[2])], ["/cpu:1", dense(1, "float32", &[2])]]},
        "destinations": {"devices": ["/cpu:1", "/cpu:0"]}
    });
    let (meta, buffers) = run(&req, &[&a, &b]);
    assert_eq!(
        meta,
        json!({"results": [[
            [CPU1, {"dense": {"buf": 0, "dtype": "float32", "shape": [2]}}],
            [CPU0, {"dense": {"buf": 1, "dtype": "float32", "shape": [2]}}]
        ]]})
    );
    assert_eq!(buffers, vec![f32_buffer(&[2.0, 3.5]), f32_buffer(&[2.0, 3.5])]);
}

#[test]
fn reduce_with_every_ops_option_and_destination_kind() {
    let a = f32s(&[1.0]);
    let b = f32s(&[2.0]);
    let value = json!({"perDevice": [["/cpu:0", dense(0, "float32", &[])], ["/cpu:1", dense(1, "float32", &[])]]});
    let all_ops = [
        json!({"kind": "ReductionToOneDevice"}),
        json!({"kind": "ReductionToOneDevice", "reduceToDevice": "/device:CPU:0", "accumulation": "accumulate_n"}),
        json!({"kind": "ReductionToOneDevice", "reduceToDevice": null, "accumulation": "add_n"}),
    ];
    let dests = [
        (json!({"values": [CPU0, CPU1]}), vec![CPU0, CPU1]),
        (json!({"values": [CPU0]}), vec![CPU0]),
        (json!({"device": "/device:CPU:0"}), vec![CPU0]),
        (json!({"devices": ["/cpu:0", "/cpu:1"]}), vec![CPU0, CPU1]),
        (json!({"variable": "/cpu:1"}), vec![CPU1]),
    ];
    for o in &all_ops {
        for (d, devices) in &dests {
            let req = json!({"call": "reduce", "ops": o, "op": "SUM", "value": value, "destinations": d});
            let (meta, buffers) = run(&req, &[&a, &b]);
            let results = meta["results"].as_array().unwrap_or_else(|| panic!("{meta}"));
            assert_eq!(results.len(), 1);
            let got: Vec<&str> = results[0].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
            assert_eq!(&got, devices, "{o} {d}");
            assert_eq!(buffers.len(), devices.len());
            assert!(buffers.iter().all(|b| *b == f32_buffer(&[3.0])));
        }
    }
}

#[test]
fn located_and_many_inputs() {
    let x = f32s(&[4.0]);
    let y = f32s(&[1.0]);
    let z = f32s(&[7.0]);
    let req = json!({
        "call": "reduce", "ops": ops(), "op": "MEAN",
        "value": {"located": {"device": "/cpu:1", "value": dense(0, "float32", &[])}},
        "destinations": {"device": "/cpu:0"}
    });
    let (meta, buffers) = run(&req, &[&x]);
    assert_eq!(meta, json!({"results": [[[CPU0, {"dense": {"buf": 0, "dtype": "float32", "shape": []}}]]]}));
    assert_eq!(buffers, vec![f32_buffer(&[4.0])]);

    // A MapOutput of 2 values counts twice: (4 + 1 + 7) / 3.
    let req = json!({
        "call": "reduce", "ops": ops(), "op": "MEAN",
        "value": {"perDevice": [
            ["/cpu:0", {"many": [dense(0, "float32", &[]), dense(1, "float32", &[])]}],
            ["/cpu:1", dense(2, "float32", &[])]
        ]},
        "destinations": {"device": "/cpu:0"}
    });
    let (_, buffers) = run(&req, &[&x, &y, &z]);
    assert_eq!(buffers, vec![f32_buffer(&[4.0])]);
}

#[test]
fn batch_reduce_round_trip() {
    let a = f32s(&[0.0]);
    let b = f32s(&[1.0]);
    let c = f32s(&[2.0]);
    let pd = |i: usize, j: usize| {
        json!({"perDevice": [["/cpu:0", dense(i, "float32", &[])], ["/cpu:1", dense(j, "float32", &[])]]})
    };
    let req = json!({
        "call": "batchReduce", "ops": ops(), "op": "SUM",
        "pairs": [
            {"pair": [pd(0, 1), {"device": "/cpu:1"}]},
            {"pair": [pd(1, 2), {"devices": ["/cpu:0", "/cpu:1"]}]}
        ]
    });
    let (meta, buffers) = run(&req, &[&a, &b, &c]);
    assert_eq!(
        meta,
        json!({"results": [
            [[CPU1, {"dense": {"buf": 0, "dtype": "float32", "shape": []}}]],
            [
                [CPU0, {"dense": {"buf": 1, "dtype": "float32", "shape": []}}],
                [CPU1, {"dense": {"buf": 2, "dtype": "float32", "shape": []}}]
            ]
        ]})
    );
    assert_eq!(buffers, vec![f32_buffer(&[1.0]), f32_buffer(&[3.0]), f32_buffer(&[3.0])]);

    let (meta, buffers) = run(&json!({"call": "batchReduce", "ops": ops(), "op": "MEAN", "pairs": []}), &[]);
    assert_eq!(meta, json!({"results": []}));
    assert!(buffers.is_empty());
}

#[test]
fn batch_reduce_pair_errors() {
    let cases = [
        (json!(null), "ERR_INVALID_PAIRS", "`value_destination_pairs` should be a list or tuple"),
        (json!(["notTuple"]), "ERR_INVALID_PAIRS", "Each element of `value_destination_pairs` should be a tuple."),
        (
            json!([{"arity": 3}]),
            "ERR_INVALID_PAIRS",
            "Each element of `value_destination_pairs` should be a tuple of size 2.",
        ),
        (
            json!([{"pair": [{"sequence": "[1, 2]"}, {"device": "/cpu:0"}]}]),
            "ERR_INVALID_INPUT",
            "Cannot convert `input_tensor` to a `PerDevice` object, got [1, 2] but expected a object that is \
             not a tuple or list.",
        ),
        (
            json!([{"pair": [{"other": "3"}, {"device": "/cpu:0"}]}]),
            "ERR_INVALID_INPUT",
            "Cannot convert `input_tensor` to a `PerDevice` object because it doesn't have device set.",
        ),
        (
            json!([{"pair": [{"located": {"device": "/cpu:0", "value": dense(0, "float32", &[])}}, {"invalid": "tuple"}]}]),
            "ERR_INVALID_DESTINATIONS",
            "destinations must be one of a `DistributedValues` object, a tf.Variable object, a device string, a \
             list of device strings",
        ),
    ];
    let x = f32s(&[1.0]);
    for (pairs, code, message) in cases {
        let req = json!({"call": "batchReduce", "ops": ops(), "op": "SUM", "pairs": pairs});
        let (meta, buffers) = run(&req, &[&x]);
        assert_eq!(error_of(&meta), (code.to_string(), message.to_string()), "{pairs}");
        assert!(buffers.is_empty());
    }
    // A missing `pairs` is "not a list", too.
    let (meta, _) = run(&json!({"call": "batchReduce", "ops": ops(), "op": "SUM"}), &[]);
    assert_eq!(
        error_of(&meta),
        ("ERR_INVALID_PAIRS".to_string(), "`value_destination_pairs` should be a list or tuple".to_string())
    );
}

#[test]
fn reduce_errors_become_error_responses() {
    let x = f32s(&[1.0]);
    let one = json!({"perDevice": [["/cpu:0", dense(0, "float32", &[])]]});
    let cases = [
        (json!({"device": ""}), one.clone(), "SUM", "ERR_EMPTY_DESTINATIONS", "destinations can not be empty".to_string()),
        (json!({"devices": []}), one.clone(), "SUM", "ERR_EMPTY_DESTINATIONS", "destinations can not be empty".to_string()),
        (json!({"variable": ""}), one.clone(), "SUM", "ERR_EMPTY_DESTINATIONS", "destinations can not be empty".to_string()),
        (
            json!({"invalid": "NoneType"}),
            one.clone(),
            "SUM",
            "ERR_INVALID_DESTINATIONS",
            "destinations must be one of a `DistributedValues` object, a tf.Variable object, a device string, a \
             list of device strings"
                .to_string(),
        ),
        (
            json!({"device": "/cpu:0"}),
            json!({"perDevice": [["/cpu:0", {"many": []}]]}),
            "SUM",
            "ERR_EMPTY_VALUE",
            "`per_device_value` must be non-empty".to_string(),
        ),
        (
            json!({"device": "/cpu:0"}),
            json!({"located": {"device": null, "value": dense(0, "float32", &[])}}),
            "SUM",
            "ERR_INVALID_INPUT",
            "Cannot convert `input_tensor` to a `PerDevice` object because it doesn't have device set.".to_string(),
        ),
        (
            json!({"device": "/cpu:0"}),
            one.clone(),
            "ONLY_FIRST_REPLICA",
            "ERR_INVALID_REDUCE_OP",
            "`aggregation` must be VariableAggregation.SUM or VariableAggregation.MEAN. (crossdev accepts ReduceOp \
             SUM, MEAN, MAX, MIN, PRODUCT; got \"ONLY_FIRST_REPLICA\")"
                .to_string(),
        ),
        (
            json!({"device": "/device:gpu:0"}),
            one.clone(),
            "SUM",
            "ERR_INVALID_DEVICE",
            "Device type 'gpu' must be all-caps.".to_string(),
        ),
        (
            json!({"device": "/cpu:0"}),
            json!({"perDevice": [["/cpu:0", dense(0, "float32", &[])], ["/cpu:1", dense(1, "int32", &[])]]}),
            "SUM",
            "ERR_DTYPE_MISMATCH",
            "Cannot reduce tensors of different dtypes: float32 and int32".to_string(),
        ),
        (
            json!({"device": "/cpu:0"}),
            json!({"perDevice": [["/cpu:0", dense(0, "float32", &[1])], ["/cpu:1", dense(1, "int32", &[])]]}),
            "SUM",
            "ERR_DTYPE_MISMATCH",
            "Cannot reduce tensors of different dtypes: float32 and int32".to_string(),
        ),
        (
            json!({"device": "/cpu:0"}),
            json!({"perDevice": [["/cpu:0", dense(0, "float32", &[1])], ["/cpu:1", dense(1, "float32", &[])]]}),
            "SUM",
            "ERR_SHAPE_MISMATCH",
            "Shapes of all inputs must match: [1] != []".to_string(),
        ),
    ];
    let i = 7i32.to_le_bytes();
    for (dest, value, op, code, message) in cases {
        let req = json!({"call": "reduce", "ops": ops(), "op": op, "value": value, "destinations": dest});
        let (meta, buffers) = run(&req, &[&x, &i]);
        assert_eq!(meta, json!({"error": {"code": code, "message": message}}), "{req}");
        assert!(buffers.is_empty());
    }
}

#[test]
fn ops_errors() {
    let (meta, _) = run(&json!({"call": "checkOps", "ops": {"kind": "ReductionToOneDevice", "accumulation": "sum"}}), &[]);
    assert_eq!(
        error_of(&meta),
        ("ERR_INVALID_ARGUMENT".to_string(), "accumulation must be 'add_n' or 'accumulate_n', got \"sum\"".to_string())
    );
    let (meta, _) = run(&json!({"call": "checkOps", "ops": {"kind": "ReductionToOneDevice", "reduceToDevice": "TPU:0"}}), &[]);
    assert_eq!(
        error_of(&meta),
        ("ERR_INVALID_DEVICE".to_string(), "Unknown attribute: 'TPU' in 'TPU:0'".to_string())
    );
    let (meta, _) = run(&json!({"call": "checkOps", "ops": ops()}), &[]);
    assert_eq!(meta, json!("ok"));
    // An unknown kind is a protocol error.
    let (meta, _) = run(&json!({"call": "checkOps", "ops": {"kind": "AllReduce"}}), &[]);
    assert_eq!(error_of(&meta).0, "ERR_PROTOCOL");
}

#[test]
fn broadcast_round_trip() {
    let x: Vec<u8> = [1i64, -2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let req = json!({
        "call": "broadcast", "ops": ops(), "value": dense(0, "int64", &[2]),
        "destinations": {"devices": ["/cpu:1", "/cpu:0", "/device:CPU:1"]}
    });
    let (meta, buffers) = run(&req, &[&x]);
    assert_eq!(
        meta,
        json!({"results": [[
            [CPU1, {"dense": {"buf": 0, "dtype": "int64", "shape": [2]}}],
            [CPU0, {"dense": {"buf": 1, "dtype": "int64", "shape": [2]}}]
        ]]})
    );
    assert_eq!(buffers, vec![Buffer::I64(Cow::Owned(vec![1, -2])), Buffer::I64(Cow::Owned(vec![1, -2]))]);
    let (meta, buffers) = run(
        &json!({"call": "broadcast", "ops": ops(), "value": dense(0, "int64", &[2]), "destinations": {"devices": []}}),
        &[&x],
    );
    assert_eq!(meta, json!({"error": {"code": "ERR_EMPTY_DESTINATIONS", "message": "destinations can not be empty"}}));
    assert!(buffers.is_empty());
}

#[test]
fn indexed_slices_round_trip_and_densify() {
    let v0 = f32s(&[1.0, 2.0]);
    let i0: Vec<u8> = 1i32.to_le_bytes().to_vec();
    let v1 = f32s(&[3.0, 4.0, 5.0, 6.0]);
    let i1: Vec<u8> = [1i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
    let sparse = |v: usize, i: usize, rows: i64, idt: &str| {
        json!({"sparse": {
            "values": {"buf": v, "dtype": "float32", "shape": [rows, 2]},
            "indices": {"buf": i, "dtype": idt, "shape": [rows]},
            "denseShape": [5, 2]
        }})
    };
    let req = json!({
        "call": "reduce", "ops": ops(), "op": "MEAN",
        "value": {"perDevice": [["/cpu:0", sparse(0, 1, 1, "int32")], ["/cpu:1", sparse(2, 3, 2, "int64")]]},
        "destinations": {"values": [CPU0, CPU1]}
    });
    let (meta, buffers) = run(&req, &[&v0, &i0, &v1, &i1]);
    let out = |v: usize, i: usize| {
        json!({"sparse": {
            "values": {"buf": v, "dtype": "float32", "shape": [3, 2]},
            "indices": {"buf": i, "dtype": "int64", "shape": [3]},
            "denseShape": [5, 2]
        }})
    };
    assert_eq!(meta, json!({"results": [[[CPU0, out(0, 1)], [CPU1, out(2, 3)]]]}));
    let values = f32_buffer(&[0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
    let indices = Buffer::I64(Cow::Owned(vec![1, 1, 3]));
    assert_eq!(buffers, vec![values.clone(), indices.clone(), values.clone(), indices.clone()]);

    // Densify the result.
    let req = json!({"call": "densify", "value": out(0, 1)});
    let (meta, buffers) = run(&req, &[values.as_bytes(), indices.as_bytes()]);
    assert_eq!(meta, json!({"value": {"dense": {"buf": 0, "dtype": "float32", "shape": [5, 2]}}}));
    assert_eq!(buffers, vec![f32_buffer(&[0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 2.5, 3.0, 0.0, 0.0])]);

    // Densify rejects dense values, and bad indices.
    let (meta, _) = run(&json!({"call": "densify", "value": dense(0, "float32", &[2])}), &[&v0]);
    assert_eq!(error_of(&meta), ("ERR_INVALID_ARGUMENT".to_string(), "densify expects IndexedSlices".to_string()));
    let bad = 9i32.to_le_bytes();
    let (meta, _) = run(&json!({"call": "densify", "value": sparse(0, 1, 1, "int32")}), &[&v0, &bad]);
    assert_eq!(error_of(&meta), ("ERR_INVALID_TENSOR".to_string(), "IndexedSlices index 9 is outside [0, 5)".to_string()));
    // MAX over slices.
    let req = json!({
        "call": "reduce", "ops": ops(), "op": "MAX",
        "value": {"perDevice": [["/cpu:0", sparse(0, 1, 1, "int32")]]},
        "destinations": {"device": "/cpu:0"}
    });
    let (meta, _) = run(&req, &[&v0, &i0]);
    assert_eq!(
        error_of(&meta),
        ("ERR_INVALID_REDUCE_OP".to_string(), "IndexedSlices can only be reduced with SUM or MEAN, not MAX".to_string())
    );
}

#[test]
fn every_dtype_round_trips_through_reduce() {
    let cases: Vec<(DType, Buffer<'static>, Buffer<'static>, Buffer<'static>)> = vec![
        (DType::Float32, f32_buffer(&[1.5, -2.0]), f32_buffer(&[0.5, 4.0]), f32_buffer(&[2.0, 2.0])),
        (
            DType::Float64,
            Buffer::F64(Cow::Owned(vec![1.5, -2.0])),
            Buffer::F64(Cow::Owned(vec![0.5, 4.0])),
            Buffer::F64(Cow::Owned(vec![2.0, 2.0])),
        ),
        (
            DType::Float16,
            Buffer::F16(Cow::Owned(vec![f16::from_f32(1.5), f16::from_f32(-2.0)])),
            Buffer::F16(Cow::Owned(vec![f16::from_f32(0.5), f16::from_f32(4.0)])),
            Buffer::F16(Cow::Owned(vec![f16::from_f32(2.0), f16::from_f32(2.0)])),
        ),
        (
            DType::BFloat16,
            Buffer::BF16(Cow::Owned(vec![bf16::from_f32(1.5), bf16::from_f32(-2.0)])),
            Buffer::BF16(Cow::Owned(vec![bf16::from_f32(0.5), bf16::from_f32(4.0)])),
            Buffer::BF16(Cow::Owned(vec![bf16::from_f32(2.0), bf16::from_f32(2.0)])),
        ),
        (
            DType::Int32,
            Buffer::I32(Cow::Owned(vec![1, -2])),
            Buffer::I32(Cow::Owned(vec![5, 4])),
            Buffer::I32(Cow::Owned(vec![6, 2])),
        ),
        (
            DType::Int64,
            Buffer::I64(Cow::Owned(vec![1, -2])),
            Buffer::I64(Cow::Owned(vec![5, 4])),
            Buffer::I64(Cow::Owned(vec![6, 2])),
        ),
    ];
    for (dtype, a, b, sum) in cases {
        let name = dtype.name();
        let req = json!({
            "call": "reduce", "ops": ops(), "op": "SUM",
            "value": {"perDevice": [["/cpu:0", dense(0, name, &[2])], ["/cpu:1", dense(1, name, &[2])]]},
            "destinations": {"device": "/cpu:0"}
        });
        // Misaligned input bytes are copied, not rejected.
        let mut shifted = vec![0u8; b.as_bytes().len() + 1];
        shifted[1..].copy_from_slice(b.as_bytes());
        let (meta, buffers) = run(&req, &[a.as_bytes(), &shifted[1..]]);
        assert_eq!(meta, json!({"results": [[[CPU0, {"dense": {"buf": 0, "dtype": name, "shape": [2]}}]]]}), "{name}");
        assert_eq!(buffers, vec![sum], "{name}");
    }
}

#[test]
fn tensor_errors() {
    let x = f32s(&[1.0, 2.0, 3.0]);
    let cases = [
        (json!({"buf": 0, "dtype": "float8", "shape": [3]}), "ERR_INVALID_TENSOR",
         "Unknown dtype 'float8'; expected one of float32, float64, float16, bfloat16, int32, int64"),
        (json!({"buf": 0, "dtype": "float32", "shape": [2, 2]}), "ERR_INVALID_TENSOR",
         "A tensor of shape [2, 2] needs 4 elements, but its float32 data has 3"),
        (json!({"buf": 0, "dtype": "float64", "shape": [1]}), "ERR_INVALID_TENSOR",
         "12 bytes are not a whole number of float64 elements"),
        (json!({"buf": 0, "dtype": "float32", "shape": [-3]}), "ERR_INVALID_TENSOR",
         "Shape dimensions must be non-negative integers, got [-3]"),
        (json!({"buf": 5, "dtype": "float32", "shape": [3]}), "ERR_PROTOCOL", "no input buffer 5"),
    ];
    for (t, code, message) in cases {
        let (meta, buffers) = run(&json!({"call": "checkTensor", "tensor": t}), &[&x]);
        assert_eq!(meta, json!({"error": {"code": code, "message": message}}), "{t}");
        assert!(buffers.is_empty());
    }
    let (meta, _) = run(&json!({"call": "checkTensor", "tensor": {"buf": 0, "dtype": "int32", "shape": [3, 1]}}), &[&x]);
    assert_eq!(meta, json!("ok"));
    let (meta, _) = run(&json!({"call": "checkValue", "value": {"many": [dense(0, "float32", &[3])]}}), &[&x]);
    assert_eq!(meta, json!("ok"));
    let (meta, _) = run(
        &json!({"call": "checkValue", "value": {"sparse": {
            "values": {"buf": 0, "dtype": "float32", "shape": [3, 1]},
            "indices": {"buf": 0, "dtype": "float32", "shape": [3]},
            "denseShape": [4, 1]}}}),
        &[&x],
    );
    assert_eq!(
        error_of(&meta),
        (
            "ERR_INVALID_TENSOR".to_string(),
            "IndexedSlices indices must be a 1-D int32 or int64 tensor, got float32 of shape [3]".to_string()
        )
    );
}

#[test]
fn device_calls() {
    let (meta, _) = run(&json!({"call": "canonicalize", "device": "/gpu", "default": "/cpu:3"}), &[]);
    assert_eq!(meta, json!({"device": "/job:localhost/replica:0/task:0/device:GPU:3"}));
    let (meta, _) = run(&json!({"call": "canonicalize", "device": "/job:worker/task:1"}), &[]);
    assert_eq!(meta, json!({"device": "/job:worker/replica:0/task:1/device:CPU:0"}));
    let (meta, _) = run(&json!({"call": "resolve", "device": "/job:worker/task:1", "current": "/device:GPU:0"}), &[]);
    assert_eq!(meta, json!({"device": "/job:worker/replica:0/task:1/device:GPU:0"}));
    let (meta, _) = run(&json!({"call": "resolve", "device": "/cpu:0", "current": null}), &[]);
    assert_eq!(meta, json!({"device": CPU0}));
    let (meta, _) = run(&json!({"call": "canonicalize", "device": "/device:gpu:0"}), &[]);
    assert_eq!(meta, json!({"error": {"code": "ERR_INVALID_DEVICE", "message": "Device type 'gpu' must be all-caps."}}));
    let (meta, _) = run(&json!({"call": "canonicalize", "device": "/cpu:0/gpu:0"}), &[]);
    assert_eq!(
        meta,
        json!({"error": {"code": "ERR_INVALID_DEVICE", "message": "Cannot specify multiple device types: /cpu:0/gpu:0"}})
    );
    let (meta, _) = run(&json!({"call": "resolve", "device": "/job:a/foo:1", "current": "/gpu:0"}), &[]);
    assert_eq!(
        meta,
        json!({"error": {"code": "ERR_INVALID_DEVICE", "message": "Unknown attribute: 'foo' in '/job:a/foo:1'"}})
    );
}

#[test]
fn malformed_requests_are_protocol_errors() {
    let cases = [
        "",
        "{",
        "null",
        "[]",
        "42",
        "{}",
        r#"{"call": "nope"}"#,
        r#"{"call": "reduce"}"#,
        r#"{"call": "reduce", "ops": {"kind": "ReductionToOneDevice"}, "op": "SUM", "value": {"bogus": 1}, "destinations": {"device": "/cpu:0"}}"#,
        r#"{"call": "checkTensor", "tensor": {"buf": -1, "dtype": "float32", "shape": []}}"#,
        r#"{"call": "checkTensor", "tensor": {"buf": 0, "dtype": "float32", "shape": [1.5]}}"#,
        r#"{"call": "canonicalize", "device": 3}"#,
        "\u{0}\u{1}garbage",
    ];
    for c in cases {
        let Response { meta, buffers } = execute(c, &[]);
        let meta: Json = serde_json::from_str(&meta).unwrap();
        let (code, message) = error_of(&meta);
        assert_eq!(code, "ERR_PROTOCOL", "{c:?}: {message}");
        assert!(message.starts_with("bad request: "), "{c:?}: {message}");
        assert!(buffers.is_empty());
    }
}

#[test]
fn never_panics_on_truncated_or_mangled_requests() {
    let a = f32s(&[1.0, 2.0]);
    let req = json!({
        "call": "reduce", "ops": ops(), "op": "MEAN",
        "value": {"perDevice": [["/cpu:0", dense(0, "float32", &[2])], ["/cpu:1", dense(1, "float32", &[2])]]},
        "destinations": {"devices": ["/cpu:1", "/cpu:0"]}
    })
    .to_string();
    for end in 0..req.len() {
        let r = execute(&req[..end], &[&a, &a]);
        let meta: Json = serde_json::from_str(&r.meta).unwrap();
        assert_eq!(error_of(&meta).0, "ERR_PROTOCOL", "prefix {end}");
    }
    // Every input buffer missing, short or long.
    for inputs in [vec![], vec![&a[..]], vec![&a[..3], &a[..]], vec![&a[..], &a[..4]], vec![&a[..], &[0u8; 12][..]]] {
        let r = execute(&req, &inputs);
        let meta: Json = serde_json::from_str(&r.meta).unwrap();
        let (code, _) = error_of(&meta);
        assert!(code == "ERR_PROTOCOL" || code == "ERR_INVALID_TENSOR", "{code}");
        assert!(r.buffers.is_empty());
    }
}

#[test]
fn oversized_shapes_are_invalid_tensors() {
    // 2^32 * 2^32 elements overflow usize: this must be an ERR_INVALID_TENSOR, not an overflow
    // panic (debug) nor a wrapped element count of 0 that accepts 0 bytes (release).
    let big = 1i64 << 32;
    let (meta, buffers) =
        run(&json!({"call": "checkTensor", "tensor": {"buf": 0, "dtype": "float32", "shape": [big, big]}}), &[&[]]);
    assert_eq!(
        meta,
        json!({"error": {"code": "ERR_INVALID_TENSOR",
            "message": "A tensor of shape [4294967296, 4294967296] has more elements than can be addressed"}})
    );
    assert!(buffers.is_empty());
    let (meta, _) = run(
        &json!({"call": "checkTensor", "tensor": {"buf": 0, "dtype": "int64", "shape": [i64::MAX, 3]}}),
        &[&[]],
    );
    assert_eq!(
        meta,
        json!({"error": {"code": "ERR_INVALID_TENSOR",
            "message": "A tensor of shape [9223372036854775807, 3] has more elements than can be addressed"}})
    );
    // A zero dimension anywhere makes the tensor empty, whatever the other dimensions.
    let (meta, _) = run(
        &json!({"call": "checkTensor", "tensor": {"buf": 0, "dtype": "int64", "shape": [big, big, 0]}}),
        &[&[]],
    );
    assert_eq!(meta, json!("ok"));
    // Slices whose dense shape overflows.
    let (meta, _) = run(
        &json!({"call": "densify", "value": {"sparse": {
            "values": {"buf": 0, "dtype": "float32", "shape": [0, big]},
            "indices": {"buf": 0, "dtype": "int32", "shape": [0]},
            "denseShape": [big, big]}}}),
        &[&[]],
    );
    assert_eq!(
        meta,
        json!({"error": {"code": "ERR_INVALID_TENSOR",
            "message": "IndexedSlices dense shape [4294967296, 4294967296] has more elements than can be addressed"}})
    );
}

#[test]
fn broadcasting_a_list_is_an_input_error() {
    let x = f32s(&[1.0]);
    let req = json!({
        "call": "broadcast", "ops": ops(), "value": {"many": [dense(0, "float32", &[])]},
        "destinations": {"device": "/cpu:0"}
    });
    let (meta, buffers) = run(&req, &[&x]);
    assert_eq!(
        meta,
        json!({"error": {"code": "ERR_INVALID_INPUT",
            "message": "Cannot broadcast a list of values (MapOutput): broadcast a tensor or IndexedSlices"}})
    );
    assert!(buffers.is_empty());
}
