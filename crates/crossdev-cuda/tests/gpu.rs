//! GPU runtime tests of the plan executor: every algorithm's plan over 8 logical GPUs sharing
//! the machine's GPU(s), a stream per logical device, gives exactly the host executor's results
//! for every dtype and op, with one context per GPU and with a context per logical device (the
//! multi-GPU paths: peer copies, reduce sources staged into scratch). On a machine without a GPU
//! they print `skipped: no GPU` after checking that asking for one is a clean `ERR_NO_CUDA`
//! error, never a panic; the device-name mapping is checked everywhere.

use crossdev_core::algo::hierarchical_copy::build_hierarchical_copy;
use crossdev_core::algo::recursive_hd::build_recursive_hd_all_reduce;
use crossdev_core::algo::reduce_to_one::build_reduce_to_one;
use crossdev_core::algo::ring::build_ring_all_reduce;
use crossdev_core::algo::shuffle::build_shuffle_all_reduce;
use crossdev_core::algo::two_level::{build_two_level, FirstLevel, UpperLevel};
use crossdev_core::kernels::cast::from_f64;
use crossdev_core::ops::AllReduceAlgorithm;
use crossdev_core::plan::{host, Plan};
use crossdev_core::{Buffer, DType, ErrorCode, ReduceOp};
use crossdev_cuda::executor::{parse_virtual_gpus, Contexts, DeviceBuffer, GpuExecutor, Mapping, VIRTUAL_GPUS_VAR};
use crossdev_cuda::probe::gpu_count;

/// An executor of `virtual_gpus` logical GPUs, or `None` (with the skip printed) without a GPU.
fn executor(virtual_gpus: Option<usize>, contexts: Contexts) -> Option<GpuExecutor> {
    match gpu_count() {
        Ok(_) => Some(GpuExecutor::new(virtual_gpus, contexts).unwrap_or_else(|e| panic!("a present GPU opens: {e}"))),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::NoCuda, "{e}");
            let err = GpuExecutor::new(virtual_gpus, contexts).err().expect("no executor without a GPU");
            assert_eq!(err.code, ErrorCode::NoCuda, "{err}");
            // Straight to stderr, past the test harness's capture, so that the skip is visible.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped: no GPU ({})\n", e.message).as_bytes());
            None
        }
    }
}

fn gpus(n: usize) -> Vec<String> {
    (0..n).map(|d| format!("/gpu:{d}")).collect()
}

/// Every single-level algorithm over `devices`.
fn plans(devices: &[String], elements: usize, dtype: DType) -> Vec<Plan> {
    let n = devices.len();
    let identity: Vec<usize> = (0..n).collect();
    let shuffled: Vec<usize> = (0..n).map(|i| (i * 3 + 1) % n).collect();
    let mut plans = vec![
        build_ring_all_reduce(devices, elements, dtype, 1, 1, &identity).unwrap(),
        build_shuffle_all_reduce(devices, &devices[..2], elements, dtype).unwrap(),
        build_hierarchical_copy(devices, elements, dtype, 3).unwrap(),
        build_reduce_to_one(devices, elements, dtype).unwrap(),
        std::sync::Arc::unwrap_or_clone(AllReduceAlgorithm::Nccl.plan(devices, dtype, elements, 0).unwrap()),
    ];
    if n >= 4 && shuffled.iter().collect::<std::collections::BTreeSet<_>>().len() == n {
        // Rings with subchunks, in a shuffled order.
        plans.push(build_ring_all_reduce(devices, elements, dtype, 1, 2, &shuffled).unwrap());
        plans.push(build_ring_all_reduce(devices, elements, dtype, 1, 4, &shuffled).unwrap());
    }
    if n.is_power_of_two() && elements.is_multiple_of(n) {
        plans.push(build_recursive_hd_all_reduce(devices, elements, dtype).unwrap());
    }
    plans
}

/// The two-level algorithms over `workers` tasks of `per_worker` GPUs each.
fn two_level_plans(workers: usize, per_worker: usize, elements: usize, dtype: DType) -> Vec<Plan> {
    let devices: Vec<String> = (0..workers).flat_map(|t| (0..per_worker).map(move |g| format!("/job:worker/replica:0/task:{t}/device:GPU:{g}"))).collect();
    let gather: Vec<String> = (0..workers).map(|t| devices[t * per_worker].clone()).collect();
    let mut plans = vec![
        build_two_level(&devices, elements, dtype, &FirstLevel::Nccl, &UpperLevel::Ring(1)).unwrap(),
        build_two_level(&devices, elements, dtype, &FirstLevel::Nccl, &UpperLevel::Shuffle(gather.clone())).unwrap(),
        build_two_level(&devices, elements, dtype, &FirstLevel::Gather(gather.clone()), &UpperLevel::Shuffle(gather[..1].to_vec())).unwrap(),
        build_two_level(&devices, elements, dtype, &FirstLevel::Gather(gather.clone()), &UpperLevel::Ring(1)).unwrap(),
    ];
    if workers.is_power_of_two() && elements.is_multiple_of(workers) {
        plans.push(build_two_level(&devices, elements, dtype, &FirstLevel::Nccl, &UpperLevel::RecursiveHd).unwrap());
    }
    plans
}

