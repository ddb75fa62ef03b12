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

/// NCCL across processes, as one rank (the GPU machines have one GPU): the bootstrap shares
/// the id over the group, and `CollectiveAllReduce` runs its flat all-reduce through NCCL,
/// matching the ops' definitions for every dtype NCCL reduces.
#[test]
fn nccl_group_of_one_rank_runs_collective_all_reduce() {
    use crossdev_core::group::threads::ThreadGroup;
    use crossdev_core::group::{scoped, ProcessGroup};
    use crossdev_core::ops::{CollectiveAllReduce, CrossDeviceOps};
    use crossdev_core::values::{Destinations, PerDevice};
    use crossdev_core::{Buffer, Tensor, Value};
    use crossdev_cuda::nccl_group::NcclGroup;
    use std::sync::Arc;
    use std::time::Duration;
    let inner: Arc<dyn ProcessGroup> = Arc::new(ThreadGroup::new(1).remove(0));
    let group = match NcclGroup::join(inner, None, Duration::from_secs(60)) {
        Ok(g) => g,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::NoCuda, "{e}");
            return skip(&format!("no GPU or NCCL ({})", e.message));
        }
    };
    assert_eq!(group.gpu(), 0);
    assert!(group.has_all_reduce(crossdev_core::DType::Float32, ReduceOp::Sum));
    // Two devices of the one rank (CollectiveAllReduce needs two): summed here, then NCCL.
    let (device, second) = ("/job:worker/replica:0/task:0/device:GPU:0".to_string(), "/job:worker/replica:0/task:0/device:GPU:1".to_string());
    let data: Vec<f32> = (0..4096).map(|i| (i % 13) as f32 - 6.5).collect();
    let tensor = || Value::Dense(Tensor::new(vec![4096], Buffer::F32(data.clone().into())).unwrap());
    let value = PerDevice::new([(device.clone(), tensor()), (second.clone(), tensor())]).unwrap();
    let ops = CollectiveAllReduce { num_workers: 1, num_gpus_per_worker: 2, all_reduce_merge_scope: 32, timeout: Some(Duration::from_secs(60)), bytes_per_pack: 0 };
    let out = scoped(Arc::new(group), || ops.reduce(ReduceOp::Sum, crossdev_core::values::Input::PerDevice(value.clone()), &Destinations::Values(value.devices()))).unwrap();
    for d in [&device, &second] {
        let Value::Dense(t) = out.get(d).unwrap() else { panic!("dense") };
        let Buffer::F32(got) = &t.data else { panic!("f32") };
        let want: Vec<f32> = data.iter().map(|x| 2.0 * x).collect();
        assert_eq!(&got[..], &want[..], "on {d}");
    }
}
