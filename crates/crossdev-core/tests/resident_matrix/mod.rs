//! The resident-tensor checks shared by crossdev-core (over a host-memory store) and
//! crossdev-cuda (over the GPU store): every op class with every algorithm and packing, several
//! dtypes and every ReduceOp, run through `wire::execute` twice, once on host tensors and once
//! on GPU tensors (uploaded first); the results must be the same bit for bit, GPU tensors exactly
//! where a result's device is a GPU, and every handle must be accounted for afterwards. The
//! store under test is whatever `crossdev_core::resident` has installed.

use crossdev_core::kernels::cast::from_f64;
use crossdev_core::resident::{gpu_device, installed, Usage};
use crossdev_core::wire::execute;
use crossdev_core::{Buffer, DType};
use serde_json::{json, Value as Json};
use std::sync::{Mutex, MutexGuard};

/// The store's usage is process-wide: tests that count it run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the installed store holds now.
pub fn usage() -> Usage {
    installed().expect("a store is installed").usage()
}

/// Runs a request: its JSON response and result buffers.
pub fn run(request: &Json, inputs: &[&[u8]]) -> (Json, Vec<Buffer<'static>>) {
    let r = execute(&request.to_string(), inputs);
    (serde_json::from_str(&r.meta).unwrap_or_else(|e| panic!("meta is not JSON ({e}): {}", r.meta)), r.buffers)
}

/// The error code of a response, if it is an error.
pub fn error_code(meta: &Json) -> Option<String> {
    meta.get("error").map(|e| e["code"].as_str().expect("a code").to_string())
}

/// Uploads `data` as a GPU tensor on `device`: its handle.
pub fn upload(device: &str, dtype: DType, shape: &[usize], data: &[u8]) -> Result<u64, (String, String)> {
    let (meta, _) = run(&json!({"call": "upload", "device": device, "tensor": {"buf": 0, "dtype": dtype.name(), "shape": shape}}), &[data]);
    match meta.get("error") {
        Some(e) => Err((e["code"].as_str().unwrap().into(), e["message"].as_str().unwrap().into())),
        None => Ok(meta["value"]["dense"]["gpu"].as_u64().unwrap_or_else(|| panic!("a handle: {meta}"))),
    }
}

/// The elements of GPU tensor `handle`, or the error code.
pub fn download(handle: u64, dtype: DType, shape: &[usize]) -> Result<Vec<u8>, String> {
    let (meta, buffers) = run(&json!({"call": "download", "tensor": {"gpu": handle, "dtype": dtype.name(), "shape": shape}}), &[]);
    match error_code(&meta) {
        Some(code) => Err(code),
        None => Ok(buffers[meta["value"]["dense"]["buf"].as_u64().unwrap() as usize].as_bytes().to_vec()),
    }
}

/// Frees GPU tensor `handle`.
pub fn release(handle: u64) {
    let (meta, _) = run(&json!({"call": "release", "handle": handle}), &[]);
    assert_eq!(meta, json!("ok"));
}

/// The inputs of one request: host buffers, or GPU tensors uploaded from them.
struct Inputs {
    on_gpu: bool,
    bytes: Vec<Vec<u8>>,
    handles: Vec<u64>,
}

impl Inputs {
    /// A tensor argument of `dtype` and `shape` on `device`, its elements made from `seed`.
    fn tensor(&mut self, device: &str, dtype: DType, shape: &[usize], seed: usize) -> Json {
        let n: usize = shape.iter().product();
        // Small values with fractions (exact in every float type), negatives, and repeats, so
        // MAX/MIN/PRODUCT and MEAN's divide all have work to do.
        let scale = if matches!(dtype, DType::Int32 | DType::Int64) { 1.0 } else { 0.75 };
        let xs: Vec<f64> = (0..n).map(|i| (((i * 7 + seed * 13) % 11) as f64 - 5.0) * scale).collect();
        let data = from_f64(&xs, dtype).as_bytes().to_vec();
        self.data(device, dtype, shape, data)
    }

    fn data(&mut self, device: &str, dtype: DType, shape: &[usize], data: Vec<u8>) -> Json {
        if self.on_gpu && gpu_device(device).is_ok() {
            let handle = upload(device, dtype, shape, &data).unwrap_or_else(|e| panic!("upload to {device}: {e:?}"));
            self.handles.push(handle);
            json!({"gpu": handle, "dtype": dtype.name(), "shape": shape})
        } else {
            self.bytes.push(data);
            json!({"buf": self.bytes.len() - 1, "dtype": dtype.name(), "shape": shape})
        }
    }

