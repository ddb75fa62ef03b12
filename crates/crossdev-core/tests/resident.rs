//! GPU tensors through the wire protocol, over a store that keeps their elements in host memory
//! (so that the staging, the handles in requests and responses, and dispose semantics are
//! checked on every machine; crossdev-cuda runs the same checks over GPU memory).

mod resident_matrix;

use crossdev_core::ops::all_reduce::AllReduceAlgorithm;
use crossdev_core::plan::{host, Plan};
use crossdev_core::resident::{install, Resident, ResidentStore, Usage};
use crossdev_core::{Buffer, CrossDeviceError, DType, DeviceSpec, ErrorCode, ReduceOp};
use resident_matrix::{check_dispose, check_every_op, check_in_device_memory, serial, usage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Resident tensors kept in host memory, by handle, with the device each was put on; plans run
/// by the host executor. It stands for a machine with a GPU per device index (whatever the task,
/// as a process drives its machine's GPUs), and its collective all-reduce (NCCL's, in
/// crossdev-cuda's store) is NCCL's ring run as a plan over distinct GPUs, so that the routes
/// through NCCL are taken here too, with the host path's results.
#[derive(Default)]
struct HostStore {
    buffers: Mutex<(u64, HashMap<u64, Held>)>,
}

/// A resident tensor's device and elements.
type Held = (String, Buffer<'static>);

impl HostStore {
    fn insert(&self, device: &str, data: Buffer<'static>) -> u64 {
        let mut b = self.buffers.lock().unwrap();
        b.0 += 1;
        let handle = b.0;
        b.1.insert(handle, (device.to_string(), data));
        handle
    }

    fn get(&self, handle: u64) -> crossdev_core::Result<Held> {
        let b = self.buffers.lock().unwrap();
        b.1.get(&handle).cloned().ok_or_else(|| CrossDeviceError::new(ErrorCode::Disposed, format!("{handle} was released")))
    }
}

impl ResidentStore for HostStore {
    fn upload(&self, device: &str, data: &Buffer) -> crossdev_core::Result<u64> {
        Ok(self.insert(device, data.clone().into_owned()))
    }

    fn download(&self, handle: u64) -> crossdev_core::Result<Buffer<'static>> {
        Ok(self.get(handle)?.1)
    }

    fn describe(&self, handle: u64) -> crossdev_core::Result<Resident> {
        let (device, data) = self.get(handle)?;
        Ok(Resident { device, dtype: data.dtype(), len: data.len() })
    }

    fn concat(&self, device: &str, dtype: DType, parts: &[(u64, usize, usize)]) -> crossdev_core::Result<u64> {
        let mut bytes = Vec::new();
        for &(h, offset, len) in parts {
            let (_, data) = self.get(h)?;
            assert_eq!(data.dtype(), dtype);
            bytes.extend_from_slice(&data.as_bytes()[offset * dtype.size()..(offset + len) * dtype.size()]);
        }
        Ok(self.insert(device, Buffer::from_bytes(dtype, &bytes).into_owned()))
    }

    fn run_plan(&self, plan: &Plan, op: ReduceOp, inputs: &[u64]) -> crossdev_core::Result<Vec<u64>> {
        let held = inputs.iter().map(|&h| self.get(h)).collect::<crossdev_core::Result<Vec<_>>>()?;
        for (i, (device, _)) in held.iter().enumerate() {
            assert_eq!(*device, plan.devices[plan.buffers[i].device], "input {i} of the plan is on its device");
        }
        let outs = host::run(plan, op, &held.iter().map(|(_, b)| b).collect::<Vec<_>>())?;
        Ok(held.iter().zip(outs).map(|((device, _), out)| self.insert(device, out)).collect())
    }

    fn collective_all_reduce(&self, op: ReduceOp, inputs: &[u64]) -> crossdev_core::Result<Option<Vec<u64>>> {
        let held = inputs.iter().map(|&h| self.get(h)).collect::<crossdev_core::Result<Vec<_>>>()?;
        let devices: Vec<String> = held.iter().map(|(d, _)| d.clone()).collect();
        let mut gpus: Vec<i64> = devices.iter().map(|d| DeviceSpec::parse(d).unwrap().device_index.unwrap()).collect();
        gpus.sort_unstable();
        gpus.dedup();
        if gpus.len() != devices.len() {
            return Ok(None);
        }
        let plan = AllReduceAlgorithm::Nccl.plan(&devices, held[0].1.dtype(), held[0].1.len(), 0)?;
        self.run_plan(&plan, op, inputs).map(Some)
    }

    fn release(&self, handle: u64) -> bool {
        self.buffers.lock().unwrap().1.remove(&handle).is_some()
    }

    fn usage(&self) -> Usage {
        let b = self.buffers.lock().unwrap();
        Usage { buffers: b.1.len(), bytes: b.1.values().map(|(_, x)| x.as_bytes().len()).sum() }
    }
}

/// Installs the host store (once; every test of this file shares it).
fn store() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| install(Arc::new(HostStore::default())));
}

#[test]
fn every_op_on_gpu_tensors_matches_host_tensors_bit_for_bit() {
    store();
    let _one = serial();
    let compared = check_every_op();
    assert!(compared > 5000, "only {compared} results compared");
    assert_eq!(usage(), Usage::default());
}

#[test]
fn all_reduces_onto_their_own_devices_run_in_device_memory() {
    store();
    let _one = serial();
    check_in_device_memory(true);
}

#[test]
fn dispose_semantics() {
    store();
    let _one = serial();
    check_dispose();
}
