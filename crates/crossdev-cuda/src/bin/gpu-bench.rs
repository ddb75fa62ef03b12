//! `gpu-bench`: the N-way reduce kernel against a device-to-device copy, measured in the same
//! run on the same GPU. Prints one JSON object on stdout. Usage: `gpu-bench [MiB per input] [N]`.

use crossdev_core::{DType, ReduceOp};
use crossdev_cuda::kernels::{compile, reduce_kernel};
use cudarc::driver::{CudaContext, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).map_or(Ok(256), |a| a.parse())?;
    let n: usize = args.get(2).map_or(Ok(8), |a| a.parse())?;
    crossdev_cuda::probe::gpu_count()?;
    let ctx = CudaContext::new(0)?;
    let name = ctx.name()?;
    let s = ctx.default_stream();
    let elements = mib * (1 << 20) / 4;
    let bytes = elements * 4;
    let inputs: Vec<CudaSlice<f32>> = (0..n).map(|d| s.clone_htod(&vec![d as f32 + 0.5; elements])).collect::<Result<_, _>>()?;
    let mut out = s.alloc_zeros::<f32>(elements)?;
    let ptx = compile("compute_80")?.into_iter().find(|(f, _)| *f == "reduce_n.cu").expect("reduce_n.cu").1;
    let function = ctx.load_module(ptx)?.load_function(&reduce_kernel(DType::Float32, ReduceOp::Sum))?;
    let pointers: Vec<u64> = inputs.iter().map(|x| x.device_ptr(&s).0).collect();
    let pointers = s.clone_htod(&pointers)?;
    let time = |f: &mut dyn FnMut() -> Result<(), Box<dyn std::error::Error>>| -> Result<f64, Box<dyn std::error::Error>> {
        f()?;
        s.synchronize()?;
        let iters = 20;
        let t = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        s.synchronize()?;
        Ok(t.elapsed().as_secs_f64() / iters as f64)
    };
    let mut copy_dst = s.alloc_zeros::<f32>(elements)?;
    let copy_s = time(&mut || Ok(s.memcpy_dtod(&inputs[0], &mut copy_dst)?))?;
    let sms = ctx.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
    let reduce_s = time(&mut || {
        let mut launch = s.launch_builder(&function);
        let (len, n_i, div) = (elements as u64, n as i32, 0i32);
        launch.arg(&mut out).arg(&pointers).arg(&n_i).arg(&len).arg(&div);
        let cfg = LaunchConfig { grid_dim: (sms * 8, 1, 1), block_dim: (512, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: arguments match the kernel's (float*, const float* const*, int, u64, int).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    })?;
    let check = s.clone_dtoh(&out.slice(0..1))?[0];
    let want: f32 = (0..n).map(|d| d as f32 + 0.5).sum();
    // Traffic: a copy reads and writes S bytes; the reduce reads N·S and writes S.
    let copy_gbs = 2.0 * bytes as f64 / copy_s / 1e9;
    let reduce_gbs = (n + 1) as f64 * bytes as f64 / reduce_s / 1e9;
    println!(
        "{{\"gpu\":{name:?},\"mib_per_input\":{mib},\"inputs\":{n},\"copy_ms\":{:.3},\"copy_gbs\":{copy_gbs:.1},\"reduce_ms\":{:.3},\"reduce_gbs\":{reduce_gbs:.1},\"reduce_over_copy\":{:.3},\"correct\":{}}}",
        copy_s * 1e3,
        reduce_s * 1e3,
        reduce_gbs / copy_gbs,
        check == want
    );
    Ok(())
}