    /// Int32 row indices `rows` (always host memory: slices mix the two).
    fn indices(&mut self, rows: &[i32]) -> Json {
        self.bytes.push(bytemuck::cast_slice(rows).to_vec());
        json!({"buf": self.bytes.len() - 1, "dtype": "int32", "shape": [rows.len()]})
    }
}

/// A result tensor: where it is, and its bytes.
#[derive(Debug, PartialEq)]
pub enum Out {
    Host(Vec<u8>),
    Gpu(Vec<u8>),
}

/// The result tensors of a response, in order, downloading (and releasing) GPU ones; or the
/// error code.
pub fn outputs(meta: &Json, buffers: &[Buffer]) -> Result<Vec<(String, Out)>, String> {
    if let Some(code) = error_code(meta) {
        return Err(code);
    }
    let mut out = Vec::new();
    let mut tensor = |device: &str, t: &Json| {
        let dtype = DType::parse(t["dtype"].as_str().unwrap()).unwrap();
        let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let o = match (t.get("buf"), t.get("gpu")) {
            (Some(b), None) => Out::Host(buffers[b.as_u64().unwrap() as usize].as_bytes().to_vec()),
            (None, Some(h)) => {
                let h = h.as_u64().unwrap();
                let bytes = download(h, dtype, &shape).unwrap_or_else(|e| panic!("download of result {h}: {e}"));
                release(h);
                Out::Gpu(bytes)
            }
            _ => panic!("a result tensor is a buffer or a GPU tensor: {t}"),
        };
        out.push((format!("{device} {} {shape:?}", dtype.name()), o));
    };
    for mirrored in meta["results"].as_array().expect("results") {
        for entry in mirrored.as_array().unwrap() {
            let device = entry[0].as_str().unwrap();
            match (entry[1].get("dense"), entry[1].get("sparse")) {
                (Some(t), _) => tensor(device, t),
                (_, Some(s)) => {
                    tensor(device, &s["values"]);
                    tensor(device, &s["indices"]);
                }
                _ => panic!("a result is dense or sparse: {entry}"),
            }
        }
    }
    Ok(out)
}

/// Runs the request `build` makes on host tensors and on GPU tensors; checks that they agree bit
/// for bit (or fail alike), that results on GPUs come back as GPU tensors, and that no handle
/// is left behind. Returns how many result tensors were compared.
fn compare(what: &str, build: &dyn Fn(&mut dyn FnMut(&str, DType, &[usize], usize) -> Json, &mut dyn FnMut(&[i32]) -> Json) -> Json) -> usize {
    let before = usage();
    let mut results = Vec::new();
    for on_gpu in [false, true] {
        let mut inputs = Inputs { on_gpu, bytes: Vec::new(), handles: Vec::new() };
        let request = {
            let cell = std::cell::RefCell::new(&mut inputs);
            build(&mut |d, t, s, seed| cell.borrow_mut().tensor(d, t, s, seed), &mut |rows| cell.borrow_mut().indices(rows))
        };
        let slices: Vec<&[u8]> = inputs.bytes.iter().map(Vec::as_slice).collect();
        let (meta, buffers) = run(&request, &slices);
        results.push(outputs(&meta, &buffers));
        for h in inputs.handles {
            release(h);
        }
    }
    let gpu = results.pop().unwrap();
    let host = results.pop().unwrap();
    let count = match (&host, &gpu) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "{what}: host and GPU tensors fail differently");
            0
        }
        (Ok(h), Ok(g)) => {
            assert_eq!(h.len(), g.len(), "{what}: result count");
            for ((hd, ho), (gd, go)) in h.iter().zip(g) {
                assert_eq!(hd, gd, "{what}: result order");
                let Out::Host(hb) = ho else { panic!("{what}: a host request returned a GPU tensor on {hd}") };
                let on_gpu = hd.contains("device:GPU:");
                match go {
                    Out::Gpu(gb) if on_gpu => assert!(hb == gb, "{what}: {hd} differs between host and GPU tensors"),
                    Out::Host(gb) if !on_gpu => assert!(hb == gb, "{what}: {hd} differs between host and GPU tensors"),
                    _ => panic!("{what}: {hd} came back {} memory", if on_gpu { "in host" } else { "in GPU" }),
                }
            }
            h.len()
        }
        _ => panic!("{what}: host tensors gave {:?}, GPU tensors gave {:?}", host.as_ref().err(), gpu.as_ref().err()),
    };
    assert_eq!(usage(), before, "{what}: every handle is released");
    count
}