/// One input per plan input: small integers and halves (exact in every dtype).
fn inputs(plan: &Plan) -> Vec<Buffer<'static>> {
    (0..plan.inputs).map(|d| from_f64(&(0..plan.elements).map(|i| ((i * 7 + d * 13) % 23) as f64 - 11.5).collect::<Vec<_>>(), plan.dtype)).collect()
}

/// Runs `plan` on the GPU and on the host for each of `ops`: the bytes must be identical.
fn check(executor: &GpuExecutor, plan: &Plan, ops: &[ReduceOp], what: &str) {
    let inputs = inputs(plan);
    let refs: Vec<&Buffer> = inputs.iter().collect();
    for &op in ops {
        let want = host::run(plan, op, &refs).unwrap();
        let got = executor.run_plan(plan, op, &refs).unwrap_or_else(|e| panic!("{what}: {} {} {op:?}: {e}", plan.algorithm, plan.dtype.name()));
        assert_eq!(got.len(), want.len());
        for (d, (g, w)) in got.iter().zip(&want).enumerate() {
            let size = plan.dtype.size();
            if let Some(i) = g.as_bytes().chunks(size).zip(w.as_bytes().chunks(size)).position(|(a, b)| a != b) {
                panic!("{what}: {} {} {op:?}: output {d} differs first at element {i} of {}", plan.algorithm, plan.dtype.name(), plan.elements);
            }
            assert_eq!(g.len(), w.len());
        }
    }
}

#[test]
fn every_algorithm_on_8_virtual_gpus_matches_the_host_executor() {
    for contexts in [Contexts::PerGpu, Contexts::PerDevice] {
        let Some(executor) = executor(Some(8), contexts) else { return };
        let what = format!("8 virtual GPUs, {contexts:?}");
        for dtype in DType::ALL {
            // Divisible by 8 (recursive halving-doubling), and not (chunks clipped).
            for elements in [8 * 1000, 8 * 1000 + 5] {
                let mut all = plans(&gpus(8), elements, dtype);
                all.extend(two_level_plans(2, 4, elements, dtype));
                all.extend(two_level_plans(4, 2, elements, dtype));
                for plan in &all {
                    check(&executor, plan, &ReduceOp::ALL, &what);
                }
            }
        }
    }
}

#[test]
fn plans_over_3_and_2_virtual_gpus_match_the_host_executor() {
    let Some(executor) = executor(Some(3), Contexts::PerGpu) else { return };
    for n in [2, 3] {
        for dtype in [DType::Float32, DType::Float16, DType::Int64] {
            for plan in plans(&gpus(n), 1000 * n + 1, dtype) {
                check(&executor, &plan, &ReduceOp::ALL, &format!("{n} virtual GPUs"));
            }
        }
    }
}

/// Big enough that kernels and copies of different streams overlap in time: a missing wait
/// would show as a wrong result.
#[test]
fn large_plans_with_concurrent_streams_match_the_host_executor() {
    for contexts in [Contexts::PerGpu, Contexts::PerDevice] {
        let Some(executor) = executor(Some(8), contexts) else { return };
        for dtype in [DType::Float32, DType::Int32] {
            for elements in [1 << 22, (1 << 22) + 3] {
                let devices = gpus(8);
                let mut all = vec![
                    build_ring_all_reduce(&devices, elements, dtype, 1, 2, &[0, 3, 6, 1, 4, 7, 2, 5]).unwrap(),
                    build_shuffle_all_reduce(&devices, &devices[..3], elements, dtype).unwrap(),
                    build_hierarchical_copy(&devices, elements, dtype, 0).unwrap(),
                ];
                if elements.is_multiple_of(8) {
                    all.push(build_recursive_hd_all_reduce(&devices, elements, dtype).unwrap());
                }
                all.extend(two_level_plans(2, 4, elements, dtype));
                for plan in &all {
                    check(&executor, plan, &[ReduceOp::Sum, ReduceOp::Max], &format!("large, {contexts:?}"));
                }
            }
        }
    }
}

