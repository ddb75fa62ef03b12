//! GPU runtime tests: every algorithm's plan run on one GPU (logical devices as separate
//! buffers) gives exactly the host executor's results, for every dtype and op. On a machine
//! without a GPU they print `skipped: no GPU` and check only that asking for one is a clean
//! `ERR_NO_CUDA` error, never a panic.

use crossdev_core::algo::hierarchical_copy::build_hierarchical_copy;
use crossdev_core::algo::recursive_hd::build_recursive_hd_all_reduce;
use crossdev_core::algo::reduce_to_one::build_reduce_to_one;
use crossdev_core::algo::ring::build_ring_all_reduce;
use crossdev_core::algo::shuffle::build_shuffle_all_reduce;
use crossdev_core::kernels::cast::from_f64;
use crossdev_core::plan::{host, Plan};
use crossdev_core::{Buffer, DType, ErrorCode, ReduceOp};
use crossdev_cuda::executor::Gpu;
use crossdev_cuda::probe::gpu_count;

fn gpu() -> Option<Gpu> {
    match gpu_count() {
        Ok(_) => Some(Gpu::open(0).expect("a present GPU opens")),
        Err(e) => {
            assert_eq!(e.code, ErrorCode::NoCuda, "{e}");
            // Straight to stderr, past the test harness's capture, so that the skip is visible.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped: no GPU ({})\n", e.message).as_bytes());
            None
        }
    }
}

fn plans(devices: &[String], elements: usize, dtype: DType) -> Vec<Plan> {
    let n = devices.len();
    let mut plans = vec![
        build_ring_all_reduce(devices, elements, dtype, 1, 1, &(0..n).collect::<Vec<_>>()).unwrap(),
        build_shuffle_all_reduce(devices, &devices[..2], elements, dtype).unwrap(),
        build_hierarchical_copy(devices, elements, dtype, 3).unwrap(),
        build_reduce_to_one(devices, elements, dtype).unwrap(),
    ];
    if n.is_power_of_two() && elements % n == 0 {
        plans.push(build_recursive_hd_all_reduce(devices, elements, dtype).unwrap());
    }
    plans
}

#[test]
fn every_plan_on_the_gpu_matches_the_host_executor() {
    let Some(gpu) = gpu() else { return };
    for n in [2usize, 3, 8] {
        let devices: Vec<String> = (0..n).map(|d| format!("/gpu:{d}")).collect();
        for dtype in DType::ALL {
            let elements = 1000 * n;
            let inputs: Vec<Buffer> = (0..n)
                .map(|d| from_f64(&(0..elements).map(|i| ((i * 7 + d * 13) % 23) as f64 - 11.5).collect::<Vec<_>>(), dtype))
                .collect();
            let refs: Vec<&Buffer> = inputs.iter().collect();
            for plan in plans(&devices, elements, dtype) {
                for op in ReduceOp::ALL {
                    let want = host::run(&plan, op, &refs).unwrap();
                    let got = gpu.run_plan(&plan, op, &refs).unwrap();
                    for (d, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g.as_bytes(), w.as_bytes(), "{} {} {:?} device {d}", plan.algorithm, dtype.name(), op);
                    }
                }
            }
        }
    }
}