fn gpus(n: usize) -> Vec<String> {
    (0..n).map(|d| format!("/job:localhost/replica:0/task:0/device:GPU:{d}")).collect()
}

fn worker_gpus(workers: usize, per: usize) -> Vec<String> {
    (0..workers).flat_map(|w| (0..per).map(move |g| format!("/job:worker/replica:0/task:{w}/device:GPU:{g}"))).collect()
}

/// Every op class with each of its algorithms and packings, as the facade sends them, with the
/// devices its values live on.
fn op_specs() -> Vec<(Json, Vec<String>)> {
    let local = gpus(8);
    let workers: Vec<String> = (0..2).map(|w| format!("/job:worker/replica:0/task:{w}")).collect();
    let mut specs = vec![
        (json!({"kind": "ReductionToOneDevice", "reduceToDevice": null, "accumulation": null}), local.clone()),
        (json!({"kind": "ReductionToOneDevice", "reduceToDevice": "/gpu:3", "accumulation": "accumulate_n"}), local.clone()),
        (json!({"kind": "NcclAllReduce", "numPacks": 0}), local.clone()),
        (json!({"kind": "NcclAllReduce", "numPacks": 2}), local.clone()),
        (json!({"kind": "HierarchicalCopyAllReduce", "numPacks": 0}), local.clone()),
        (json!({"kind": "HierarchicalCopyAllReduce", "numPacks": 3}), local.clone()),
    ];
    for algorithm in ["nccl", "hierarchical_copy"] {
        for (packs, bytes, group) in [(0, 0, 10), (1, 0, 10), (4, 0, 10), (0, 64, 3)] {
            specs.push((json!({"kind": "AllReduce", "algorithm": algorithm, "numPacks": packs, "aggSmallGradsMaxBytes": bytes, "aggSmallGradsMaxGroup": group}), local.clone()));
        }
    }
    for spec in [json!("nccl"), json!("xring"), json!("nccl/xring"), json!("nccl/rechd"), json!("nccl/pscpu"), json!("pscpu/pscpu"), json!(["pscpu", 2, -1]), json!(["psgpu", 2, -1]), json!([["pscpu", 2, 20], ["xring", 2, -1]])] {
        for packs in [0, 2] {
            specs.push((
                json!({"kind": "MultiWorkerAllReduce", "workerDevices": workers, "numGpusPerWorker": 4, "allReduceSpec": spec, "numPacks": packs, "aggSmallGradsMaxBytes": 0, "aggSmallGradsMaxGroup": 10, "timeoutSeconds": null}),
                worker_gpus(2, 4),
            ));
        }
    }
    for bytes in [0, 100] {
        specs.push((json!({"kind": "CollectiveAllReduce", "numWorkers": 2, "numGpusPerWorker": 4, "allReduceMergeScope": 32, "timeoutSeconds": null, "bytesPerPack": bytes}), worker_gpus(2, 4)));
    }
    specs
}

/// Shapes of the variables of a batch: sizes that split unevenly into packs and subchunks.
const SHAPES: [&[usize]; 4] = [&[3, 5], &[7], &[2, 2, 3], &[1]];