#[test]
fn each_logical_device_has_a_stream_of_its_own() {
    for contexts in [Contexts::PerGpu, Contexts::PerDevice] {
        let Some(executor) = executor(Some(8), contexts) else { return };
        let physical = executor.mapping().physical;
        let streams: Vec<_> = gpus(8).iter().map(|d| executor.stream(d).unwrap()).collect();
        let mut handles: Vec<usize> = streams.iter().map(|s| s.cu_stream() as usize).collect();
        handles.sort_unstable();
        handles.dedup();
        assert_eq!(handles.len(), 8, "{contexts:?}: 8 logical devices, 8 streams");
        for (k, s) in streams.iter().enumerate() {
            assert_eq!(s.context().ordinal(), k % physical, "{contexts:?}: logical GPU {k}");
        }
        let mut ctxs: Vec<usize> = streams.iter().map(|s| s.context().cu_ctx() as usize).collect();
        ctxs.sort_unstable();
        ctxs.dedup();
        let want = if contexts == Contexts::PerGpu { physical.min(8) } else { 8 };
        assert_eq!(ctxs.len(), want, "{contexts:?}: contexts");
        // Any spelling of a device is the same logical device, hence the same stream.
        let again = executor.stream("/job:localhost/replica:0/task:0/device:GPU:3").unwrap();
        assert_eq!(again.cu_stream(), streams[3].cu_stream());
        // Another task's GPU 3 is another logical device.
        assert_ne!(executor.stream("/job:worker/replica:0/task:1/device:GPU:3").unwrap().cu_stream(), streams[3].cu_stream());
    }
}

#[test]
fn device_resident_inputs_and_outputs_chain_plans() {
    for contexts in [Contexts::PerGpu, Contexts::PerDevice] {
        let Some(executor) = executor(Some(8), contexts) else { return };
        let devices = gpus(8);
        let plan = build_ring_all_reduce(&devices, 8 * 4096 + 3, DType::Float32, 1, 2, &[7, 6, 5, 4, 3, 2, 1, 0]).unwrap();
        let host_inputs = inputs(&plan);
        let refs: Vec<&Buffer> = host_inputs.iter().collect();
        // Input 0 comes from outside the executor: memory of a context and stream of its own.
        let ctx = cudarc::driver::CudaContext::new(0).unwrap();
        let own = ctx.new_stream().unwrap();
        let mut resident: Vec<DeviceBuffer> = (1..8).map(|d| executor.upload(&devices[d], &host_inputs[d]).unwrap()).collect();
        resident.insert(
            0,
            DeviceBuffer { device: "/gpu:0".into(), data: own.clone_htod(host_inputs[0].as_bytes()).unwrap(), dtype: DType::Float32, len: plan.elements },
        );
        let first = executor.run_plan_on_device(&plan, ReduceOp::Sum, &resident.iter().collect::<Vec<_>>()).unwrap();
        let want = host::run(&plan, ReduceOp::Sum, &refs).unwrap();
        for (d, (out, w)) in first.iter().zip(&want).enumerate() {
            assert_eq!(out.device, plan.devices[d], "{contexts:?}: output {d} is on its input's device");
            assert_eq!((out.dtype, out.len), (DType::Float32, plan.elements));
            assert_eq!(out.to_host().unwrap().as_bytes(), w.as_bytes(), "{contexts:?}: output {d}");
        }
        // The outputs (GPU tensors) feed the next all-reduce directly.
        let second = executor.run_plan_on_device(&plan, ReduceOp::Mean, &first.iter().collect::<Vec<_>>()).unwrap();
        let want2 = host::run(&plan, ReduceOp::Mean, &want.iter().collect::<Vec<_>>()).unwrap();
        for (d, (out, w)) in second.iter().zip(&want2).enumerate() {
            assert_eq!(out.to_host().unwrap().as_bytes(), w.as_bytes(), "{contexts:?}: chained output {d}");
        }
    }
}

