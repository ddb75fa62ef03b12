//! Multi-worker all-reduce and its building blocks: all-reduce spec parsing (SPEC §5.9),
//! `group_device_names` (§1.10), auxiliary devices (§1.13), `_split_by_task` (§2.1), two-level
//! plans (§2.7: byte counts and results), `sum_grad_plan` (§1.12), `MultiWorkerAllReduce` and
//! `CollectiveAllReduce` through the `CrossDeviceOps` trait (§5.9, §5.10, §1.14, §1.15), the
//! packers (§1.4–§1.9, §5.7), `group_by_size` / `split_grads_by_size` (§1.11, §7) and topology
//! selection (§5.11).

mod common;

use common::*;
use crossdev_core::algo::two_level::{build_two_level, split_by_task, FirstLevel, UpperLevel};
use crossdev_core::ops::collective::group_key_id;
use crossdev_core::ops::{CollectiveAllReduce, CrossDeviceOps, MultiWorkerAllReduce, Packing};
use crossdev_core::pack::small_tensors::PackedRange;
use crossdev_core::pack::{extract_ranges, group_by_size, split_grads_by_size, AggregateSmallTensorPacker, ConcatAndSplitPacker};
use crossdev_core::plan::{host, Plan};
use crossdev_core::spec::{aux_devices, group_device_names, parse_spec, sum_grad_plan, AllReduceSpec, RawSpec, ALGORITHMS};
use crossdev_core::topology::{choose_all_reduce_algorithm, choose_the_best, has_dgx1_like_links, Choice, DGX1_LINKS};
use crossdev_core::values::{Destinations, Input, Mirrored, PerDevice};
use crossdev_core::{Buffer, DType, ErrorCode, ReduceOp, Tensor, Value};
use serde_json::json;
use std::borrow::Cow;
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const P0: &str = "/job:worker/replica:0/task:0";
const P1: &str = "/job:worker/replica:0/task:1";

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

fn prefixes(w: usize) -> Vec<String> {
    (0..w).map(|i| format!("/job:worker/replica:0/task:{i}")).collect()
}

/// Device `k` of worker `w` (`type` CPU or GPU).
fn wdev(w: usize, k: usize, ty: &str) -> String {
    format!("/job:worker/replica:0/task:{w}/device:{ty}:{k}")
}

/// Worker-major devices: `g` per worker for `w` workers.
fn worker_devices(w: usize, g: usize, ty: &str) -> Vec<String> {
    (0..w).flat_map(|i| (0..g).map(move |k| wdev(i, k, ty))).collect()
}

fn spec(alg: &str, shards: usize, limit: i64) -> AllReduceSpec {
    AllReduceSpec { alg: alg.to_string(), shards, limit }
}

fn parse(v: serde_json::Value) -> Result<Vec<AllReduceSpec>, crossdev_core::CrossDeviceError> {
    parse_spec(&RawSpec::from_json(&v))
}

/// Distinct int32 inputs (exact under any combination order).
fn int_inputs(n: usize, len: usize) -> Vec<Vec<i32>> {
    (0..n).map(|d| (0..len).map(|i| ((d as i32 + 1) * 7919 + i as i32 * 104_729) % 2001 - 1000).collect()).collect()
}

fn i32_buffers(xs: &[Vec<i32>]) -> Vec<Buffer<'static>> {
    xs.iter().map(|x| Buffer::I32(Cow::Owned(x.clone()))).collect()
}

/// The elementwise reduction of `xs` by `op` (wrapping; MEAN truncates).
fn int_reference(op: ReduceOp, xs: &[Vec<i32>]) -> Vec<i32> {
    let len = xs[0].len();
    (0..len)
        .map(|i| {
            let col = xs.iter().map(|x| x[i]);
            match op {
                ReduceOp::Sum => col.fold(0i32, i32::wrapping_add),
                ReduceOp::Mean => col.fold(0i32, i32::wrapping_add) / xs.len() as i32,
                ReduceOp::Max => col.max().unwrap(),
                ReduceOp::Min => col.min().unwrap(),
                ReduceOp::Product => col.fold(1i32, i32::wrapping_mul),
            }
        })
        .collect()
}

/// Runs `plan` on int32 inputs with every op and checks every output against the reference.
fn check_plan_results(plan: &Plan, what: &str) {
    let xs = int_inputs(plan.inputs, plan.elements);
    let bufs = i32_buffers(&xs);
    let refs: Vec<&Buffer> = bufs.iter().collect();
    for op in ReduceOp::ALL {
        let want = int_reference(op, &xs);
        let outs = host::run(plan, op, &refs).unwrap_or_else(|e| panic!("{what} {op:?}: {e:?}"));
        assert_eq!(outs.len(), plan.inputs, "{what}");
        for (d, out) in outs.iter().enumerate() {
            match out {
                Buffer::I32(v) => assert_eq!(v.as_ref(), want.as_slice(), "{what} {op:?} output {d}"),
                other => panic!("{what}: {:?}", other.dtype()),
            }
        }
    }
}

/// Bytes a plan's devices send and receive.
fn traffic(plan: &Plan) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let (mut sent, mut received) = (BTreeMap::new(), BTreeMap::new());
    for ((from, to), bytes) in plan.bytes_moved().by_link {
        *sent.entry(from).or_default() += bytes;
        *received.entry(to).or_default() += bytes;
    }
    (sent, received)
}

/// A PerDevice float32 value: on device `d`, `of(d)`.
fn pd_f32(devices: &[String], shape: &[usize], of: impl Fn(usize) -> Vec<f32>) -> PerDevice<Value<'static>> {
    PerDevice::new(devices.iter().enumerate().map(|(d, dev)| (dev.clone(), dense32(shape, &of(d))))).unwrap()
}

/// Gradient `v` of `shape` on device `d`: element i is 100·v + d + i/4 (exact in float32).
fn grad(v: usize, d: usize, shape: &[usize]) -> Vec<f32> {
    (0..shape.iter().product::<usize>()).map(|i| 100.0 * v as f32 + d as f32 + i as f32 / 4.0).collect()
}

fn grad_sum(v: usize, n: usize, shape: &[usize], mean: bool) -> Vec<f32> {
    (0..shape.iter().product::<usize>())
        .map(|i| {
            let s: f32 = (0..n).map(|d| 100.0 * v as f32 + d as f32 + i as f32 / 4.0).sum();
            if mean {
                s / n as f32
            } else {
                s
            }
        })
        .collect()
}

/// batch_reduce of gradients of `shapes` (every destination its own value) with SUM and MEAN.
fn check_gradient_batch(ops: &dyn CrossDeviceOps, devices: &[String], shapes: &[Vec<usize>], what: &str) {
    let values: Vec<PerDevice<Value>> = shapes.iter().enumerate().map(|(v, s)| pd_f32(devices, s, |d| grad(v, d, s))).collect();
    let pairs: Vec<(PerDevice<Value>, Destinations)> = values.iter().map(|v| (v.clone(), Destinations::Values(v.devices()))).collect();
    let canonical: Vec<String> = devices.iter().map(|d| canon(d)).collect();
    for (op, mean) in [(ReduceOp::Sum, false), (ReduceOp::Mean, true)] {
        let results = ops.batch_reduce(op, &pairs).unwrap_or_else(|e| panic!("{what} {op:?}: {e:?}"));
        assert_eq!(results.len(), shapes.len(), "{what}");
        for (v, (m, s)) in results.iter().zip(shapes).enumerate() {
            assert_mirrored_f32(m, &canonical, s, &grad_sum(v, devices.len(), s, mean));
        }
    }
}