/// Every check; returns how many result tensors were compared bit for bit.
pub fn check_every_op() -> usize {
    let mut compared = 0;
    let reduce_ops = ["SUM", "MEAN", "MAX", "MIN", "PRODUCT"];
    for (spec, devices) in op_specs() {
        for (dtype, ops) in [(DType::Float32, &reduce_ops[..]), (DType::Float16, &["SUM", "MEAN"][..]), (DType::BFloat16, &["MAX"][..]), (DType::Float64, &["MEAN"][..]), (DType::Int32, &["SUM", "MIN"][..]), (DType::Int64, &["PRODUCT"][..])] {
            for &op in ops {
                let what = format!("batchReduce {op} {} {spec}", dtype.name());
                // The fast path: every variable all-reduced onto its own devices.
                compared += compare(&what, &|t, _| all_reduce_request(&spec, op, &devices, &SHAPES, dtype, t));
            }
        }
        let what = format!("reduce to other devices {spec}");
        // The fallback (and CollectiveAllReduce's redistribution): a GPU of the values and a CPU.
        compared += compare(&what, &|t, _| {
            let per: Vec<Json> = devices.iter().enumerate().map(|(d, dev)| json!([dev, {"dense": t(dev, DType::Float32, &[4, 3], d)}])).collect();
            json!({"call": "reduce", "ops": spec, "op": "MEAN", "value": {"perDevice": per}, "destinations": {"devices": [devices[1], "/cpu:0"]}})
        });
        let what = format!("broadcast {spec}");
        compared += compare(&what, &|t, _| {
            json!({"call": "broadcast", "ops": spec, "value": {"dense": t(&devices[2], DType::Float32, &[5], 9)}, "destinations": {"devices": [devices[0], devices[5], "/cpu:1"]}})
        });
        for op in ["SUM", "MEAN", "MAX"] {
            let what = format!("IndexedSlices {op} {spec}");
            // Slices whose values are GPU tensors (indices in host memory), reduced onto GPUs and a CPU.
            compared += compare(&what, &|t, rows| {
                let per: Vec<Json> = devices
                    .iter()
                    .take(3)
                    .enumerate()
                    .map(|(d, dev)| json!([dev, {"sparse": {"values": t(dev, DType::Float32, &[2, 3], d), "indices": rows(&[d as i32, 4]), "denseShape": [6, 3]}}]))
                    .collect();
                json!({"call": "reduce", "ops": spec, "op": op, "value": {"perDevice": per}, "destinations": {"devices": [devices[0], "/cpu:0"]}})
            });
        }
    }
    // Recursive halving-doubling halves its lengths: its two-level spec on even ones.
    let workers: Vec<String> = (0..2).map(|w| format!("/job:worker/replica:0/task:{w}")).collect();
    let devices = worker_gpus(2, 4);
    for op in reduce_ops {
        let spec = json!({"kind": "MultiWorkerAllReduce", "workerDevices": workers, "numGpusPerWorker": 4, "allReduceSpec": "nccl/rechd", "numPacks": 0, "aggSmallGradsMaxBytes": 0, "aggSmallGradsMaxGroup": 10, "timeoutSeconds": null});
        let shapes: [&[usize]; 2] = [&[2, 3], &[8]];
        let n = compare(&format!("batchReduce {op} float32 nccl/rechd"), &|t, _| all_reduce_request(&spec, op, &devices, &shapes, DType::Float32, t));
        assert_eq!(n, shapes.len() * devices.len(), "nccl/rechd {op} reduces every variable");
        compared += n;
    }
    compared
}

/// A `batchReduce` with `op` of one variable of `dtype` per shape of `shapes` on each of
/// `devices`, onto those devices, made by `tensor`.
fn all_reduce_request(spec: &Json, op: &str, devices: &[String], shapes: &[&[usize]], dtype: DType, tensor: &mut dyn FnMut(&str, DType, &[usize], usize) -> Json) -> Json {
    let pairs: Vec<Json> = shapes
        .iter()
        .enumerate()
        .map(|(v, shape)| {
            let per: Vec<Json> = devices.iter().enumerate().map(|(d, dev)| json!([dev, {"dense": tensor(dev, dtype, shape, v * 31 + d)}])).collect();
            json!({"pair": [{"perDevice": per}, {"values": devices}]})
        })
        .collect();
    json!({"call": "batchReduce", "ops": spec, "op": op, "pairs": pairs})
}

/// Dispose semantics: a released handle is `ERR_DISPOSED` wherever it is used, releasing is
/// idempotent, and the store counts what it holds.
pub fn check_dispose() {
    let before = usage();
    let data: Vec<u8> = bytemuck::cast_slice(&[1.0f32, 2.0, 3.0]).to_vec();
    let h = upload("/gpu:1", DType::Float32, &[3], &data).expect("upload");
    assert_eq!(usage(), Usage { buffers: before.buffers + 1, bytes: before.bytes + 12 });
    assert_eq!(download(h, DType::Float32, &[3]).unwrap(), data, "a GPU tensor reads back bit for bit");
    release(h);
    release(h);
    assert_eq!(usage(), before);
    assert_eq!(download(h, DType::Float32, &[3]), Err("ERR_DISPOSED".to_string()));
    let (meta, _) = run(
        &json!({"call": "reduce", "ops": {"kind": "NcclAllReduce", "numPacks": 1}, "op": "SUM",
            "value": {"perDevice": [["/gpu:1", {"dense": {"gpu": h, "dtype": "float32", "shape": [3]}}]]}, "destinations": {"device": "/gpu:1"}}),
        &[],
    );
    assert_eq!(error_code(&meta).as_deref(), Some("ERR_DISPOSED"));
    assert_eq!(upload("/cpu:0", DType::Float32, &[3], &data).unwrap_err().0, "ERR_INVALID_DEVICE");
    assert_eq!(upload("/gpu:0", DType::Float32, &[2], &data).unwrap_err().0, "ERR_INVALID_TENSOR");
    assert_eq!(usage(), before);
}

