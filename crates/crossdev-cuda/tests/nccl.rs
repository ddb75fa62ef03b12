//! NCCL with the process's GPUs (one rank on a one-GPU machine): an all-reduce of every op gives
//! what the ops define. Without a GPU or NCCL it prints why it is skipped, after checking that
//! asking is a clean `ERR_NO_CUDA` error.

use crossdev_core::{ErrorCode, ReduceOp};
use crossdev_cuda::nccl::Communicator;
use crossdev_cuda::probe::gpu_count;

fn skip(why: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("skipped: {why}\n").as_bytes());
}

#[test]
fn all_reduce_over_the_gpus_of_this_process() {
    let n = match gpu_count() {
        Ok(n) => n,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::NoCuda, "{e}");
            return skip(&format!("no GPU ({})", e.message));
        }
    };
    let comm = match Communicator::over_gpus(n) {
        Ok(c) => c,
        Err(e) if e.code == ErrorCode::NoCuda => return skip(&format!("no NCCL ({})", e.message)),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(comm.size(), n);
    let inputs: Vec<Vec<f32>> = (0..n).map(|r| (0..1000).map(|i| (i % 7) as f32 + r as f32).collect()).collect();
    for op in ReduceOp::ALL {
        let mut bufs: Vec<_> = (0..n)
            .map(|r| cudarc::driver::CudaContext::new(r).unwrap().default_stream().clone_htod(&inputs[r]).unwrap())
            .collect();
        comm.all_reduce(&mut bufs, op).unwrap();
        let want: Vec<f32> = (0..1000)
            .map(|i| {
                let xs = inputs.iter().map(|x| x[i]);
                match op {
                    ReduceOp::Sum => xs.sum(),
                    ReduceOp::Mean => xs.sum::<f32>() / n as f32,
                    ReduceOp::Max => xs.fold(f32::MIN, f32::max),
                    ReduceOp::Min => xs.fold(f32::MAX, f32::min),
                    ReduceOp::Product => xs.product(),
                }
            })
            .collect();
        for (r, b) in bufs.iter().enumerate() {
            let got = cudarc::driver::CudaContext::new(r).unwrap().default_stream().clone_dtoh(b).unwrap();
            assert_eq!(got, want, "{op:?} rank {r}");
        }
    }
}