fn shapes(xs: &[&[usize]]) -> Vec<Vec<usize>> {
    xs.iter().map(|s| s.to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// All-reduce specs (§5.9)
// ---------------------------------------------------------------------------------------------

#[test]
fn spec_strings_tuples_and_lists() {
    assert_eq!(parse(json!("xring")).unwrap(), vec![spec("xring", 1, -1)]);
    assert_eq!(parse(json!(["pscpu"])).unwrap(), vec![spec("pscpu", 1, -1)]);
    assert_eq!(parse(json!(["pscpu", 2])).unwrap(), vec![spec("pscpu", 2, -1)]);
    assert_eq!(parse(json!(["pscpu/pscpu", 2, -1])).unwrap(), vec![spec("pscpu/pscpu", 2, -1)]);
    assert_eq!(
        parse(json!([["pscpu/pscpu", 2, 100], ["xring", 2, -1]])).unwrap(),
        vec![spec("pscpu/pscpu", 2, 100), spec("xring", 2, -1)]
    );
    assert_eq!(parse(json!([["nccl"], ["psgpu", 4]])).unwrap(), vec![spec("nccl", 1, -1), spec("psgpu", 4, -1)]);
    for alg in ALGORITHMS {
        assert_eq!(parse(json!(alg)).unwrap(), vec![spec(alg, 1, -1)]);
    }
    assert_eq!(ALGORITHMS, ["nccl", "xring", "nccl/xring", "nccl/rechd", "nccl/pscpu", "pscpu/pscpu", "pscpu", "psgpu"]);
    // JSON has no tuples: an array of arrays is a list, any other array a tuple.
    assert!(matches!(RawSpec::from_json(&json!([["a"]])), RawSpec::List(..)));
    assert!(matches!(RawSpec::from_json(&json!(["a", 1])), RawSpec::Tuple(..)));
    assert!(matches!(RawSpec::from_json(&json!([])), RawSpec::Tuple(..)));
    assert!(matches!(RawSpec::from_json(&json!("a")), RawSpec::Name(..)));
    assert!(matches!(RawSpec::from_json(&json!(3)), RawSpec::Other(..)));
}

#[test]
fn spec_errors() {
    let (code, msg) = err(parse(json!("foo")));
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert_eq!(msg, "unsupported all_reduce alg: \"foo\"; expected one of nccl, xring, nccl/xring, nccl/rechd, nccl/pscpu, pscpu/pscpu, pscpu, psgpu");
    for bad in ["psgpu/psgpu", "xring/pscpu", "NCCL", "ring", ""] {
        assert!(err(parse(json!(bad))).1.starts_with("unsupported all_reduce alg: "), "{bad}");
        assert!(err(parse(json!([bad, 1, -1]))).1.starts_with("unsupported all_reduce alg: "), "{bad}");
    }
    assert!(err(parse(json!([["pscpu", 2, 10], ["bogus", 1, -1]]))).1.starts_with("unsupported all_reduce alg: \"bogus\""));
    assert_eq!(err(parse(json!(["pscpu", 1, 2, 3]))), (ErrorCode::InvalidArgument, "Too many elements in the all-reduce spec tuple: [\"pscpu\",1,2,3]".to_string()));
    assert_eq!(err(parse(json!([]))).1, "Too many elements in the all-reduce spec tuple: []");
    assert_eq!(err(parse(json!([["xring", 2, 10], ["pscpu", 1, -1, 0]]))).1, "Too many elements in the all-reduce spec tuple: [\"pscpu\",1,-1,0]");
    assert_eq!(err(parse(json!(5))).1, "A tuple is expected for all-reduce spec: 5");
    assert_eq!(err(parse(json!(null))).1, "A tuple is expected for all-reduce spec: null");
    // A list element that is not a tuple: the message formats the whole argument.
    let list = RawSpec::List(vec![RawSpec::Name("xring".into())], "[\"xring\"]".into());
    assert_eq!(err(parse_spec(&list)).1, "A tuple is expected for all-reduce spec: [\"xring\"]");
    // Elements of the wrong type.
    assert!(err(parse(json!([1, 2, -1]))).1.starts_with("An all-reduce spec tuple is (algorithm"));
    assert!(err(parse(json!(["xring", "2", -1]))).1.starts_with("An all-reduce spec tuple is (algorithm"));
    assert!(err(parse(json!(["xring", 2, 0.5]))).1.starts_with("An all-reduce spec tuple is (algorithm"));
}

#[test]
fn multi_worker_specs_must_end_with_a_negative_limit() {
    let msg = "all-reduce spec limits must ascend and the last must be -1, so that every gradient is reduced";
    assert_eq!(err(MultiWorkerAllReduce::new(prefixes(2), 2, vec![spec("pscpu", 2, 100)], Packing::None)).1, msg);
    assert_eq!(err(MultiWorkerAllReduce::new(prefixes(2), 2, vec![], Packing::None)).1, msg);
    assert!(MultiWorkerAllReduce::new(prefixes(2), 2, vec![spec("pscpu", 2, 100), spec("xring", 2, -1)], Packing::None).is_ok());
}

// ---------------------------------------------------------------------------------------------
// group_device_names (§1.10), aux devices (§1.13), split_by_task (§2.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn group_device_names_vectors() {
    let g = |ds: &[&str], k| group_device_names(&strings(ds), k).unwrap();
    assert_eq!(g(&["a", "b", "c"], 2), vec![strings(&["a", "c"]), strings(&["b", "a"])]);
    assert_eq!(g(&["a", "b", "c", "d"], 2), vec![strings(&["a", "c"]), strings(&["b", "d"])]);
    assert_eq!(g(&["a", "b", "c", "d"], 1), vec![strings(&["a"]), strings(&["b"]), strings(&["c"]), strings(&["d"])]);
    assert_eq!(g(&["a", "b", "c"], 3), vec![strings(&["a", "b", "c"])]);
    assert_eq!(g(&["a", "b", "c", "d", "e"], 2), vec![strings(&["a", "d"]), strings(&["b", "e"]), strings(&["c", "a"])]);
    assert_eq!(err(group_device_names(&strings(&["a", "b", "c"]), 4)), (ErrorCode::InvalidArgument, "only 3 devices, but group_size=4".to_string()));
    assert_eq!(err(group_device_names(&[], 1)).1, "only 0 devices, but group_size=1");
}

#[test]
fn aux_devices_follow_the_worked_examples() {
    let p = prefixes(2);
    let cpus = vec![format!("{P0}/cpu:0"), format!("{P1}/cpu:0")];
    for alg in ["pscpu", "pscpu/pscpu", "nccl/pscpu"] {
        assert_eq!(aux_devices(alg, &p, 2), cpus, "{alg}");
    }
    // psgpu: GPU index is the outer loop.
    let gpus = vec![format!("{P0}/gpu:0"), format!("{P1}/gpu:0"), format!("{P0}/gpu:1"), format!("{P1}/gpu:1")];
    assert_eq!(aux_devices("psgpu", &p, 2), gpus);
    assert_eq!(aux_devices("psgpu", &p, 0), Vec::<String>::new());
    for alg in ["nccl", "xring", "nccl/xring", "nccl/rechd"] {
        assert_eq!(aux_devices(alg, &p, 2), vec!["/job:localhost/cpu:0".to_string()], "{alg}");
    }
    // The groups the flat shuffles rotate through (§1.13 worked examples).
    assert_eq!(group_device_names(&cpus, 2).unwrap(), vec![cpus.clone()]);
    assert_eq!(group_device_names(&cpus, 1).unwrap(), vec![vec![cpus[0].clone()], vec![cpus[1].clone()]]);
    assert_eq!(
        group_device_names(&gpus, 2).unwrap(),
        vec![vec![gpus[0].clone(), gpus[2].clone()], vec![gpus[1].clone(), gpus[3].clone()]]
    );
}

#[test]
fn split_by_task_groups_in_order_of_first_appearance() {
    let devices = strings(&[
        "/job:worker/replica:0/task:1/device:GPU:0",
        "/job:worker/task:0/device:GPU:1",
        "/job:worker/replica:0/task:1/device:GPU:1",
        "/job:worker/task:0",
        "/job:worker/replica:1/task:0/device:GPU:0",
        "/job:ps/task:0/cpu:0",
        "/job:worker/task:1",
    ]);
    assert_eq!(split_by_task(&devices).unwrap(), vec![vec![0, 2, 6], vec![1, 3], vec![4], vec![5]]);
    // Local devices all belong to (localhost, 0, 0).
    assert_eq!(split_by_task(&strings(&["/cpu:0", "/gpu:1", "/job:localhost/replica:0/task:0/device:CPU:3"])).unwrap(), vec![vec![0, 1, 2]]);
    assert_eq!(split_by_task(&[]).unwrap(), Vec::<Vec<usize>>::new());
    assert_eq!(err(split_by_task(&strings(&["/cpu:0", "/bogus:1"]))).0, ErrorCode::InvalidDevice);
}

// ---------------------------------------------------------------------------------------------
// Two-level plans (§2.7) and sum_grad_plan (§1.12)
// ---------------------------------------------------------------------------------------------

#[test]
fn two_level_plans_give_exact_results() {
    for (w, g) in [(1, 1), (1, 3), (2, 1), (2, 2), (2, 3), (3, 2), (4, 2)] {
        let devices = worker_devices(w, g, "CPU");
        let gather: Vec<String> = prefixes(w).iter().map(|p| format!("{p}/cpu:0")).collect();
        for len in [0usize, 1, 7, 8, 24] {
            let mut plans = vec![
                build_two_level(&devices, len, DType::Int32, &FirstLevel::Nccl, &UpperLevel::Ring(1)).unwrap(),
                build_two_level(&devices, len, DType::Int32, &FirstLevel::Nccl, &UpperLevel::Shuffle(gather.clone())).unwrap(),
                build_two_level(&devices, len, DType::Int32, &FirstLevel::Nccl, &UpperLevel::Shuffle(strings(&["/job:ps/task:0/cpu:0"]))).unwrap(),
                build_two_level(&devices, len, DType::Int32, &FirstLevel::Gather(gather.clone()), &UpperLevel::Shuffle(gather.clone())).unwrap(),
                build_two_level(&devices, len, DType::Int32, &FirstLevel::Gather(gather.clone()), &UpperLevel::Shuffle(gather[..1].to_vec())).unwrap(),
                build_two_level(&devices, len, DType::Int32, &FirstLevel::Gather(gather.clone()), &UpperLevel::Ring(1)).unwrap(),
            ];
            if w.is_power_of_two() && len % w == 0 {
                plans.push(build_two_level(&devices, len, DType::Int32, &FirstLevel::Nccl, &UpperLevel::RecursiveHd).unwrap());
            }
            for plan in &plans {
                plan.validate().unwrap();
                assert_eq!(plan.inputs, w * g);
                check_plan_results(plan, &format!("{} {w}×{g} len={len}", plan.algorithm));
            }
        }
    }
}

#[test]
fn two_level_plan_names_and_errors() {
    let devices = worker_devices(2, 2, "CPU");
    let gather = strings(&["/job:worker/task:0/cpu:0", "/job:worker/task:1/cpu:0"]);
    let name = |f: &FirstLevel, u: &UpperLevel| build_two_level(&devices, 8, DType::Float32, f, u).unwrap().algorithm;
    assert_eq!(name(&FirstLevel::Nccl, &UpperLevel::Ring(1)), "nccl/xring");
    assert_eq!(name(&FirstLevel::Nccl, &UpperLevel::RecursiveHd), "nccl/rechd");
    assert_eq!(name(&FirstLevel::Nccl, &UpperLevel::Shuffle(gather.clone())), "nccl/pscpu");
    assert_eq!(name(&FirstLevel::Gather(gather.clone()), &UpperLevel::Shuffle(gather.clone())), "pscpu/pscpu");
    assert_eq!(name(&FirstLevel::Gather(gather.clone()), &UpperLevel::Ring(1)), "pscpu/xring");
    let e = err(build_two_level(&devices, 8, DType::Float32, &FirstLevel::Gather(gather[..1].to_vec()), &UpperLevel::Shuffle(gather.clone())));
    assert_eq!(e, (ErrorCode::InvalidArgument, "For shuffle hybrid, gather_devices must contain one device per worker. ".to_string()));
    assert_eq!(err(build_two_level(&devices, 8, DType::Float32, &FirstLevel::Nccl, &UpperLevel::Ring(2))).1, "num_subchunks 2 must be <= num_gpus 1");
    assert_eq!(
        err(build_two_level(&worker_devices(3, 1, "CPU"), 9, DType::Float32, &FirstLevel::Nccl, &UpperLevel::RecursiveHd)).1,
        "num_devices must be a power of 2"
    );
    assert_eq!(
        err(build_two_level(&devices, 7, DType::Float32, &FirstLevel::Nccl, &UpperLevel::RecursiveHd)).1,
        "recursive halving-doubling over 2 devices needs a length divisible by 2, got 7"
    );
    // One worker: the upper level is skipped (`_reduce_non_singleton`), whatever it is.
    let one = worker_devices(1, 3, "CPU");
    assert!(build_two_level(&one, 7, DType::Float32, &FirstLevel::Nccl, &UpperLevel::Ring(5)).is_ok());
    assert!(build_two_level(&one, 7, DType::Float32, &FirstLevel::Nccl, &UpperLevel::RecursiveHd).is_ok());
}

#[test]
fn two_level_byte_counts() {
    for dtype in [DType::Float32, DType::Float64, DType::Float16] {
        let size = dtype.size() as u64;
        for (w, g) in [(2, 1), (2, 2), (2, 4), (3, 2), (4, 3)] {
            let (w64, g64) = (w as u64, g as u64);
            let len = 24usize;
            let l = len as u64;
            // GPU inputs, gathers on each worker's CPU: none of the gathers is an input.
            let devices = worker_devices(w, g, "GPU");
            let cpus: Vec<String> = prefixes(w).iter().map(|p| format!("{p}/cpu:0")).collect();
            for s in 1..=w.min(2) {
                // pscpu/pscpu: every device sends L to its worker's CPU (level 1) and gets L back
                // (level 3); the W partial sums, on the CPUs, shuffle through s of them:
                // (W-1)·L in and (W-1)·L out.
                let plan = build_two_level(&devices, len, dtype, &FirstLevel::Gather(cpus.clone()), &UpperLevel::Shuffle(cpus[..s].to_vec())).unwrap();
                assert_eq!(plan.bytes_moved().total, (2 * w64 * g64 + 2 * (w64 - 1)) * l * size, "pscpu/pscpu W={w} G={g} S={s}");
                let (sent, received) = traffic(&plan);
                for d in &devices {
                    assert_eq!(sent[&canon(d)], l * size);
                    assert_eq!(received[&canon(d)], l * size);
                }
            }
            // nccl/…: a full ring inside each worker (2(G-1)·L per worker), then the upper level
            // between the workers' first devices, then (G-1)·L per worker back out.
            let first = w64 * 2 * (g64 - 1) * l;
            let last = w64 * (g64 - 1) * l;
            let ring = build_two_level(&devices, len, dtype, &FirstLevel::Nccl, &UpperLevel::Ring(1)).unwrap();
            assert_eq!(ring.bytes_moved().total, (first + 2 * (w64 - 1) * l + last) * size, "nccl/xring W={w} G={g}");
            let ps = strings(&["/job:ps/task:0/cpu:0", "/job:ps/task:1/cpu:0"]);
            let shuffle = build_two_level(&devices, len, dtype, &FirstLevel::Nccl, &UpperLevel::Shuffle(ps)).unwrap();
            assert_eq!(shuffle.bytes_moved().total, (first + 2 * w64 * l + last) * size, "nccl/pscpu W={w} G={g}");
            if w.is_power_of_two() {
                let rechd = build_two_level(&devices, len, dtype, &FirstLevel::Nccl, &UpperLevel::RecursiveHd).unwrap();
                assert_eq!(rechd.bytes_moved().total, (first + 2 * (w64 * l - l) + last) * size, "nccl/rechd W={w} G={g}");
            }
        }
    }
}

#[test]
fn sum_grad_plan_builds_every_algorithm() {
    let p = prefixes(2);
    let devices = worker_devices(2, 2, "CPU");
    let gpus = [0usize, 1];
    for alg in ALGORITHMS {
        for shards in [1usize, 2] {
            let aux = aux_devices(alg, &p, 2);
            let is_shuffle = alg.contains("pscpu") || alg.contains("psgpu");
            let groups = group_device_names(&aux, if is_shuffle { shards } else { 1 }).unwrap();
            let aux_here = if alg.contains('/') { aux.clone() } else { groups[0].clone() };
            let built = sum_grad_plan(&devices, 12, DType::Int32, alg, 2, &gpus, &aux_here, shards);
            if alg == "nccl/xring" && shards == 2 {
                assert_eq!(err(built).1, "num_subchunks 2 must be <= num_gpus 1");
                continue;
            }
            let plan = built.unwrap_or_else(|e| panic!("{alg} shards={shards}: {e:?}"));
            plan.validate().unwrap();
            check_plan_results(&plan, &format!("{alg} shards={shards}"));
            // Flat shuffles gather on their group's devices.
            if alg == "pscpu" || alg == "psgpu" {
                for g in &aux_here {
                    assert!(plan.devices.contains(&canon(g)), "{alg}: {g} among {:?}", plan.devices);
                }
            }
        }
    }
    // pscpu with 1 shard: variables alternate between the two CPUs (§1.13).
    let groups = group_device_names(&aux_devices("pscpu", &p, 2), 1).unwrap();
    for (i, group) in groups.iter().enumerate() {
        let plan = sum_grad_plan(&worker_devices(2, 2, "GPU"), 8, DType::Float32, "pscpu", 2, &gpus, group, 1).unwrap();
        let (_, received) = traffic(&plan);
        assert_eq!(received[&canon(&format!("{}/cpu:0", p[i]))], 4 * 8 * 4, "group {i}");
    }
    // xring needs as many devices as workers × GPUs, and GPUs at all.
    assert!(err(sum_grad_plan(&worker_devices(2, 1, "CPU"), 8, DType::Float32, "xring", 2, &[], &[], 1)).1.starts_with("xring needs"));
    assert_eq!(err(sum_grad_plan(&devices, 8, DType::Float32, "xring", 2, &gpus, &[], 3)).1, "num_subchunks 3 must be <= num_gpus 2");
    assert!(err(sum_grad_plan(&devices, 8, DType::Float32, "bogus", 2, &gpus, &[], 1)).1.starts_with("unsupported all_reduce alg: \"bogus\""));
}

// ---------------------------------------------------------------------------------------------
// MultiWorkerAllReduce through CrossDeviceOps (§5.9, Part A.3)
// ---------------------------------------------------------------------------------------------

/// §6.1's reduce/batch_reduce assertions (MEAN and SUM of values d and d+1) for one op.
fn reduction_checks(ops: &dyn CrossDeviceOps, devices: &[String], what: &str) {
    let n = devices.len();
    let mean = (n as f32 - 1.0) / 2.0;
    let canonical: Vec<String> = devices.iter().map(|d| canon(d)).collect();
    let pd = pd_f32(devices, &[], |d| vec![d as f32]);
    let pd2 = pd_f32(devices, &[], |d| vec![d as f32 + 1.0]);
    let dests: Vec<(Destinations, Vec<String>)> = vec![
        (Destinations::Values(pd.devices()), canonical.clone()),
        (Destinations::Values(vec![canon("/device:CPU:0")]), vec![canon("/device:CPU:0")]),
        (Destinations::Device("/device:CPU:0".into()), vec![canon("/device:CPU:0")]),
        (Destinations::Devices(devices.to_vec()), canonical.clone()),
    ];
    for (dest, want) in &dests {
        for (op, factor) in [(ReduceOp::Mean, 1.0), (ReduceOp::Sum, n as f32)] {
            let m = ops.reduce(op, Input::PerDevice(pd.clone()), dest).unwrap_or_else(|e| panic!("{what} {op:?}: {e:?}"));
            assert_mirrored_f32(&m, want, &[], &[mean * factor]);
            let m = ops.reduce(op, Input::PerDevice(pd2.clone()), dest).unwrap();
            assert_mirrored_f32(&m, want, &[], &[(mean + 1.0) * factor]);
        }
    }
    for (d1, w1) in &dests {
        for (d2, w2) in &dests {
            let pairs = vec![(pd.clone(), d1.clone()), (pd2.clone(), d2.clone())];
            let r = ops.batch_reduce(ReduceOp::Sum, &pairs).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_mirrored_f32(&r[0], w1, &[], &[mean * n as f32]);
            assert_mirrored_f32(&r[1], w2, &[], &[(mean + 1.0) * n as f32]);
        }
    }
}

fn seed_configs() -> Vec<(&'static str, Vec<AllReduceSpec>, Packing)> {
    vec![
        ("pscpu/pscpu, no packing", vec![spec("pscpu/pscpu", 2, -1)], Packing::new(0, 0, 0).unwrap()),
        ("pscpu/pscpu, 1 pack", vec![spec("pscpu/pscpu", 2, -1)], Packing::new(1, 0, 0).unwrap()),
        ("pscpu/pscpu, small-tensor packing", vec![spec("pscpu/pscpu", 2, -1)], Packing::new(0, 100, 10).unwrap()),
        ("[pscpu/pscpu ≤ 100, xring]", vec![spec("pscpu/pscpu", 2, 100), spec("xring", 2, -1)], Packing::None),
    ]
}

#[test]
fn multi_worker_seed_matrix() {
    for (g, devices) in [(0, worker_devices(2, 1, "CPU")), (1, worker_devices(2, 1, "CPU")), (2, worker_devices(2, 2, "CPU"))] {
        for (name, specs, packing) in seed_configs() {
            let ops = MultiWorkerAllReduce::new(prefixes(2), g, specs, packing).unwrap();
            reduction_checks(&ops, &devices, &format!("{name}, G={g}"));
        }
    }
}

#[test]
fn multi_worker_every_algorithm_keeps_input_order_and_device_labels() {
    let small_and_large = shapes(&[&[], &[3], &[0], &[2, 2], &[150], &[1], &[10, 11], &[100], &[101], &[5]]);
    let even = shapes(&[&[2], &[4], &[0], &[2, 2], &[150], &[10, 10], &[100], &[102], &[6]]);
    let worker_major = worker_devices(2, 2, "CPU");
    let shuffled = vec![wdev(1, 1, "CPU"), wdev(0, 0, "CPU"), wdev(1, 0, "CPU"), wdev(0, 1, "CPU")];
    let mut configs: Vec<Vec<AllReduceSpec>> = ALGORITHMS.iter().map(|a| vec![spec(a, 1, -1)]).collect();
    configs.extend(ALGORITHMS.iter().filter(|a| **a != "nccl/xring").map(|a| vec![spec(a, 2, -1)]));
    configs.push(vec![spec("pscpu/pscpu", 2, 100), spec("xring", 2, -1)]);
    configs.push(vec![spec("pscpu", 2, 8), spec("nccl/pscpu", 1, 20), spec("xring", 1, -1)]);
    for specs in configs {
        let rechd = specs.iter().any(|s| s.alg.contains("rechd"));
        let grads = if rechd { &even } else { &small_and_large };
        for packing in [Packing::None, Packing::new(1, 0, 0).unwrap(), Packing::new(3, 0, 0).unwrap(), Packing::new(0, 100, 10).unwrap()] {
            let what = format!("{specs:?} {packing:?}");
            let ops = MultiWorkerAllReduce::new(prefixes(2), 2, specs.clone(), packing).unwrap();
            check_gradient_batch(&ops, &worker_major, grads, &what);
            check_gradient_batch(&ops, &shuffled, grads, &format!("{what}, shuffled devices"));
        }
    }
}

#[test]
fn multi_worker_cpu_only_workers() {
    let devices = worker_devices(2, 1, "CPU");
    let grads = shapes(&[&[], &[3], &[150], &[2, 2], &[101]]);
    for specs in [vec![spec("pscpu/pscpu", 2, -1)], vec![spec("pscpu/pscpu", 1, -1)], vec![spec("pscpu", 2, -1)], vec![spec("nccl/pscpu", 1, -1)], vec![spec("nccl", 1, -1)]] {
        let ops = MultiWorkerAllReduce::new(prefixes(2), 0, specs.clone(), Packing::None).unwrap();
        check_gradient_batch(&ops, &devices, &grads, &format!("{specs:?}"));
    }
    // xring has no GPUs to build its ring from.
    let ops = MultiWorkerAllReduce::new(prefixes(2), 0, vec![spec("xring", 1, -1)], Packing::None).unwrap();
    let pd = pd_f32(&devices, &[4], |d| vec![d as f32; 4]);
    assert!(err(ops.reduce(ReduceOp::Sum, Input::PerDevice(pd.clone()), &Destinations::Values(pd.devices()))).1.starts_with("xring needs"));
}

#[test]
fn multi_worker_other_ops_and_sparse_values() {
    let devices = worker_devices(2, 2, "CPU");
    let ops = MultiWorkerAllReduce::new(prefixes(2), 2, vec![spec("pscpu/pscpu", 2, -1)], Packing::None).unwrap();
    let pd = pd_f32(&devices, &[2], |d| vec![d as f32 + 1.0, -(d as f32) - 1.0]);
    let canonical: Vec<String> = devices.iter().map(|d| canon(d)).collect();
    for (op, want) in [(ReduceOp::Max, [4.0, -1.0]), (ReduceOp::Min, [1.0, -4.0]), (ReduceOp::Product, [24.0, 24.0])] {
        let m = ops.reduce(op, Input::PerDevice(pd.clone()), &Destinations::Values(pd.devices())).unwrap();
        assert_mirrored_f32(&m, &canonical, &[2], &want);
    }
    // IndexedSlices take the reduction-to-one-device path.
    let sparse = PerDevice::new(devices.iter().map(|d| (d.clone(), Value::Sparse(is32(&[1.0, 2.0], 2, &[1], &[3, 2]))))).unwrap();
    let m = ops.reduce(ReduceOp::Sum, Input::PerDevice(sparse.clone()), &Destinations::Values(sparse.devices())).unwrap();
    assert_mirrored_f32(&m, &canonical, &[3, 2], &[0.0, 0.0, 4.0, 8.0, 0.0, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// CollectiveAllReduce (§5.10, §1.14, §1.15)
// ---------------------------------------------------------------------------------------------

fn collective_devices(g: usize) -> Vec<String> {
    (0..3)
        .flat_map(|i| {
            if g == 0 {
                vec![format!("/job:worker/task:{i}")]
            } else {
                (0..g).map(|k| format!("/job:worker/task:{i}/device:GPU:{k}")).collect()
            }
        })
        .collect()
}

#[test]
fn collective_reduces_across_three_workers() {
    for g in [0usize, 1, 2] {
        let devices = collective_devices(g);
        let n = devices.len();
        let ops = CollectiveAllReduce { num_workers: 3, num_gpus_per_worker: g, all_reduce_merge_scope: 32, timeout: None, bytes_per_pack: 0 };
        let canonical: Vec<String> = devices.iter().map(|d| canon(d)).collect();
        let pd = pd_f32(&devices, &[1], |d| vec![d as f32]);
        let pd2 = pd_f32(&devices, &[1], |d| vec![d as f32 + 1.0]);
        let mean = (n as f32 - 1.0) / 2.0;
        let others = vec![canonical[1].clone(), canon("/cpu:5")];
        let dests: Vec<(Destinations, Vec<String>)> = vec![
            (Destinations::Values(pd.devices()), canonical.clone()),
            (Destinations::Values(vec![canon("/device:CPU:0")]), vec![canon("/device:CPU:0")]),
            (Destinations::Device("/device:CPU:0".into()), vec![canon("/device:CPU:0")]),
            (Destinations::Devices(devices.clone()), canonical.clone()),
            (Destinations::Devices(vec![devices[1].clone(), "/cpu:5".into()]), others),
        ];
        for (dest, want) in &dests {
            for (op, factor) in [(ReduceOp::Mean, 1.0), (ReduceOp::Sum, n as f32)] {
                let m = ops.reduce(op, Input::PerDevice(pd.clone()), dest).unwrap();
                assert_mirrored_f32(&m, want, &[1], &[mean * factor]);
                let m = ops.reduce(op, Input::PerDevice(pd2.clone()), dest).unwrap();
                assert_mirrored_f32(&m, want, &[1], &[(mean + 1.0) * factor]);
            }
        }
        for (d1, w1) in &dests {
            for (d2, w2) in &dests {
                let r = ops.batch_reduce(ReduceOp::Mean, &[(pd.clone(), d1.clone()), (pd2.clone(), d2.clone())]).unwrap();
                assert_mirrored_f32(&r[0], w1, &[1], &[mean]);
                assert_mirrored_f32(&r[1], w2, &[1], &[mean + 1.0]);
            }
        }
        for scope in [1, 2, 32] {
            let ops = CollectiveAllReduce { num_workers: 3, num_gpus_per_worker: g, all_reduce_merge_scope: scope, timeout: None, bytes_per_pack: 0 };
            check_gradient_batch(&ops, &devices, &shapes(&[&[], &[3], &[0], &[150], &[2, 2]]), &format!("g={g} scope={scope}"));
        }
        // Packed by size (every value alone, a few packs, one pack): the same sums.
        for bytes_per_pack in [1, 16, 100, 1 << 20] {
            let ops = CollectiveAllReduce { num_workers: 3, num_gpus_per_worker: g, all_reduce_merge_scope: 32, timeout: None, bytes_per_pack };
            check_gradient_batch(&ops, &devices, &shapes(&[&[], &[3], &[0], &[150], &[2, 2], &[7, 3]]), &format!("g={g} bytes_per_pack={bytes_per_pack}"));
        }
    }
}

#[test]
fn collective_errors() {
    let ops = CollectiveAllReduce { num_workers: 3, num_gpus_per_worker: 0, all_reduce_merge_scope: 32, timeout: None, bytes_per_pack: 0 };
    let devices = collective_devices(0);
    let sparse = PerDevice::new(devices.iter().map(|d| (d.clone(), Value::Sparse(is32(&[1.0, 2.0], 2, &[1], &[3, 2]))))).unwrap();
    let msg = "`IndexSlices` is not supported for Collective All-Reduce.";
    assert_eq!(err(ops.reduce(ReduceOp::Sum, Input::PerDevice(sparse.clone()), &Destinations::Values(sparse.devices()))), (ErrorCode::InvalidInput, msg.to_string()));
    assert_eq!(err(ops.reduce(ReduceOp::Mean, Input::PerDevice(sparse.clone()), &Destinations::Device("/cpu:0".into()))).1, msg);
    let dense = pd_f32(&devices, &[1], |d| vec![d as f32]);
    let pairs = vec![(dense.clone(), Destinations::Values(dense.devices())), (sparse.clone(), Destinations::Values(sparse.devices()))];
    assert_eq!(err(ops.batch_reduce(ReduceOp::Sum, &pairs)).1, msg);
    // One local device and one worker: a group of 1.
    let single = CollectiveAllReduce { num_workers: 1, num_gpus_per_worker: 0, all_reduce_merge_scope: 32, timeout: None, bytes_per_pack: 0 };
    let one = pd_f32(&strings(&["/cpu:0"]), &[1], |_| vec![1.0]);
    let msg = "num_workers * len(input_tensors) must be 2 or greater";
    assert_eq!(err(single.reduce(ReduceOp::Sum, Input::PerDevice(one.clone()), &Destinations::Device("/cpu:0".into()))), (ErrorCode::InvalidArgument, msg.to_string()));
    assert_eq!(err(single.batch_reduce(ReduceOp::Sum, &[(one.clone(), Destinations::Values(one.devices()))])).1, msg);
    // Devices of fewer workers than the op was made for.
    let two = pd_f32(&strings(&["/job:worker/task:0", "/job:worker/task:1"]), &[1], |d| vec![d as f32]);
    assert!(err(ops.reduce(ReduceOp::Sum, Input::PerDevice(two.clone()), &Destinations::Values(two.devices()))).1.starts_with("CollectiveAllReduce over 3 workers"));
    // Two local GPUs, one worker: fine.
    let local = CollectiveAllReduce { num_workers: 1, num_gpus_per_worker: 2, all_reduce_merge_scope: 32, timeout: None, bytes_per_pack: 0 };
    let gpus = strings(&["/device:GPU:0", "/device:GPU:1"]);
    reduction_checks(&local, &gpus, "local collective");
}

#[test]
fn collective_group_key_ids() {
    // §1.14: job and task dropped, sorted.
    assert_eq!(group_key_id(&strings(&["/job:w/task:1/device:GPU:1", "/job:w/task:1/device:GPU:0"])).unwrap(), "GPU:0,GPU:1");
    assert_eq!(group_key_id(&strings(&["/job:worker/task:2/device:CPU:0", "/job:worker/task:0/device:GPU:3"])).unwrap(), "CPU:0,GPU:3");
    assert_eq!(group_key_id(&strings(&["/gpu:1"])).unwrap(), "GPU:1");
    assert_eq!(err(group_key_id(&strings(&["/job:w/task:1"]))).0, ErrorCode::InvalidDevice);
}

// ---------------------------------------------------------------------------------------------
// Packers (§1.4–§1.9, §5.7) and grouping by size (§1.11, §7)
// ---------------------------------------------------------------------------------------------

#[test]
fn extract_ranges_vectors() {
    let r = |xs: &[usize], limit| extract_ranges(xs, limit);
    assert_eq!(r(&(0..10).collect::<Vec<_>>(), 2), (vec![(0, 3), (4, 7), (8, 9)], vec![]));
    assert_eq!(r(&[1, 3, 4, 6, 7, 8, 9], 32), (vec![(3, 4), (6, 9)], vec![1]));
    assert_eq!(r(&[1, 2, 3, 4, 6, 7, 8, 9], 32), (vec![(1, 4), (6, 9)], vec![]));
    assert_eq!(r(&[1, 3, 4, 6, 7, 9], 32), (vec![(3, 4), (6, 7)], vec![1, 9]));
    assert_eq!(r(&[1, 3, 6, 9], 32), (vec![], vec![1, 3, 6, 9]));
    assert_eq!(r(&[], 32), (vec![], vec![]));
    assert_eq!(r(&(0..40).collect::<Vec<_>>(), 32), (vec![(0, 33), (34, 39)], vec![]));
}

/// The four gradients of §1.6–§1.8 on device `d`: [4], [4], [3,3], [3,3], elements 100·d + i.
fn four_grads(d: usize) -> Vec<Tensor<'static>> {
    let mut next = 0f32;
    let mut make = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| {
            next += 1.0;
            100.0 * d as f32 + next - 1.0
        }).collect();
        t32(shape, &data)
    };
    vec![make(&[4]), make(&[4]), make(&[3, 3]), make(&[3, 3])]
}

fn flat(t: &Tensor) -> Vec<f32> {
    match &t.data {
        Buffer::F32(v) => v.to_vec(),
        other => panic!("{:?}", other.dtype()),
    }
}

#[test]
fn small_tensor_packer_vectors() {
    let towers: Vec<Vec<Tensor>> = (0..3).map(four_grads).collect();
    // max_bytes 12: no two adjacent small tensors ([4] float32 is 16 bytes): nothing packed.
    let p = AggregateSmallTensorPacker::new(12, 10).unwrap();
    let (out, packing) = p.pack(&towers).unwrap();
    assert!(packing.is_none());
    assert_eq!(out.len(), 3);
    for (d, list) in out.iter().enumerate() {
        assert_eq!(list.iter().map(|t| t.shape.clone()).collect::<Vec<_>>(), vec![vec![4], vec![4], vec![3, 3], vec![3, 3]]);
        assert_eq!(list.iter().map(flat).collect::<Vec<_>>(), towers[d].iter().map(flat).collect::<Vec<_>>());
    }
    // max_bytes 16: the two [4] are packed into one 8-element tensor, first.
    let p = AggregateSmallTensorPacker::new(16, 10).unwrap();
    let (out, packing) = p.pack(&towers).unwrap();
    let packing = packing.unwrap();
    assert_eq!(packing, vec![PackedRange { first: 0, last: 1, shapes: vec![vec![vec![4], vec![4]]; 3] }]);
    for (d, list) in out.iter().enumerate() {
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].shape, vec![8]);
        assert_eq!(flat(&list[0]), [flat(&towers[d][0]), flat(&towers[d][1])].concat());
        assert_eq!(list[1].shape, vec![3, 3]);
        assert_eq!(flat(&list[2]), flat(&towers[d][3]));
    }
    let back = p.unpack(&out, Some(&packing)).unwrap();
    for (d, list) in back.iter().enumerate() {
        assert_eq!(list.iter().map(|t| (t.shape.clone(), flat(t))).collect::<Vec<_>>(), towers[d].iter().map(|t| (t.shape.clone(), flat(t))).collect::<Vec<_>>());
    }
    // max_bytes 256: everything in one 26-element pack.
    let p = AggregateSmallTensorPacker::new(256, 10).unwrap();
    let (out, packing) = p.pack(&towers).unwrap();
    let packing = packing.unwrap();
    assert_eq!(packing.len(), 1);
    assert_eq!((packing[0].first, packing[0].last), (0, 3));
    assert_eq!(packing[0].shapes[2], vec![vec![4], vec![4], vec![3, 3], vec![3, 3]]);
    for list in &out {
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].shape, vec![26]);
    }
    assert_eq!(p.unpack(&out, Some(&packing)).unwrap()[1].iter().map(flat).collect::<Vec<_>>(), towers[1].iter().map(flat).collect::<Vec<_>>());
    // max_group limits a run to max_group + 2 tensors: 1 → runs of up to 3.
    let many: Vec<Vec<Tensor>> = (0..2).map(|d| (0..7).map(|i| t32(&[1], &[(10 * d + i) as f32])).collect()).collect();
    let p = AggregateSmallTensorPacker::new(4, 1).unwrap();
    let (out, packing) = p.pack(&many).unwrap();
    let packing = packing.unwrap();
    assert_eq!(packing.iter().map(|r| (r.first, r.last)).collect::<Vec<_>>(), vec![(0, 2), (3, 5)]);
    assert_eq!(out[1].iter().map(flat).collect::<Vec<_>>(), vec![vec![10.0, 11.0, 12.0], vec![13.0, 14.0, 15.0], vec![16.0]]);
    assert_eq!(p.unpack(&out, Some(&packing)).unwrap()[1].iter().map(flat).collect::<Vec<_>>(), (0..7).map(|i| vec![10.0 + i as f32]).collect::<Vec<_>>());
}

