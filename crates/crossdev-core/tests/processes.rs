//! The cross-worker ops across processes, with ranks as threads of a [`ThreadGroup`]: every
//! spec of `MultiWorkerAllReduce` and `CollectiveAllReduce` gives each rank exactly (bit for
//! bit) what the one-process op gives that rank's devices; the distributed executor matches
//! the host executor on every algorithm; ranks that disagree, hang or die make the others fail
//! with `ERR_RANK_MISMATCH`, `ERR_TIMEOUT` or `ERR_PEER_LOST` naming the rank, never a hang.

mod common;

use common::*;
use crossdev_core::group::threads::ThreadGroup;
use crossdev_core::group::{scoped, Wait};
use crossdev_core::ops::{CollectiveAllReduce, CrossDeviceOps, MultiWorkerAllReduce, Packing};
use crossdev_core::plan::{distributed, host, Plan};
use crossdev_core::spec::{aux_devices, parse_spec, sum_grad_plan, RawSpec};
use crossdev_core::values::{Destinations, Mirrored, PerDevice};
use crossdev_core::{Buffer, CrossDeviceError, DType, ErrorCode, ReduceOp, Value};
use serde_json::json;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn prefixes(w: usize) -> Vec<String> {
    (0..w).map(|i| format!("/job:worker/replica:0/task:{i}")).collect()
}

fn wdev(w: usize, k: usize) -> String {
    canon(&format!("/job:worker/replica:0/task:{w}/device:CPU:{k}"))
}

/// Pseudo-random floats of every magnitude, different per device and variable.
fn data(device: usize, var: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| ((device * 7919 + var * 104_729 + i * 31) % 997) as f32 * 1.37e-3 - 0.61 + (i % 7) as f32 * 1e3).collect()
}

/// Variable `v` has shape `shapes[v]`; worker `w` device `k` holds `data(w * g + k, v, …)`.
fn values(workers: &[usize], g: usize, shapes: &[Vec<usize>]) -> Vec<PerDevice<Value<'static>>> {
    shapes
        .iter()
        .enumerate()
        .map(|(v, shape)| {
            let len = shape.iter().product();
            PerDevice::new(workers.iter().flat_map(|&w| (0..g).map(move |k| (w, k))).map(|(w, k)| (wdev(w, k), dense32(shape, &data(w * g + k, v, len))))).unwrap()
        })
        .collect()
}