#[test]
fn bad_inputs_and_devices_are_errors_not_panics() {
    let Some(executor) = executor(Some(8), Contexts::PerGpu) else { return };
    let plan = build_ring_all_reduce(&gpus(2), 16, DType::Float32, 1, 1, &[0, 1]).unwrap();
    let a = executor.upload("/gpu:0", &Buffer::F32(vec![1.0; 16].into())).unwrap();
    let b = executor.upload("/gpu:1", &Buffer::F32(vec![2.0; 16].into())).unwrap();
    let short = executor.upload("/gpu:1", &Buffer::F32(vec![2.0; 15].into())).unwrap();
    let ints = executor.upload("/gpu:1", &Buffer::I32(vec![2; 16].into())).unwrap();
    let elsewhere = executor.upload("/gpu:5", &Buffer::F32(vec![2.0; 16].into())).unwrap();
    for (inputs, what) in [(vec![&a], "one input of two"), (vec![&a, &short], "15 elements"), (vec![&a, &ints], "int32"), (vec![&a, &elsewhere], "input on /gpu:5")] {
        let err = executor.run_plan_on_device(&plan, ReduceOp::Sum, &inputs).err().unwrap_or_else(|| panic!("{what} accepted"));
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{what}: {err}");
    }
    assert_eq!(executor.run_plan_on_device(&plan, ReduceOp::Sum, &[&a, &b]).unwrap()[1].to_host().unwrap().as_bytes(), Buffer::F32(vec![3.0; 16].into()).as_bytes());
    let cpu = build_ring_all_reduce(&["/cpu:0".to_string(), "/cpu:1".to_string()], 16, DType::Float32, 1, 1, &[0, 1]).unwrap();
    let host_inputs = [Buffer::F32(vec![1.0; 16].into()), Buffer::F32(vec![1.0; 16].into())];
    let err = executor.run_plan(&cpu, ReduceOp::Sum, &host_inputs.iter().collect::<Vec<_>>()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    let beyond = build_ring_all_reduce(&gpus(9), 18, DType::Float32, 1, 1, &(0..9).collect::<Vec<_>>()).unwrap();
    let nine: Vec<Buffer> = (0..9).map(|_| Buffer::F32(vec![1.0; 18].into())).collect();
    let err = executor.run_plan(&beyond, ReduceOp::Sum, &nine.iter().collect::<Vec<_>>()).unwrap_err();
    assert_eq!(err.code, ErrorCode::NoCuda, "{err}");
}

/// What `scripts/gpu-check.sh` sets: `CROSSDEV_VIRTUAL_GPUS=8` gives 8 logical GPUs; unset,
/// as many as there are physical GPUs.
#[test]
fn virtual_gpus_from_the_environment() {
    let Some(executor) = (match gpu_count() {
        Ok(_) => Some(GpuExecutor::from_env().unwrap()),
        Err(_) => executor(None, Contexts::PerGpu),
    }) else {
        return;
    };
    let set = parse_virtual_gpus(std::env::var(VIRTUAL_GPUS_VAR).ok().as_deref()).unwrap();
    assert_eq!(executor.mapping().virtual_gpus, set);
    let n = set.unwrap_or(executor.mapping().physical);
    if n >= 2 {
        let plan = build_ring_all_reduce(&gpus(n), 100 * n, DType::Float64, 1, 1, &(0..n).collect::<Vec<_>>()).unwrap();
        check(&executor, &plan, &[ReduceOp::Sum], &format!("{VIRTUAL_GPUS_VAR}={set:?}"));
    }
}

#[test]
fn logical_gpus_map_to_physical_ones_round_robin() {
    let one = Mapping { physical: 1, virtual_gpus: Some(8) };
    for k in 0..8 {
        assert_eq!(one.physical_gpu(&format!("/gpu:{k}")).unwrap(), 0);
    }
    assert_eq!(one.physical_gpu("/job:worker/replica:0/task:3/device:GPU:7").unwrap(), 0);
    assert_eq!(one.physical_gpu("/gpu:8").unwrap_err().code, ErrorCode::NoCuda);
    let four = Mapping { physical: 4, virtual_gpus: Some(8) };
    assert_eq!((0..8).map(|k| four.physical_gpu(&format!("GPU:{k}")).unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3, 0, 1, 2, 3]);
    let plain = Mapping { physical: 8, virtual_gpus: None };
    assert_eq!(plain.physical_gpu("/device:GPU:5").unwrap(), 5);
    assert_eq!(plain.physical_gpu("/gpu:8").unwrap_err().code, ErrorCode::NoCuda);
    assert_eq!(plain.physical_gpu("/cpu:0").unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(plain.physical_gpu("/bogus:1").unwrap_err().code, ErrorCode::InvalidDevice);
    assert_eq!(Mapping { physical: 0, virtual_gpus: Some(2) }.physical_gpu("/gpu:0").unwrap_err().code, ErrorCode::NoCuda);
    assert_eq!(parse_virtual_gpus(None).unwrap(), None);
    assert_eq!(parse_virtual_gpus(Some("")).unwrap(), None);
    assert_eq!(parse_virtual_gpus(Some(" 8 ")).unwrap(), Some(8));
    for bad in ["0", "-1", "eight", "2.5"] {
        assert_eq!(parse_virtual_gpus(Some(bad)).unwrap_err().code, ErrorCode::InvalidArgument, "{bad}");
    }
}