#[test]
fn small_tensor_packer_only_packs_float32_and_keeps_isolated_tensors() {
    // float32 [1], int32 [1], float32 [1], float32 [1], float64 [1]: only 2..=3 is a run of small
    // float32 tensors; 0 is isolated, 1 and 4 are not float32.
    let device = |d: i32| -> Vec<Tensor<'static>> {
        vec![t32(&[1], &[d as f32]), ti32(&[1], &[d]), t32(&[1], &[d as f32 + 0.5]), t32(&[1], &[d as f32 + 0.25]), t64(&[1], &[d as f64])]
    };
    let towers = vec![device(1), device(2)];
    let p = AggregateSmallTensorPacker::new(16, 10).unwrap();
    let (out, packing) = p.pack(&towers).unwrap();
    let packing = packing.unwrap();
    assert_eq!(packing.iter().map(|r| (r.first, r.last)).collect::<Vec<_>>(), vec![(2, 3)]);
    let dtypes: Vec<DType> = out[0].iter().map(|t| t.dtype()).collect();
    assert_eq!(dtypes, vec![DType::Float32, DType::Float32, DType::Int32, DType::Float64]);
    assert_eq!(flat(&out[1][0]), vec![2.5, 2.25]);
    assert_eq!(flat(&out[1][1]), vec![2.0]);
    let back = p.unpack(&out, Some(&packing)).unwrap();
    assert_eq!(back[1], towers[1]);
    assert_eq!(back[0], towers[0]);
}