fn batch(ops: &dyn CrossDeviceOps, vals: &[PerDevice<Value<'static>>]) -> Result<Vec<Mirrored<Value<'static>>>, CrossDeviceError> {
    let pairs: Vec<(PerDevice<Value>, Destinations)> = vals.iter().map(|v| (v.clone(), Destinations::Values(v.devices()))).collect();
    ops.batch_reduce(ReduceOp::Sum, &pairs)
}

/// Runs `body(rank)` on `n` threads, each with its rank of a fresh group scoped to it.
fn ranks<R: Send + 'static>(n: usize, body: impl Fn(usize) -> R + Send + Sync + 'static) -> Vec<R> {
    let body = Arc::new(body);
    let handles: Vec<_> = ThreadGroup::new(n)
        .into_iter()
        .enumerate()
        .map(|(r, g)| {
            let body = body.clone();
            std::thread::spawn(move || scoped(Arc::new(g), || body(r)))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("rank panicked")).collect()
}

/// The op across `w` ranks of `g` devices each equals, bit for bit, the one-process op.
fn check_across_ranks(make: impl Fn() -> Box<dyn CrossDeviceOps> + Send + Sync + 'static, w: usize, g: usize, shapes: Vec<Vec<usize>>) {
    let whole = batch(make().as_ref(), &values(&(0..w).collect::<Vec<_>>(), g, &shapes)).expect("one-process op");
    let got = ranks(w, move |r| batch(make().as_ref(), &values(&[r], g, &shapes)));
    for (r, results) in got.into_iter().enumerate() {
        let results = results.unwrap_or_else(|e| panic!("rank {r}: {e}"));
        for (v, m) in results.iter().enumerate() {
            assert_eq!(m.devices(), (0..g).map(|k| wdev(r, k)).collect::<Vec<_>>());
            for k in 0..g {
                let (shape, want) = dense_f32(whole[v].get(&wdev(r, k)).unwrap());
                let (got_shape, got) = dense_f32(m.get(&wdev(r, k)).unwrap());
                assert_eq!(got_shape, shape);
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "rank {r} variable {v} device {k} differs from one process");
            }
        }
    }
}

fn shapes() -> Vec<Vec<usize>> {
    vec![vec![3, 8], vec![1000], vec![8], vec![64, 33]]
}

#[test]
fn every_multi_worker_spec_across_ranks_equals_one_process() {
    let specs = [
        json!("nccl"),
        json!("xring"),
        json!(["xring", 2, -1]),
        json!("nccl/xring"),
        json!("nccl/rechd"),
        json!("nccl/pscpu"),
        json!("pscpu/pscpu"),
        json!(["pscpu/pscpu", 2, -1]),
        json!("pscpu"),
        json!([["pscpu", 1, 100], ["nccl/xring", 1, -1]]),
    ];
    for (w, g) in [(2usize, 2usize), (4, 1), (3, 2)] {
        for spec in &specs {
            let two_shards = spec.to_string().contains(", 2,") || spec.to_string().contains(",2,");
            if (spec == &json!("nccl/rechd") && !w.is_power_of_two()) || (two_shards && g < 2) {
                continue;
            }
            let parsed = parse_spec(&RawSpec::from_json(spec)).unwrap();
            let make = move || -> Box<dyn CrossDeviceOps> { Box::new(MultiWorkerAllReduce::new(prefixes(w), g, parsed.clone(), Packing::None).unwrap()) };
            check_across_ranks(make, w, g, shapes());
        }
    }
}

#[test]
fn packed_multi_worker_across_ranks_equals_one_process() {
    for packing in [Packing::new(2, 0, 0).unwrap(), Packing::new(0, 4096, 3).unwrap()] {
        let parsed = parse_spec(&RawSpec::from_json(&json!("nccl/xring"))).unwrap();
        let make = move || -> Box<dyn CrossDeviceOps> { Box::new(MultiWorkerAllReduce::new(prefixes(2), 2, parsed.clone(), packing.clone()).unwrap()) };
        check_across_ranks(make, 2, 2, shapes());
    }
}

#[test]
fn collective_across_ranks_equals_one_process() {
    for (w, g) in [(2, 1), (3, 2), (4, 2)] {
        let make = move || -> Box<dyn CrossDeviceOps> {
            Box::new(CollectiveAllReduce { num_workers: w, num_gpus_per_worker: g, all_reduce_merge_scope: 32, timeout: None, bytes_per_pack: 0 })
        };
        check_across_ranks(make, w, g, shapes());
    }
}

#[test]
fn distributed_executor_matches_host_on_every_algorithm() {
    let devices: Vec<String> = (0..4).flat_map(|w| (0..2).map(move |k| wdev(w, k))).collect();
    let aux = aux_devices("pscpu", &prefixes(4), 2);
    for alg in ["nccl", "xring", "nccl/xring", "nccl/rechd", "nccl/pscpu", "pscpu/pscpu", "pscpu"] {
        for dtype in [DType::Float32, DType::Int64, DType::BFloat16] {
            for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
                let plan: Plan = sum_grad_plan(&devices, 1232, dtype, alg, 4, &[0, 1], &aux, 1).unwrap();
                let inputs: Vec<Buffer<'static>> = (0..8).map(|d| buffer(dtype, &data(d, 0, 1232))).collect();
                let want = host::run(&plan, op, &inputs.iter().collect::<Vec<_>>()).unwrap();
                let placement: Vec<usize> = plan.devices.iter().map(|d| d.split("task:").nth(1).unwrap()[..1].parse().unwrap()).collect();
                let (plan, inputs) = (Arc::new(plan), Arc::new(inputs));
                let got = ranks(4, move |r| {
                    let group = crossdev_core::group::current().unwrap();
                    let mine: Vec<Option<&Buffer>> = (0..8).map(|i| (placement[plan.buffers[i].device] == r).then(|| &inputs[i])).collect();
                    distributed::run(group.as_ref(), &plan, op, &placement, &mine, &Wait::new("test", Duration::from_secs(30))).unwrap()
                });
                for (r, outs) in got.into_iter().enumerate() {
                    for (i, out) in outs.into_iter().enumerate() {
                        if let Some(out) = out {
                            assert_eq!(out.as_bytes(), want[i].as_bytes(), "{alg} {dtype:?} {op:?}: rank {r} input {i}");
                        }
                    }
                }
            }
        }
    }
}

fn buffer(dtype: DType, xs: &[f32]) -> Buffer<'static> {
    match dtype {
        DType::Float32 => Buffer::F32(Cow::Owned(xs.to_vec())),
        DType::Int64 => Buffer::I64(Cow::Owned(xs.iter().map(|&x| x as i64).collect())),
        DType::BFloat16 => Buffer::BF16(Cow::Owned(xs.iter().map(|&x| half::bf16::from_f32(x / 1000.0)).collect())),
        other => unreachable!("{other:?}"),
    }
}

fn collective(w: usize, timeout: Duration) -> CollectiveAllReduce {
    CollectiveAllReduce { num_workers: w, num_gpus_per_worker: 1, all_reduce_merge_scope: 32, timeout: Some(timeout), bytes_per_pack: 0 }
}

#[test]
fn ranks_with_different_shapes_fail_with_a_mismatch() {
    let got = ranks(3, |r| {
        let shapes = if r == 1 { vec![vec![4]] } else { vec![vec![5]] };
        batch(&collective(3, Duration::from_secs(20)), &values(&[r], 1, &shapes))
    });
    for (r, result) in got.into_iter().enumerate() {
        let (code, message) = err(result);
        assert_eq!(code, ErrorCode::RankMismatch, "rank {r}: {message}");
        assert!(message.contains("rank 1") || r == 1, "rank {r}: {message}");
        assert!(message.contains("float32 [4]") && message.contains("float32 [5]"), "{message}");
    }
}