/// The lines of the diagnostics of `request` (with GPU tensors) that contain `what`; releases
/// the results.
fn logged(request: &Json, what: &str) -> usize {
    let mut text = request.to_string();
    text.pop();
    text.push_str(",\"debug\":true}");
    let r = execute(&text, &[]);
    let meta: Json = serde_json::from_str(&r.meta).unwrap();
    assert!(error_code(&meta).is_none(), "{meta}");
    outputs(&meta, &r.buffers).expect("results");
    meta["log"].as_array().map_or(0, |lines| lines.iter().filter(|l| l.as_str().unwrap().contains(what)).count())
}

/// How many packs of the tensors that `request` reduces were all-reduced in device memory.
fn reduced_in_device_memory(request: &Json) -> usize {
    logged(request, "in device memory")
}

/// All-reduces of GPU tensors onto their own devices run in device memory, one plan per pack,
/// whatever the op (in one process) and its packing; other reductions stage through the host,
/// as do plans through host devices. Where the store has NCCL for the devices (`has_nccl`: each
/// device a GPU of its own), NCCL runs the packs of NCCL's ring, and the first level of the
/// `nccl/…` specs. (The results are checked against host tensors bit for bit by
/// [`check_every_op`], which runs the same ops.)
pub fn check_in_device_memory(has_nccl: bool) {
    let before = usage();
    let devices = gpus(8);
    let handles = std::cell::RefCell::new(Vec::new());
    let tensor = |device: &str, shape: &[usize], seed: usize| {
        let n: usize = shape.iter().product();
        let xs: Vec<f32> = (0..n).map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0).collect();
        let h = upload(device, DType::Float32, shape, bytemuck::cast_slice(&xs)).expect("upload");
        handles.borrow_mut().push(h);
        json!({"gpu": h, "dtype": "float32", "shape": shape})
    };
    // A pair per variable of SHAPES, each GPU tensor on its device, onto the same devices.
    let pairs_on = |devices: &[String]| -> Vec<Json> {
        SHAPES
            .iter()
            .enumerate()
            .map(|(v, shape)| {
                let per: Vec<Json> = devices.iter().enumerate().map(|(d, dev)| json!([dev, {"dense": tensor(dev, shape, v * 31 + d)}])).collect();
                json!({"pair": [{"perDevice": per}, {"values": devices}]})
            })
            .collect()
    };
    let pairs = pairs_on(&devices);
    let value = pairs[0]["pair"][0].clone();
    let batch = |ops: Json| json!({"call": "batchReduce", "ops": ops, "op": "SUM", "pairs": pairs});
    let nccl = |packs: i64| json!({"kind": "NcclAllReduce", "numPacks": packs});
    let all_reduce = |algorithm: &str, packs: i64, bytes: i64| json!({"kind": "AllReduce", "algorithm": algorithm, "numPacks": packs, "aggSmallGradsMaxBytes": bytes, "aggSmallGradsMaxGroup": 10});
    // One plan per pack: a pack per tensor without packing; packs of several tensors, and of
    // parts of one, concatenated on each device.
    assert_eq!(reduced_in_device_memory(&batch(nccl(0))), SHAPES.len());
    assert_eq!(logged(&batch(nccl(0)), "by NCCL in device memory"), if has_nccl { SHAPES.len() } else { 0 });
    assert_eq!(reduced_in_device_memory(&batch(all_reduce("hierarchical_copy", 0, 0))), SHAPES.len());
    assert_eq!(reduced_in_device_memory(&batch(nccl(1))), 1);
    assert_eq!(reduced_in_device_memory(&batch(all_reduce("nccl", 4, 0))), 4);
    // Small-tensor aggregation: runs of float32 tensors of at most 64 (48) bytes, the others alone.
    assert_eq!(reduced_in_device_memory(&batch(all_reduce("hierarchical_copy", 0, 64))), 1);
    assert_eq!(reduced_in_device_memory(&batch(all_reduce("nccl", 0, 48))), 2);
    let reduce = |ops: Json, destinations: Json| json!({"call": "reduce", "ops": ops, "op": "MEAN", "value": value, "destinations": destinations});
    let own = json!({"values": devices});
    assert_eq!(reduced_in_device_memory(&reduce(nccl(1), own.clone())), 1);
    assert_eq!(reduced_in_device_memory(&reduce(nccl(2), own.clone())), 2);
    // Reductions elsewhere than the values' own devices, and reduction to one device, stage.
    assert_eq!(reduced_in_device_memory(&reduce(nccl(0), json!({"device": "/gpu:0"}))), 0);
    assert_eq!(reduced_in_device_memory(&batch(json!({"kind": "ReductionToOneDevice", "reduceToDevice": null, "accumulation": null}))), 0);
    // A tensor keyed by a device other than its own is read where it is: through the host.
    let swapped = json!({"perDevice": [[devices[0], value["perDevice"][1][1]], [devices[1], value["perDevice"][0][1]]]});
    assert_eq!(reduced_in_device_memory(&json!({"call": "reduce", "ops": nccl(0), "op": "SUM", "value": swapped, "destinations": {"values": [devices[0], devices[1]]}})), 0);
    for h in handles.borrow_mut().drain(..) {
        release(h);
    }
    // The cross-worker ops in one process: a collective per variable (or per group of bytes),
    // and each spec's share of the variables (small ones by the first spec), packed or not.
    let workers: Vec<String> = (0..2).map(|w| format!("/job:worker/replica:0/task:{w}")).collect();
    let pairs = pairs_on(&worker_gpus(2, 4));
    let batch = |ops: Json| json!({"call": "batchReduce", "ops": ops, "op": "SUM", "pairs": pairs});
    let collective = |bytes: usize| json!({"kind": "CollectiveAllReduce", "numWorkers": 2, "numGpusPerWorker": 4, "allReduceMergeScope": 32, "timeoutSeconds": null, "bytesPerPack": bytes});
    assert_eq!(reduced_in_device_memory(&batch(collective(0))), SHAPES.len());
    assert_eq!(reduced_in_device_memory(&batch(collective(1000))), 1);
    let multi = |spec: Json, packs: i64| json!({"kind": "MultiWorkerAllReduce", "workerDevices": workers, "numGpusPerWorker": 4, "allReduceSpec": spec, "numPacks": packs, "aggSmallGradsMaxBytes": 0, "aggSmallGradsMaxGroup": 10, "timeoutSeconds": null});
    assert_eq!(reduced_in_device_memory(&batch(multi(json!("nccl/xring"), 0))), SHAPES.len());
    let first_level = "by NCCL within each of 2 workers, then the rest of the nccl/xring plan";
    assert_eq!(logged(&batch(multi(json!("nccl/xring"), 2)), first_level), if has_nccl { 2 } else { 0 });
    assert_eq!(logged(&batch(multi(json!("nccl"), 1)), "by NCCL in device memory"), 0, "the devices of two workers are not distinct GPUs");
    assert_eq!(reduced_in_device_memory(&batch(multi(json!([["psgpu", 2, 10], ["xring", 2, -1]]), 1))), 2);
    // Plans through devices other than the tensors' stage the whole request: the workers' CPUs
    // (`pscpu` gathers), and gathers on GPUs that hold none of them (`psgpu` over 4 GPUs per
    // worker, the tensors on 2).
    assert_eq!(reduced_in_device_memory(&batch(multi(json!([["pscpu", 2, 10], ["xring", 2, -1]]), 1))), 0);
    assert_eq!(reduced_in_device_memory(&batch(multi(json!("nccl/pscpu"), 0))), 0);
    let pairs = pairs_on(&worker_gpus(2, 2));
    assert_eq!(reduced_in_device_memory(&json!({"call": "batchReduce", "ops": multi(json!(["psgpu", 2, -1]), 0), "op": "SUM", "pairs": pairs})), 0);
    for h in handles.into_inner() {
        release(h);
    }
    assert_eq!(usage(), before, "every handle is released");
}