#[test]
fn unpack_small_tensors_restores_original_positions() {
    // §1.9: two ranges, range(2) of [4],[4] and range(3, 5) of [3,3],[3,3]; unpacked tensors at 2 and 5.
    let device = |d: usize| -> Vec<Tensor<'static>> {
        let base = 100.0 * d as f32;
        vec![
            t32(&[8], &(0..8).map(|i| base + i as f32).collect::<Vec<_>>()),
            t32(&[18], &(0..18).map(|i| base + 50.0 + i as f32).collect::<Vec<_>>()),
            t32(&[2], &[base + 90.0, base + 91.0]),
            t32(&[1], &[base + 99.0]),
        ]
    };
    let lists = vec![device(0), device(1)];
    let packing = vec![
        PackedRange { first: 0, last: 1, shapes: vec![vec![vec![4], vec![4]]; 2] },
        PackedRange { first: 3, last: 4, shapes: vec![vec![vec![3, 3], vec![3, 3]]; 2] },
    ];
    let p = AggregateSmallTensorPacker::new(1, 1).unwrap();
    let out = p.unpack(&lists, Some(&packing)).unwrap();
    for (d, list) in out.iter().enumerate() {
        let base = 100.0 * d as f32;
        assert_eq!(list.iter().map(|t| t.shape.clone()).collect::<Vec<_>>(), vec![vec![4], vec![4], vec![2], vec![3, 3], vec![3, 3], vec![1]]);
        assert_eq!(flat(&list[1]), (4..8).map(|i| base + i as f32).collect::<Vec<_>>());
        assert_eq!(flat(&list[2]), vec![base + 90.0, base + 91.0]);
        assert_eq!(flat(&list[4]), (9..18).map(|i| base + 50.0 + i as f32).collect::<Vec<_>>());
        assert_eq!(flat(&list[5]), vec![base + 99.0]);
    }
    // No packing: unchanged.
    assert_eq!(p.unpack(&lists, None).unwrap(), lists);
    assert_eq!(p.unpack(&lists, Some(&[] as &[PackedRange])).unwrap(), lists);
}

