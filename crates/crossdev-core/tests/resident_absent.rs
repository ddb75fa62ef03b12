//! Without a resident store (the WebAssembly build installs none), every request that needs one
//! is `ERR_NO_CUDA`, and the store's usage reads as empty. (A test file of its own: the other
//! resident tests install a store, which lasts for their whole process.)

use crossdev_core::wire::execute;
use serde_json::{json, Value as Json};

fn run(request: Json, inputs: &[&[u8]]) -> Json {
    serde_json::from_str(&execute(&request.to_string(), inputs).meta).unwrap()
}

#[test]
fn gpu_requests_without_a_store_are_err_no_cuda() {
    let gpu = json!({"gpu": 1, "dtype": "float32", "shape": [1]});
    let requests = [
        (json!({"call": "upload", "device": "/gpu:0", "tensor": {"buf": 0, "dtype": "float32", "shape": [1]}}), 1),
        (json!({"call": "download", "tensor": gpu}), 0),
        (json!({"call": "reduce", "ops": {"kind": "NcclAllReduce", "numPacks": 1}, "op": "SUM", "value": {"perDevice": [["/gpu:0", {"dense": gpu}]]}, "destinations": {"device": "/gpu:0"}}), 0),
    ];
    let element: &[u8] = &[0; 4];
    for (request, inputs) in requests {
        let meta = run(request.clone(), &[element][..inputs]);
        assert_eq!(meta["error"]["code"], "ERR_NO_CUDA", "{request}: {meta}");
    }
    // A CPU device is refused first, whatever the build.
    let meta = run(json!({"call": "upload", "device": "/cpu:0", "tensor": {"buf": 0, "dtype": "float32", "shape": [1]}}), &[element]);
    assert_eq!(meta["error"]["code"], "ERR_INVALID_DEVICE", "{meta}");
    assert_eq!(run(json!({"call": "release", "handle": 7}), &[]), json!("ok"));
    assert_eq!(run(json!({"call": "residentUsage"}), &[]), json!({"usage": {"buffers": 0, "bytes": 0}}));
}
