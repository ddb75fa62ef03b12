//! All-reduces of GPU tensors on distinct GPUs run through NCCL: `NcclAllReduce` over this
//! machine's physical GPUs (one logical device each; one rank on a one-GPU machine), and the
//! first level of the two-level `nccl/…` specs within each worker, whatever the packing, with
//! the results of host tensors. The inputs are small integers, whose sums, means of two
//! workers, maxima and products every reduction order gets exactly. Without a GPU or NCCL it
//! prints why it is skipped.

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

/// Batch-reduces one variable per shape of `shapes` (`dtype`, small integers) on each of
/// `devices` onto those devices with `ops` and `op`, as GPU tensors and as host tensors; checks
/// that `by` (a line of the diagnostics) is logged `times` and that the results are the host's.
fn check(what: &str, ops: &Json, op: &str, devices: &[String], (shapes, dtype): (&[&[usize]], DType), (by, times): (&str, usize)) {
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
    let inputs: Vec<&[u8]> = host.iter().map(Vec::as_slice).collect();
    let (meta, buffers) = run(&json!({"call": "batchReduce", "ops": ops, "op": op, "pairs": host_pairs}), &inputs);
    let want = results(&meta, &buffers);
    let mut text = json!({"call": "batchReduce", "ops": ops, "op": op, "pairs": gpu_pairs}).to_string();
    text.pop();
    text.push_str(",\"debug\":true}");
    let r = execute(&text, &[]);
    let meta: Json = serde_json::from_str(&r.meta).unwrap();
    let logged = meta["log"].as_array().map_or(0, |l| l.iter().filter(|x| x.as_str().unwrap().contains(by)).count());
    assert_eq!(logged, times, "{what}: every pack {by} ({meta})");
    assert_eq!(results(&meta, &r.buffers), want, "{what}: NCCL's results are the host's");
    for h in handles {
        release(h);
    }
}

/// The GPUs of this machine with NCCL, with the store installed; `None` (printing why) without.
fn gpus() -> Option<usize> {
    let n = match gpu_count() {
        Ok(n) => n,
        Err(e) => {
            skip(&format!("no GPU ({})", e.message));
            return None;
        }
    };
    if !libraries().nccl {
        skip("no NCCL (libnccl.so not found by the dynamic loader)");
        return None;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| install(Arc::new(GpuStore::with_executor(|| GpuExecutor::new(None, Contexts::PerGpu)))));
    Some(n)
}

#[test]
fn nccl_all_reduce_of_gpu_tensors_on_distinct_gpus_runs_through_nccl() {
    let Some(n) = gpus() else { return };
    let _one = serial();
    let devices: Vec<String> = (0..n).map(|d| format!("/job:localhost/replica:0/task:0/device:GPU:{d}")).collect();
    let shapes: [&[usize]; 3] = [&[3, 5], &[1000], &[2, 2]];
    for (dtype, op) in [(DType::Float32, "SUM"), (DType::Float32, "MAX"), (DType::Int32, "SUM"), (DType::Float64, "PRODUCT"), (DType::Int64, "MIN")] {
        for packs in [0, 1, 2] {
            let what = format!("{} {op} numPacks {packs}", dtype.name());
            let ops = json!({"kind": "NcclAllReduce", "numPacks": packs});
            check(&what, &ops, op, &devices, (&shapes, dtype), ("all-reduced by NCCL in device memory", if packs == 0 { shapes.len() } else { packs }));
        }
    }
    assert_eq!(usage().buffers, 0, "every handle is released");
}

/// The two-level `nccl/…` specs of two workers on this machine's GPUs (each worker on all of
/// them): NCCL within each worker, the rest of the plan between the workers.
#[test]
fn nccl_first_level_of_two_level_specs_runs_through_nccl() {
    let Some(n) = gpus() else { return };
    let _one = serial();
    let workers: Vec<String> = (0..2).map(|w| format!("/job:worker/replica:0/task:{w}")).collect();
    let devices: Vec<String> = workers.iter().flat_map(|w| (0..n).map(move |d| format!("{w}/device:GPU:{d}"))).collect();
    // Even lengths, which recursive halving-doubling halves.
    let shapes: [&[usize]; 3] = [&[3, 4], &[1000], &[2, 2]];
    for spec in ["nccl/xring", "nccl/rechd"] {
        for (dtype, op) in [(DType::Float32, "SUM"), (DType::Float32, "MEAN"), (DType::Int32, "MAX"), (DType::Float64, "PRODUCT")] {
            for packs in [0, 2] {
                let what = format!("{spec} {} {op} numPacks {packs}", dtype.name());
                let ops = json!({"kind": "MultiWorkerAllReduce", "workerDevices": workers, "numGpusPerWorker": n, "allReduceSpec": spec, "numPacks": packs, "aggSmallGradsMaxBytes": 0, "aggSmallGradsMaxGroup": 10, "timeoutSeconds": null});
                let by = format!("by NCCL within each of 2 workers, then the rest of the {spec} plan");
                check(&what, &ops, op, &devices, (&shapes, dtype), (&by, if packs == 0 { shapes.len() } else { packs }));
            }
        }
    }
    assert_eq!(usage().buffers, 0, "every handle is released");
}