#[test]
fn concat_and_split_packer_vectors() {
    let towers: Vec<Vec<Tensor>> = (0..2).map(four_grads).collect();
    for (k, sizes) in [(1, vec![26]), (2, vec![13, 13]), (3, vec![8, 8, 10]), (4, vec![6, 6, 6, 8]), (30, [vec![0; 29], vec![26]].concat())] {
        let p = ConcatAndSplitPacker::new(k).unwrap();
        assert_eq!(p.num_packs(), k as usize);
        let (packed, info) = p.pack(&towers).unwrap();
        for (d, packs) in packed.iter().enumerate() {
            assert_eq!(packs.iter().map(|t| t.shape.clone()).collect::<Vec<_>>(), sizes.iter().map(|&s| vec![s]).collect::<Vec<_>>(), "k={k}");
            assert_eq!(packs.iter().flat_map(flat).collect::<Vec<_>>(), towers[d].iter().flat_map(flat).collect::<Vec<_>>());
        }
        assert_eq!(info.shapes[0], vec![vec![4], vec![4], vec![3, 3], vec![3, 3]]);
        let back = p.unpack(&packed, &info).unwrap();
        assert_eq!(back, towers, "k={k}");
    }
    // One dtype per device.
    let mixed = vec![vec![t32(&[2], &[1.0, 2.0]), ti32(&[1], &[3])]];
    assert_eq!(err(ConcatAndSplitPacker::new(1).unwrap().pack(&mixed)).0, ErrorCode::DtypeMismatch);
}

