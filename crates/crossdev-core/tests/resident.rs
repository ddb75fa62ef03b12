//! GPU tensors through the wire protocol, over a store that keeps their elements in host memory
//! (so that the staging, the handles in requests and responses, and dispose semantics are
//! checked on every machine; crossdev-cuda runs the same checks over GPU memory).

mod resident_matrix;

use crossdev_core::resident::{install, ResidentStore, Usage};
use crossdev_core::{Buffer, CrossDeviceError, ErrorCode};
use resident_matrix::{check_dispose, check_every_op, serial, usage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Resident tensors kept in host memory, by handle.
#[derive(Default)]
struct HostStore {
    buffers: Mutex<(u64, HashMap<u64, Buffer<'static>>)>,
}

impl ResidentStore for HostStore {
    fn upload(&self, _device: &str, data: &Buffer) -> crossdev_core::Result<u64> {
        let mut b = self.buffers.lock().unwrap();
        b.0 += 1;
        let handle = b.0;
        b.1.insert(handle, data.clone().into_owned());
        Ok(handle)
    }

    fn download(&self, handle: u64) -> crossdev_core::Result<Buffer<'static>> {
        let b = self.buffers.lock().unwrap();
        b.1.get(&handle).cloned().ok_or_else(|| CrossDeviceError::new(ErrorCode::Disposed, format!("{handle} was released")))
    }

    fn release(&self, handle: u64) -> bool {
        self.buffers.lock().unwrap().1.remove(&handle).is_some()
    }

    fn usage(&self) -> Usage {
        let b = self.buffers.lock().unwrap();
        Usage { buffers: b.1.len(), bytes: b.1.values().map(|x| x.as_bytes().len()).sum() }
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
fn dispose_semantics() {
    store();
    let _one = serial();
    check_dispose();
}
