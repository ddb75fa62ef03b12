//! Packs reduced in place (no concatenation, no split) give bit for bit what reducing the
//! concrete packs gives: every column-separable algorithm (and shuffle, which falls back to a
//! concrete pack), ragged gradient sizes, pack boundaries that cut gradients, blocks that cross
//! segment boundaries, every dtype and reduce op (float16 with MEAN included), through the
//! packers' layouts and through the ops.

mod common;

use crossdev_core::algo::hierarchical_copy::build_hierarchical_copy;
use crossdev_core::algo::recursive_hd::build_recursive_hd_all_reduce;
use crossdev_core::algo::reduce_to_one::build_reduce_to_one;
use crossdev_core::algo::ring::build_ring_all_reduce;
use crossdev_core::algo::shuffle::build_shuffle_all_reduce;
use crossdev_core::algo::two_level::{build_two_level, FirstLevel, UpperLevel};
use crossdev_core::kernels::cast::from_f64;
use crossdev_core::ops::{AllReduce, AllReduceAlgorithm, CollectiveAllReduce, CrossDeviceOps, Packing};
use crossdev_core::pack::{group_by_size, reduce_packs, reduce_packs_concurrently, AggregateSmallTensorPacker, ConcatAndSplitPacker, Layout, Pack};
use crossdev_core::plan::{host, Plan};
use crossdev_core::values::{Destinations, PerDevice};
use crossdev_core::{Buffer, DType, ReduceOp, Result, Tensor, Value};

const DTYPES: [DType; 6] = [DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32, DType::Int64];
const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min, ReduceOp::Product];

/// Device `d`'s gradient `t` of `shape`: fractional values of mixed magnitudes (so that the order
/// of combination shows in the low bits), near 1 for PRODUCT.
fn grad(dtype: DType, shape: &[usize], d: usize, t: usize, op: ReduceOp) -> Tensor<'static> {
    let n: usize = shape.iter().product();
    let vals: Vec<f64> = (0..n)
        .map(|i| {
            let h = ((i as u64 + 1) * 2_654_435_761 + (d as u64) * 40_503 + (t as u64) * 97_531) % 100_003;
            match (op, dtype) {
                (ReduceOp::Product, DType::Int32 | DType::Int64) => (h % 5) as f64 - 2.0,
                (ReduceOp::Product, _) => 0.75 + (h % 1000) as f64 / 1600.0,
                (_, DType::Int32 | DType::Int64) => (h % 20_001) as f64 - 10_000.0,
                _ => ((h % 20_001) as f64 - 10_000.0) / 7.0 * if h % 3 == 0 { 1e-3 } else { 1.0 },
            }
        })
        .collect();
    Tensor::new(shape.to_vec(), from_f64(&vals, dtype)).unwrap()
}

fn device_grads(dtype: DType, shapes: &[Vec<usize>], devices: usize, op: ReduceOp) -> Vec<Vec<Tensor<'static>>> {
    (0..devices).map(|d| shapes.iter().enumerate().map(|(t, s)| grad(dtype, s, d, t, op)).collect()).collect()
}

/// The reference: each pack built for real (its pieces' bytes end to end), reduced by the host
/// executor, and its result's bytes cut back into the gradients.
fn concrete(grads: &[Vec<Tensor>], layout: &Layout, plan: &dyn Fn(DType, usize, usize) -> Result<Plan>, op: ReduceOp) -> Result<Vec<Vec<Vec<u8>>>> {
    let mut out: Vec<Vec<Vec<u8>>> = grads.iter().map(|g| g.iter().map(|t| vec![0u8; t.data.as_bytes().len()]).collect()).collect();
    for (index, pieces) in layout.packs().iter().enumerate() {
        let Some(first) = pieces.first() else { continue };
        let dtype = grads[0][first.tensor].dtype();
        let size = dtype.size();
        let packs: Vec<Buffer> = grads
            .iter()
            .map(|g| {
                let bytes: Vec<u8> = pieces.iter().flat_map(|x| g[x.tensor].data.as_bytes()[x.offset * size..(x.offset + x.len) * size].to_vec()).collect();
                Buffer::from_bytes(dtype, &bytes).into_owned()
            })
            .collect();
        let reduced = host::run(&plan(dtype, packs[0].len(), index)?, op, &packs.iter().collect::<Vec<_>>())?;
        for (d, r) in reduced.iter().enumerate() {
            let mut at = 0;
            for x in pieces {
                out[d][x.tensor][x.offset * size..(x.offset + x.len) * size].copy_from_slice(&r.as_bytes()[at..at + x.len * size]);
                at += x.len * size;
            }
        }
    }
    Ok(out)
}