#[test]
fn packer_argument_errors() {
    for k in [0, -1] {
        assert_eq!(err(ConcatAndSplitPacker::new(k)), (ErrorCode::InvalidArgument, "num_packs must be greater than zero.".to_string()));
    }
    let msg = "agg_small_grads_max_bytes and agg_small_grads_max_group should both be greater than zero.";
    for (b, g) in [(0, 10), (10, 0), (-1, 5), (0, 0)] {
        assert_eq!(err(AggregateSmallTensorPacker::new(b, g)), (ErrorCode::InvalidArgument, msg.to_string()));
    }
    // `_pack_tensors`: num_packs > 0 wins; else both limits > 0; else no packing.
    assert!(matches!(Packing::new(2, 100, 10).unwrap(), Packing::ConcatAndSplit(_)));
    assert!(matches!(Packing::new(0, 100, 10).unwrap(), Packing::SmallTensors(_)));
    assert!(matches!(Packing::new(0, 100, 0).unwrap(), Packing::None));
    assert!(matches!(Packing::new(-3, 0, 10).unwrap(), Packing::None));
    // Devices with different numbers of gradients cannot be packed.
    let uneven = vec![vec![t32(&[1], &[1.0]), t32(&[1], &[2.0])], vec![t32(&[1], &[1.0])]];
    assert_eq!(err(ConcatAndSplitPacker::new(1).unwrap().pack(&uneven)).0, ErrorCode::ShapeMismatch);
    assert_eq!(err(AggregateSmallTensorPacker::new(16, 10).unwrap().pack(&uneven)).0, ErrorCode::ShapeMismatch);
}

