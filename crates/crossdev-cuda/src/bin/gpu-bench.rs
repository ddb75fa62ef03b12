//! `gpu-bench`: the N-way reduce kernel against a device-to-device copy, measured in the same
//! run on the same GPU, and a ring all-reduce over N logical GPUs sharing GPU 0 (the plan
//! executor: a stream per logical device, events between them). Prints one JSON object on
//! stdout. Usage: `gpu-bench [MiB per input] [N]`.

use crossdev_core::algo::ring::build_ring_all_reduce;
use crossdev_core::{Buffer, DType, ReduceOp};
use crossdev_cuda::executor::{Contexts, DeviceBuffer, GpuExecutor};
use crossdev_cuda::kernels::ReduceKernels;
use cudarc::driver::{CudaContext, CudaSlice, DevicePtr};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Seconds per call of `f`, after one warm-up call, over `iters` calls; `sync` waits for the GPU.
fn time(iters: usize, f: &mut dyn FnMut() -> Res<()>, sync: &dyn Fn() -> Res<()>) -> Res<f64> {
    f()?;
    sync()?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    sync()?;
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).map_or(Ok(256), |a| a.parse())?;
    let n: usize = args.get(2).map_or(Ok(8), |a| a.parse())?;
    crossdev_cuda::probe::gpu_count()?;
    let ctx = CudaContext::new(0)?;
    let name = ctx.name()?;
    let s = ctx.default_stream();
    let elements = mib * (1 << 20) / 4;
    let bytes = elements * 4;
    let value = |d: usize| d as f32 + 0.5;
    let inputs: Vec<CudaSlice<f32>> = (0..n).map(|d| s.clone_htod(&vec![value(d); elements])).collect::<Result<_, _>>()?;
    let out = s.alloc_zeros::<f32>(elements)?;
    let kernels = ReduceKernels::load(&ctx)?;
    let function = kernels.function(DType::Float32, ReduceOp::Sum)?;
    let pointers: Vec<u64> = inputs.iter().map(|x| x.device_ptr(&s).0).collect();
    let pointers = s.clone_htod(&pointers)?;
    let (out_at, pointers_at) = (out.device_ptr(&s).0, pointers.device_ptr(&s).0);
    let sync = || -> Res<()> { Ok(s.synchronize()?) };

    let mut copy_dst = s.alloc_zeros::<f32>(elements)?;
    let copy_s = time(20, &mut || Ok(s.memcpy_dtod(&inputs[0], &mut copy_dst)?), &sync)?;
    // SAFETY: `out` and the `n` inputs are `elements` f32 each, in this context, and live
    // until the end of `main`; `pointers` holds their addresses.
    let reduce_s = time(20, &mut || Ok(unsafe { kernels.launch(&s, &function, out_at, pointers_at, n, elements, 0) }?), &sync)?;
    let check = s.clone_dtoh(&out.slice(0..1))?[0];
    let want: f32 = (0..n).map(value).sum();

    // The ring over N logical GPUs on GPU 0: inputs resident, outputs allocated per run.
    let devices: Vec<String> = (0..n).map(|d| format!("/gpu:{d}")).collect();
    let plan = build_ring_all_reduce(&devices, elements, DType::Float32, 1, 1, &(0..n).collect::<Vec<_>>())?;
    let executor = GpuExecutor::new(Some(n), Contexts::PerGpu)?;
    let resident: Vec<DeviceBuffer> =
        (0..n).map(|d| executor.upload(&devices[d], &Buffer::F32(vec![value(d); elements].into()))).collect::<Result<_, _>>()?;
    let refs: Vec<&DeviceBuffer> = resident.iter().collect();
    let mut ring_ok = true;
    let ring_s = time(5, &mut || {
        let outs = executor.run_plan_on_device(&plan, ReduceOp::Sum, &refs)?;
        ring_ok &= outs.len() == n;
        Ok(())
    }, &|| Ok(()))?;
    let ring_first = executor.run_plan_on_device(&plan, ReduceOp::Sum, &refs)?;
    let Buffer::F32(got) = ring_first[n - 1].to_host()? else { unreachable!("a float32 plan gives float32") };
    ring_ok &= got.iter().all(|&x| x == want);

    // Traffic: a copy reads and writes S bytes; the reduce reads N·S and writes S. The ring's
    // bus bandwidth (NCCL's convention): 2(N-1)/N · S per all-reduce time.
    let copy_gbs = 2.0 * bytes as f64 / copy_s / 1e9;
    let reduce_gbs = (n + 1) as f64 * bytes as f64 / reduce_s / 1e9;
    let ring_busbw = 2.0 * (n - 1) as f64 / n as f64 * bytes as f64 / ring_s / 1e9;
    println!(
        "{{\"gpu\":{name:?},\"mib_per_input\":{mib},\"inputs\":{n},\"copy_ms\":{:.3},\"copy_gbs\":{copy_gbs:.1},\"reduce_ms\":{:.3},\"reduce_gbs\":{reduce_gbs:.1},\"reduce_over_copy\":{:.3},\"correct\":{},\"ring_virtual_gpus\":{n},\"ring_ms\":{:.3},\"ring_busbw_gbs\":{ring_busbw:.1},\"ring_correct\":{ring_ok}}}",
        copy_s * 1e3,
        reduce_s * 1e3,
        reduce_gbs / copy_gbs,
        check == want,
        ring_s * 1e3,
    );
    Ok(())
}