/// In place through `layout` and concretely: both fail, or both give the same bytes and the
/// gradients' shapes.
/// Reduces the packs of `layout` in place, one after another and concurrently, and checks both
/// against the concrete packs.
fn check(what: &str, grads: &[Vec<Tensor>], layout: &Layout, plan: &(dyn Fn(DType, usize, usize) -> Result<Plan> + Sync), op: ReduceOp) {
    let reduce = |pack: &mut Pack| pack.run(&plan(pack.dtype(), pack.elements(), pack.index())?, op);
    check_one(&format!("{what}, in order"), grads, layout, plan, op, reduce_packs(grads, layout, reduce));
    check_one(&format!("{what}, concurrently"), grads, layout, plan, op, reduce_packs_concurrently(grads, layout, reduce));
}

fn check_one(what: &str, grads: &[Vec<Tensor>], layout: &Layout, plan: &dyn Fn(DType, usize, usize) -> Result<Plan>, op: ReduceOp, got: Result<Vec<Vec<Tensor<'static>>>>) {
    let want = concrete(grads, layout, plan, op);
    match (want, got) {
        (Ok(want), Ok(got)) => {
            for (d, (w, g)) in want.iter().zip(&got).enumerate() {
                for (t, (w, g)) in w.iter().zip(g).enumerate() {
                    assert_eq!(g.shape, grads[d][t].shape, "{what}: shape of device {d}'s gradient {t}");
                    assert_eq!(g.dtype(), grads[d][t].dtype(), "{what}: dtype of device {d}'s gradient {t}");
                    assert!(g.data.as_bytes() == w.as_slice(), "{what}: device {d}'s gradient {t} differs from the concrete pack's");
                }
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.code, b.code, "{what}: {a} / {b}"),
        (a, b) => panic!("{what}: concrete {:?}, in place {:?}", a.err(), b.err()),
    }
}

fn devices(names: &[&str]) -> Vec<String> {
    names.iter().map(|d| common::canon(d)).collect()
}

/// The algorithms, each as a plan builder over `devs` (name, column-separable).
#[allow(clippy::type_complexity)]
fn algorithms(devs: &[String], two_level: bool) -> Vec<(String, Box<dyn Fn(DType, usize, usize) -> Result<Plan> + Sync>)> {
    let mut all: Vec<(String, Box<dyn Fn(DType, usize, usize) -> Result<Plan> + Sync>)> = Vec::new();
    let n = devs.len();
    let d = devs.to_vec();
    for s in 1..=2.min(n) {
        let d = d.clone();
        all.push((format!("ring/{s}"), Box::new(move |dt, e, _| build_ring_all_reduce(&d, e, dt, 1, s, &(0..n).collect::<Vec<_>>()))));
    }
    let d2 = d.clone();
    all.push(("hierarchical_copy".into(), Box::new(move |dt, e, i| build_hierarchical_copy(&d2, e, dt, i))));
    let d2 = d.clone();
    all.push(("reduce_to_one".into(), Box::new(move |dt, e, _| build_reduce_to_one(&d2, e, dt))));
    let d2 = d.clone();
    all.push(("nccl op plan".into(), Box::new(move |dt, e, i| AllReduceAlgorithm::Nccl.plan(&d2, dt, e, i).map(std::sync::Arc::unwrap_or_clone))));
    if n.is_power_of_two() {
        let d2 = d.clone();
        all.push(("rechd".into(), Box::new(move |dt, e, _| build_recursive_hd_all_reduce(&d2, e, dt))));
    }
    let (d2, gather) = (d.clone(), vec![d[0].clone(), d[n - 1].clone()]);
    all.push(("shuffle".into(), Box::new(move |dt, e, _| build_shuffle_all_reduce(&d2, &gather, e, dt))));
    if two_level {
        for level in [UpperLevel::Ring(1), UpperLevel::RecursiveHd, UpperLevel::Shuffle(vec![d[0].clone()])] {
            for first in [FirstLevel::Nccl, FirstLevel::Gather(vec![d[0].clone(), d[n - 1].clone()])] {
                let (d2, level, name) = (d.clone(), level.clone(), format!("two-level {first:?} {level:?}"));
                all.push((name, Box::new(move |dt, e, _| build_two_level(&d2, e, dt, &first, &level))));
            }
        }
    }
    all
}

/// Layouts of `shapes`: each alone, 1 to 5 concatenated packs (cutting gradients), TF 2's
/// reversed size groups, and small-tensor runs decided on `first`.
fn layouts(shapes: &[Vec<usize>], first: &[Tensor]) -> Vec<(String, Layout)> {
    let counts: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    let mut all = vec![("each".to_string(), Layout::each(&counts))];
    for k in [1, 2, 3, 5] {
        all.push((format!("{k} packs"), ConcatAndSplitPacker::new(k).unwrap().layout_of(&counts)));
    }
    let reversed: Vec<usize> = (0..counts.len()).rev().collect();
    let groups: Vec<Vec<usize>> = group_by_size(&reversed.iter().map(|&i| counts[i]).collect::<Vec<_>>(), 40).into_iter().map(|g| g.into_iter().map(|k| reversed[k]).collect()).collect();
    all.push(("size groups".into(), Layout::groups(&counts, &groups)));
    all.push(("small runs".into(), AggregateSmallTensorPacker::new(200, 2).unwrap().layout(first).0));
    all
}

/// Ragged sizes, an empty gradient and a scalar among them.
fn small_shapes() -> Vec<Vec<usize>> {
    vec![vec![1], vec![0], vec![7], vec![3, 11], vec![], vec![5], vec![43, 3], vec![2], vec![16], vec![9]]
}

#[test]
fn in_place_packs_equal_concrete_packs_for_every_algorithm_dtype_and_op() {
    let shapes = small_shapes();
    let cases = [(devices(&["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"]), false), (devices(&["/cpu:0", "/cpu:1", "/cpu:2"]), false), (
        devices(&["/job:worker/replica:0/task:0/device:CPU:0", "/job:worker/replica:0/task:0/device:CPU:1", "/job:worker/replica:0/task:1/device:CPU:0", "/job:worker/replica:0/task:1/device:CPU:1"]),
        true,
    )];
    for (devs, two_level) in &cases {
        for dtype in DTYPES {
            for op in OPS {
                let grads = device_grads(dtype, &shapes, devs.len(), op);
                for (alg, plan) in algorithms(devs, *two_level) {
                    for (name, layout) in layouts(&shapes, &grads[0]) {
                        check(&format!("{} devices, {alg}, {}, {}, {name}", devs.len(), dtype.name(), op.name()), &grads, &layout, &plan, op);
                    }
                }
            }
        }
    }
}

#[test]
fn in_place_packs_equal_concrete_packs_in_column_blocks() {
    // Large enough for the executor's column blocks (and threads), with gradients and pack cuts
    // that fall inside blocks.
    let shapes = vec![vec![3], vec![40_000], vec![17], vec![33_001], vec![5], vec![20_000, 2]];
    let devs = devices(&["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"]);
    for dtype in [DType::Float32, DType::Float16, DType::Float64] {
        for op in [ReduceOp::Sum, ReduceOp::Mean] {
            let grads = device_grads(dtype, &shapes, devs.len(), op);
            for (alg, plan) in algorithms(&devs, false) {
                for (name, layout) in layouts(&shapes, &grads[0]) {
                    check(&format!("{alg}, {}, {}, {name}", dtype.name(), op.name()), &grads, &layout, &plan, op);
                }
            }
        }
    }
}

#[test]
fn run_in_place_equals_run_over_the_concatenation() {
    let devs = devices(&["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3", "/cpu:4"]);
    let cuts = [0usize, 1, 16_383, 16_385, 40_000, 40_001, 70_000];
    let lens: Vec<usize> = cuts.windows(2).map(|w| w[1] - w[0]).collect();
    let elements = *cuts.last().unwrap();
    let inputs: Vec<Vec<f32>> = (0..devs.len()).map(|d| (0..elements).map(|i| ((i * 7919 + d * 104_729) % 10_007) as f32 / 3.0 - 1000.0).collect()).collect();
    let segments = |v: &[f32]| -> Vec<Vec<f32>> { cuts.windows(2).map(|w| v[w[0]..w[1]].to_vec()).collect() };
    for plan in [build_ring_all_reduce(&devs, elements, DType::Float32, 1, 2, &[0, 1, 2, 3, 4]).unwrap(), build_hierarchical_copy(&devs, elements, DType::Float32, 3).unwrap()] {
        let want = host::run(&plan, ReduceOp::Mean, &inputs.iter().map(|v| Buffer::F32(v.as_slice().into())).collect::<Vec<_>>().iter().collect::<Vec<_>>()).unwrap();
        let pieces: Vec<Vec<Vec<f32>>> = inputs.iter().map(|v| segments(v)).collect();
        let ins: Vec<Vec<&[f32]>> = pieces.iter().map(|p| p.iter().map(|x| x.as_slice()).collect()).collect();
        let mut results: Vec<Vec<Vec<f32>>> = (0..devs.len()).map(|_| lens.iter().map(|&n| vec![f32::NAN; n]).collect()).collect();
        let mut outs: Vec<Vec<&mut [f32]>> = results.iter_mut().map(|r| r.iter_mut().map(|x| x.as_mut_slice()).collect()).collect();
        host::run_in_place(&plan, ReduceOp::Mean, &ins, &mut outs).unwrap();
        for (w, r) in want.iter().zip(&results) {
            assert!(w.as_bytes() == bytemuck_bytes(&r.concat()), "{}", plan.algorithm);
        }
    }
    // Segments of other lengths than the inputs', or a plan that is not column-separable over
    // several segments, are refused.
    let shuffle = build_shuffle_all_reduce(&devs, &devs[..2], elements, DType::Float32).unwrap();
    let ins: Vec<Vec<&[f32]>> = inputs.iter().map(|v| vec![&v[..10], &v[10..]]).collect();
    let mut results: Vec<Vec<f32>> = (0..devs.len()).map(|_| vec![0.0; elements]).collect();
    let mut outs: Vec<Vec<&mut [f32]>> = results.iter_mut().map(|r| { let (a, b) = r.split_at_mut(10); vec![a, b] }).collect();
    assert!(host::run_in_place(&shuffle, ReduceOp::Sum, &ins, &mut outs).is_err());
    let mut outs: Vec<Vec<&mut [f32]>> = results.iter_mut().map(|r| { let (a, b) = r.split_at_mut(11); vec![a, b] }).collect();
    let ring = build_ring_all_reduce(&devs, elements, DType::Float32, 1, 1, &[0, 1, 2, 3, 4]).unwrap();
    assert!(host::run_in_place(&ring, ReduceOp::Sum, &ins, &mut outs).is_err());
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The results of `ops.batch_reduce` over `grads` (every value on its own devices), as bytes.
fn batch_bytes(ops: &dyn CrossDeviceOps, devs: &[String], grads: &[Vec<Tensor>], op: ReduceOp) -> Vec<Vec<(Vec<usize>, Vec<u8>)>> {
    let pairs: Vec<(PerDevice<Value>, Destinations)> = (0..grads[0].len())
        .map(|t| {
            let pd = PerDevice::new(devs.iter().zip(grads).map(|(d, g)| (d.clone(), Value::Dense(g[t].view())))).unwrap();
            (pd.clone(), Destinations::Values(pd.devices()))
        })
        .collect();
    let results = ops.batch_reduce(op, &pairs).unwrap();
    devs.iter()
        .map(|d| {
            results
                .iter()
                .map(|m| match m.get(d).unwrap() {
                    Value::Dense(t) => (t.shape.clone(), t.data.as_bytes().to_vec()),
                    other => panic!("{other:?}"),
                })
                .collect()
        })
        .collect()
}

#[test]
fn packing_ops_equal_their_concrete_packers() {
    let devs = devices(&["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"]);
    let shapes = vec![vec![5], vec![300, 7], vec![0], vec![2, 2], vec![3], vec![40_000], vec![9]];
    for dtype in [DType::Float32, DType::Float16] {
        for op in [ReduceOp::Sum, ReduceOp::Mean] {
            let grads = device_grads(dtype, &shapes, devs.len(), op);
            for algorithm in [AllReduceAlgorithm::Nccl, AllReduceAlgorithm::HierarchicalCopy] {
                let reduce_concrete = |packed: &[Vec<Tensor>]| -> Vec<Vec<Tensor<'static>>> {
                    let mut out: Vec<Vec<Tensor<'static>>> = devs.iter().map(|_| Vec::new()).collect();
                    for i in 0..packed[0].len() {
                        let across: Vec<&Buffer> = packed.iter().map(|g| &g[i].data).collect();
                        let plan = algorithm.plan(&devs, across[0].dtype(), across[0].len(), i).unwrap();
                        for (d, r) in host::run(&plan, op, &across).unwrap().into_iter().enumerate() {
                            out[d].push(Tensor::new(packed[d][i].shape.clone(), r).unwrap());
                        }
                    }
                    out
                };
                for packing in [Packing::new(1, 0, 0).unwrap(), Packing::new(3, 0, 0).unwrap(), Packing::new(0, 64, 2).unwrap()] {
                    let want: Vec<Vec<Tensor>> = match &packing {
                        Packing::ConcatAndSplit(p) => {
                            let (packed, info) = p.pack(&grads).unwrap();
                            p.unpack(&reduce_concrete(&packed), &info).unwrap()
                        }
                        Packing::SmallTensors(p) => {
                            let (packed, info) = p.pack(&grads).unwrap();
                            p.unpack(&reduce_concrete(&packed), info.as_deref()).unwrap()
                        }
                        Packing::None => unreachable!(),
                    };
                    let want: Vec<Vec<(Vec<usize>, Vec<u8>)>> = want.iter().map(|g| g.iter().map(|t| (t.shape.clone(), t.data.as_bytes().to_vec())).collect()).collect();
                    let ops = AllReduce { algorithm, packing: packing.clone() };
                    assert!(batch_bytes(&ops, &devs, &grads, op) == want, "{algorithm:?} {packing:?} {} {}", dtype.name(), op.name());
                }
            }
        }
    }
}

#[test]
fn collective_bytes_per_pack_equals_concatenated_groups() {
    let devs = devices(&["/cpu:0", "/cpu:1", "/cpu:2"]);
    let shapes = vec![vec![5], vec![30, 7], vec![0], vec![2, 2], vec![3], vec![4_000], vec![9]];
    let counts: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    for dtype in [DType::Float32, DType::Float16, DType::Float64] {
        let op = ReduceOp::Mean;
        let grads = device_grads(dtype, &shapes, devs.len(), op);
        for bytes_per_pack in [0, 1, 100, 1000, 1 << 20] {
            let ops = CollectiveAllReduce { num_workers: 1, num_gpus_per_worker: 0, all_reduce_merge_scope: 32, timeout: None, bytes_per_pack };
            let reversed: Vec<usize> = (0..counts.len()).rev().collect();
            let groups: Vec<Vec<usize>> = if bytes_per_pack == 0 {
                (0..counts.len()).map(|i| vec![i]).collect()
            } else {
                group_by_size(&reversed.iter().map(|&i| counts[i] * dtype.size()).collect::<Vec<_>>(), bytes_per_pack).into_iter().map(|g| g.into_iter().map(|k| reversed[k]).collect()).collect()
            };
            let want = concrete(&grads, &Layout::groups(&counts, &groups), &|dt, e, _| AllReduceAlgorithm::Nccl.plan(&devs, dt, e, 0).map(std::sync::Arc::unwrap_or_clone), op).unwrap();
            let got = batch_bytes(&ops, &devs, &grads, op);
            for (d, (w, g)) in want.iter().zip(&got).enumerate() {
                for (t, (w, g)) in w.iter().zip(g).enumerate() {
                    assert_eq!(g.0, shapes[t]);
                    assert!(&g.1 == w, "bytes_per_pack {bytes_per_pack}, {}, device {d}, gradient {t}", dtype.name());
                }
            }
        }
    }
}

#[test]
fn layouts_cover_every_element_once() {
    let counts = [3usize, 0, 5, 0, 0, 9, 1];
    for k in 1..=20 {
        let layout = ConcatAndSplitPacker::new(k).unwrap().layout_of(&counts);
        assert_eq!(layout.packs().len(), k as usize);
        let total: usize = counts.iter().sum();
        for (p, pieces) in layout.packs().iter().enumerate() {
            let want = if p + 1 < k as usize { total / k as usize } else { total - (k as usize - 1) * (total / k as usize) };
            assert_eq!(layout.pack_len(p), want, "{k} packs: pack {p}");
            assert!(pieces.iter().all(|x| x.len > 0));
        }
        let mut seen: Vec<Vec<bool>> = counts.iter().map(|&n| vec![false; n]).collect();
        for x in layout.packs().iter().flatten() {
            for i in x.offset..x.offset + x.len {
                assert!(!seen[x.tensor][i]);
                seen[x.tensor][i] = true;
            }
        }
        assert!(seen.iter().flatten().all(|&s| s), "{k} packs");
    }
}