#[test]
fn group_by_size_and_split_grads_by_size() {
    assert_eq!(group_by_size(&[4, 4, 4, 4], 10), vec![vec![0, 1, 2], vec![3]]);
    assert_eq!(group_by_size(&[4, 4, 4, 4], 0), vec![vec![0, 1, 2, 3]]);
    assert_eq!(group_by_size(&[], 10), Vec::<Vec<usize>>::new());
    assert_eq!(group_by_size(&[], 0), Vec::<Vec<usize>>::new());
    assert_eq!(group_by_size(&[20, 1, 1], 10), vec![vec![0], vec![1, 2]]);
    assert_eq!(group_by_size(&[5, 5, 5], 10), vec![vec![0, 1, 2]]);
    assert_eq!(group_by_size(&[5, 6, 5], 10), vec![vec![0, 1], vec![2]]);
    // Element counts, not bytes (a [2, 3] float64 gradient is 6, not 48); a device's share only if
    // non-empty, tagged with the device's position.
    let counts = vec![vec![4, 5, 6, 1], vec![4, 5, 6, 1]];
    assert_eq!(split_grads_by_size(4, &counts), (vec![(0, vec![0, 3]), (1, vec![0, 3])], vec![(0, vec![1, 2]), (1, vec![1, 2])]));
    assert_eq!(split_grads_by_size(100, &counts), (vec![(0, vec![0, 1, 2, 3]), (1, vec![0, 1, 2, 3])], vec![]));
    assert_eq!(split_grads_by_size(0, &counts), (vec![], vec![(0, vec![0, 1, 2, 3]), (1, vec![0, 1, 2, 3])]));
    assert_eq!(split_grads_by_size(5, &[vec![9], vec![], vec![5, 0]]), (vec![(2, vec![0, 1])], vec![(0, vec![0])]));
}