#[test]
fn ranks_with_different_ops_fail_with_a_mismatch() {
    let got = ranks(2, |r| {
        let vals = values(&[r], 1, &[vec![5]]);
        let pairs: Vec<(PerDevice<Value>, Destinations)> = vals.iter().map(|v| (v.clone(), Destinations::Values(v.devices()))).collect();
        collective(2, Duration::from_secs(20)).batch_reduce(if r == 0 { ReduceOp::Sum } else { ReduceOp::Max }, &pairs)
    });
    for result in got {
        let (code, message) = err(result);
        assert_eq!(code, ErrorCode::RankMismatch, "{message}");
        assert!(message.contains("reduce op") && message.contains("SUM") && message.contains("MAX"), "{message}");
    }
}

#[test]
fn a_rank_that_never_arrives_times_out_the_others_naming_it() {
    let start = Instant::now();
    let got = ranks(3, |r| {
        if r == 2 {
            // Stays alive (its links open) but never calls the op.
            std::thread::sleep(Duration::from_millis(1500));
            return None;
        }
        Some(batch(&collective(3, Duration::from_millis(500)), &values(&[r], 1, &[vec![8]])))
    });
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    for result in got.into_iter().take(2) {
        let (code, message) = err(result.unwrap());
        assert_eq!(code, ErrorCode::Timeout, "{message}");
        assert!(message.contains("CollectiveAllReduce") && message.contains("0.5 s") && message.contains("rank 2"), "{message}");
    }
}

#[test]
fn a_rank_that_dies_is_reported_lost() {
    let mut groups: Vec<Option<ThreadGroup>> = ThreadGroup::new(3).into_iter().map(Some).collect();
    // Rank 1's process ends before the op: its links close.
    drop(groups[1].take());
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .filter_map(|(r, g)| g.map(|g| (r, g)))
        .map(|(r, g)| (r, std::thread::spawn(move || scoped(Arc::new(g), || batch(&collective(3, Duration::from_secs(20)), &values(&[r], 1, &[vec![8]]))))))
        .collect();
    for (r, h) in handles {
        let (code, message) = err(h.join().unwrap());
        assert_eq!(code, ErrorCode::PeerLost, "rank {r}: {message}");
        assert!(message.contains("rank 1"), "{message}");
    }
}

#[test]
fn rank_zero_shares_a_secret_with_every_rank() {
    use crossdev_core::group::bootstrap::share_from_root;
    let got = ranks(4, |r| {
        let group = crossdev_core::group::current().unwrap();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let bytes = share_from_root(group.as_ref(), 128, || {
            made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok((0..128u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect())
        }, &Wait::new("NCCL bootstrap", Duration::from_secs(10)));
        (bytes.unwrap(), made.into_inner(), r)
    });
    let want: Vec<u8> = (0..128u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    for (bytes, made, r) in got {
        assert_eq!(bytes, want, "rank {r}");
        assert_eq!(made, usize::from(r == 0), "only rank 0 makes the secret");
    }
}

#[test]
fn a_root_that_cannot_make_the_secret_fails_every_rank_with_its_reason() {
    use crossdev_core::group::bootstrap::share_from_root;
    let got = ranks(3, |_| {
        let group = crossdev_core::group::current().unwrap();
        share_from_root(group.as_ref(), 128, || Err(CrossDeviceError::new(ErrorCode::NoCuda, "NCCL was not found")), &Wait::new("NCCL bootstrap", Duration::from_secs(10)))
    });
    for (r, result) in got.into_iter().enumerate() {
        let (code, message) = err(result);
        assert_eq!(code, ErrorCode::NoCuda, "rank {r}");
        assert!(message.contains("NCCL was not found"), "rank {r}: {message}");
    }
}

#[test]
fn the_secret_travels_through_a_file_without_a_group() {
    use crossdev_core::group::bootstrap::share_via_file;
    let dir = std::env::temp_dir().join(format!("crossdev-bootstrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = Arc::new(dir.join("nccl-id"));
    let readers: Vec<_> = (1..4)
        .map(|r| {
            let path = path.clone();
            std::thread::spawn(move || share_via_file(&path, r, 128, || unreachable!("only rank 0 makes it"), Duration::from_secs(10)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let written = share_via_file(&path, 0, 128, || Ok(vec![7u8; 128]), Duration::from_secs(10)).unwrap();
    for h in readers {
        assert_eq!(h.join().unwrap().unwrap(), written);
    }
    // A reader with nobody writing gives up at its timeout, naming rank 0.
    let (code, message) = err(share_via_file(&dir.join("absent"), 2, 128, || unreachable!(), Duration::from_millis(100)));
    assert_eq!(code, ErrorCode::Timeout);
    assert!(message.contains("rank 0 did not arrive"), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}
