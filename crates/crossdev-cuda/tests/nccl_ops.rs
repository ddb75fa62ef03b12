//! `NcclAllReduce` of GPU tensors on distinct GPUs runs through NCCL: over this machine's
//! physical GPUs (one logical device each; one rank on a one-GPU machine), whatever the packing,
//! with the results of host tensors. The inputs are small integers, whose sums, maxima and
//! products every reduction order gets exactly. Without a GPU or NCCL it prints why it is skipped.

// Only some of the shared checks' helpers are used here.
#[allow(dead_code)]
#[path = "../../crossdev-core/tests/resident_matrix/mod.rs"]
mod resident_matrix;

use crossdev_core::resident::install;
use crossdev_core::wire::execute;
use crossdev_core::DType;
use crossdev_cuda::executor::{Contexts, GpuExecutor};
use crossdev_cuda::probe::{gpu_count, libraries};
use crossdev_cuda::resident::GpuStore;
use resident_matrix::{outputs, release, run, serial, upload, usage, Out};
use serde_json::{json, Value as Json};
use std::sync::Arc;

fn skip(why: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped: {why}\n").as_bytes());
}

/// The result tensors of a response, as bytes wherever they are (GPU ones downloaded and
/// released).
fn results(meta: &Json, buffers: &[crossdev_core::Buffer]) -> Vec<(String, Vec<u8>)> {
    let out = outputs(meta, buffers).unwrap_or_else(|code| panic!("{code}: {meta}"));
    out.into_iter().map(|(what, o)| (what, match o { Out::Host(b) | Out::Gpu(b) => b })).collect()
}

#[test]
fn nccl_all_reduce_of_gpu_tensors_on_distinct_gpus_runs_through_nccl() {
    let n = match gpu_count() {
        Ok(n) => n,
        Err(e) => return skip(&format!("no GPU ({})", e.message)),
    };
    if !libraries().nccl {
        return skip("no NCCL (libnccl.so not found by the dynamic loader)");
    }
    install(Arc::new(GpuStore::with_executor(|| GpuExecutor::new(None, Contexts::PerGpu))));
    let _one = serial();
    let devices: Vec<String> = (0..n).map(|d| format!("/job:localhost/replica:0/task:0/device:GPU:{d}")).collect();
    let shapes: [&[usize]; 3] = [&[3, 5], &[1000], &[2, 2]];
    for (dtype, op) in [(DType::Float32, "SUM"), (DType::Float32, "MAX"), (DType::Int32, "SUM"), (DType::Float64, "PRODUCT"), (DType::Int64, "MIN")] {
        for packs in [0, 1, 2] {
            let what = format!("{} {op} numPacks {packs}", dtype.name());
            let mut handles = Vec::new();
            let mut host = Vec::new();
            let mut gpu_pairs = Vec::new();
            let mut host_pairs = Vec::new();
            for (v, shape) in shapes.iter().enumerate() {
                let (mut g, mut h) = (Vec::new(), Vec::new());
                for (d, dev) in devices.iter().enumerate() {
                    let len: usize = shape.iter().product();
                    let xs: Vec<f64> = (0..len).map(|i| ((i + 3 * v + d) % 3) as f64 + 1.0).collect();
                    let bytes = crossdev_core::kernels::cast::from_f64(&xs, dtype).as_bytes().to_vec();
                    let handle = upload(dev, dtype, shape, &bytes).unwrap();
                    handles.push(handle);
                    g.push(json!([dev, {"dense": {"gpu": handle, "dtype": dtype.name(), "shape": shape}}]));
                    h.push(json!([dev, {"dense": {"buf": host.len(), "dtype": dtype.name(), "shape": shape}}]));
                    host.push(bytes);
                }
                gpu_pairs.push(json!({"pair": [{"perDevice": g}, {"values": devices}]}));
                host_pairs.push(json!({"pair": [{"perDevice": h}, {"values": devices}]}));
            }
            let ops = json!({"kind": "NcclAllReduce", "numPacks": packs});
            let inputs: Vec<&[u8]> = host.iter().map(Vec::as_slice).collect();
            let (meta, buffers) = run(&json!({"call": "batchReduce", "ops": ops, "op": op, "pairs": host_pairs}), &inputs);
            let want = results(&meta, &buffers);
            let mut text = json!({"call": "batchReduce", "ops": ops, "op": op, "pairs": gpu_pairs}).to_string();
            text.pop();
            text.push_str(",\"debug\":true}");
            let r = execute(&text, &[]);
            let meta: Json = serde_json::from_str(&r.meta).unwrap();
            let by_nccl = meta["log"].as_array().map_or(0, |l| l.iter().filter(|x| x.as_str().unwrap().contains("all-reduced by NCCL")).count());
            assert_eq!(by_nccl, if packs == 0 { shapes.len() } else { packs }, "{what}: every pack through NCCL ({meta})");
            assert_eq!(results(&meta, &r.buffers), want, "{what}: NCCL's results are the host's");
            for h in handles {
                release(h);
            }
        }
    }
    assert_eq!(usage().buffers, 0, "every handle is released");
}