// ---------------------------------------------------------------------------------------------
// Topology (§5.11)
// ---------------------------------------------------------------------------------------------

fn dgx1() -> Vec<Vec<usize>> {
    DGX1_LINKS.iter().map(|r| r.to_vec()).collect()
}

#[test]
fn dgx1_like_links_vectors() {
    assert_eq!(dgx1(), vec![vec![1, 2, 3, 4], vec![0, 2, 3, 5], vec![0, 1, 3, 6], vec![0, 1, 2, 7], vec![0, 5, 6, 7], vec![1, 4, 6, 7], vec![2, 4, 5, 7], vec![3, 4, 5, 6]]);
    assert!(has_dgx1_like_links(&dgx1()));
    assert!(!has_dgx1_like_links(&dgx1()[..4]));
    assert!(!has_dgx1_like_links(&dgx1()[..7]));
    assert!(!has_dgx1_like_links(&[]));
    let with_self: Vec<Vec<usize>> = dgx1().into_iter().enumerate().map(|(i, mut r)| {
        r.push(i);
        r.sort_unstable();
        r
    }).collect();
    assert_eq!(with_self[0], vec![0, 1, 2, 3, 4]);
    assert!(has_dgx1_like_links(&with_self));
    let rotated = vec![vec![0, 2, 3, 5], vec![0, 1, 3, 6], vec![0, 1, 2, 7], vec![0, 5, 6, 7], vec![1, 4, 6, 7], vec![2, 4, 5, 7], vec![3, 4, 5, 6], vec![1, 2, 3, 4]];
    assert!(!has_dgx1_like_links(&rotated));
    // Sets: order and duplicates do not matter; only the first 8 rows are compared.
    let reordered: Vec<Vec<usize>> = dgx1().into_iter().map(|mut r| {
        r.reverse();
        r.push(r[0]);
        r
    }).collect();
    assert!(has_dgx1_like_links(&reordered));
    let mut nine = dgx1();
    nine.push(vec![0]);
    assert!(has_dgx1_like_links(&nine));
    // A missing or extra link breaks it; a self link on another row's index does too.
    let mut missing = dgx1();
    missing[3].pop();
    assert!(!has_dgx1_like_links(&missing));
    let mut extra = dgx1();
    extra[5].push(0);
    assert!(!has_dgx1_like_links(&extra));
}

#[test]
fn choose_all_reduce_algorithm_and_choose_the_best() {
    let hc = |k| Choice::AllReduce { algorithm: "hierarchical_copy", num_packs: k };
    let nccl = Choice::AllReduce { algorithm: "nccl", num_packs: 1 };
    assert_eq!(choose_all_reduce_algorithm(&dgx1()), hc(8));
    assert_eq!(choose_all_reduce_algorithm(&dgx1()[..4]), nccl);
    let mut nine = dgx1();
    nine.push(vec![0]);
    assert_eq!(choose_all_reduce_algorithm(&nine), hc(9));
    assert_eq!(choose_all_reduce_algorithm(&[]), nccl);

    let gpus: Vec<String> = (0..8).map(|i| format!("/gpu:{i}")).collect();
    assert_eq!(choose_the_best(&gpus, Some(&dgx1()), 0).unwrap(), hc(8));
    assert_eq!(choose_the_best(&gpus, Some(&dgx1()[..4]), 0).unwrap(), nccl);
    assert_eq!(choose_the_best(&gpus, None, 8).unwrap(), nccl);
    let cpu_reason = "Not all devices in DistributionStrategy are visible to TensorFlow session.".to_string();
    let invisible_reason = "Not all devices in distribute strategy are visible by TensorFlow sessions.".to_string();
    for devices in [strings(&["/gpu:0", "/cpu:0"]), strings(&["/cpu:0"]), strings(&["/job:worker/task:1"])] {
        assert_eq!(choose_the_best(&devices, Some(&dgx1()), 8).unwrap(), Choice::ReductionToOneDevice { reason: cpu_reason.clone() }, "{devices:?}");
    }
    assert_eq!(choose_the_best(&gpus, None, 0).unwrap(), Choice::ReductionToOneDevice { reason: invisible_reason.clone() });
    assert_eq!(choose_the_best(&strings(&["/gpu:0", "/gpu:8"]), None, 8).unwrap(), Choice::ReductionToOneDevice { reason: invisible_reason });
    assert_eq!(choose_the_best(&strings(&["/gpu:0", "/gpu:1"]), None, 2).unwrap(), nccl);
    assert_eq!(err(choose_the_best(&strings(&["/bogus:0"]), None, 2)).0, ErrorCode::InvalidDevice);
}

#[test]
fn mirrored_results_of_multi_worker_ops_are_labelled_by_device() {
    // Part A.3: results carry the value's devices in insertion order (not sorted), each
    // labelling the tensor computed for that device.
    let devices = vec![wdev(1, 1, "CPU"), wdev(0, 0, "CPU"), wdev(1, 0, "CPU"), wdev(0, 1, "CPU")];
    let ops = MultiWorkerAllReduce::new(prefixes(2), 2, vec![spec("pscpu/pscpu", 2, 100), spec("xring", 2, -1)], Packing::None).unwrap();
    let small = pd_f32(&devices, &[3], |d| vec![d as f32; 3]);
    let large = pd_f32(&devices, &[200], |d| vec![d as f32 * 2.0; 200]);
    let pairs = vec![(large.clone(), Destinations::Values(large.devices())), (small.clone(), Destinations::Values(small.devices()))];
    let r: Vec<Mirrored<Value>> = ops.batch_reduce(ReduceOp::Sum, &pairs).unwrap();
    let canonical: Vec<String> = devices.iter().map(|d| canon(d)).collect();
    let mut sorted = canonical.clone();
    sorted.sort();
    assert_ne!(canonical, sorted);
    assert_mirrored_f32(&r[0], &canonical, &[200], &[12.0; 200]);
    assert_mirrored_f32(&r[1], &canonical, &[3], &[6.0; 3]);
}
