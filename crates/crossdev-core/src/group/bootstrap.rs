//! Bootstrapping a second transport from the group: rank 0 makes a secret (NCCL's unique id)
//! and every rank needs the same bytes before it can join. Shared over the process group (MPI),
//! or through a file the user names when there is no group (a shared filesystem).

use super::{Incoming, Outgoing, ProcessGroup, Wait};
use crate::error::{CrossDeviceError, ErrorCode, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// Rank 0 runs `make` and sends its `len` bytes to every other rank; every rank returns them.
/// A failure of `make` on rank 0 is sent as well, so the other ranks fail with its message
/// instead of waiting for bytes that will never come.
pub fn share_from_root(group: &dyn ProcessGroup, len: usize, make: impl FnOnce() -> Result<Vec<u8>>, wait: &Wait) -> Result<Vec<u8>> {
    // One status byte (0: ok, 1: failed, message follows in the payload) and the payload.
    let mut message = vec![0u8; 1 + len.max(256)];
    if group.rank() == 0 {
        match make() {
            Ok(bytes) if bytes.len() == len => message[1..1 + len].copy_from_slice(&bytes),
            Ok(bytes) => return Err(CrossDeviceError::new(ErrorCode::Internal, format!("{}: made {} bytes, {len} expected", wait.what, bytes.len()))),
            Err(e) => {
                message[0] = 1;
                let text = e.message.as_bytes();
                let n = text.len().min(message.len() - 1);
                message[1..1 + n].copy_from_slice(&text[..n]);
                send_all(group, &message, wait)?;
                return Err(e);
            }
        }
        send_all(group, &message, wait)?;
    } else {
        group.exchange(&[], &mut [Incoming { peer: 0, data: &mut message }], wait)?;
        if message[0] != 0 {
            let text = String::from_utf8_lossy(&message[1..]).trim_end_matches('\0').to_string();
            return Err(CrossDeviceError::new(ErrorCode::NoCuda, format!("{}: rank 0 failed: {text}", wait.what)));
        }
    }
    Ok(message[1..1 + len].to_vec())
}

fn send_all(group: &dyn ProcessGroup, message: &[u8], wait: &Wait) -> Result<()> {
    let sends: Vec<Outgoing> = (1..group.size()).map(|peer| Outgoing { peer, data: message }).collect();
    group.exchange(&sends, &mut [], wait)
}

/// Without a process group: rank 0 runs `make` and writes its bytes to `path` (atomically:
/// a temporary file renamed into place); the other ranks wait for the file, at most `timeout`.
/// The file holds a secret of this job only: remove it when every rank has joined.
pub fn share_via_file(path: &Path, rank: usize, len: usize, make: impl FnOnce() -> Result<Vec<u8>>, timeout: Duration) -> Result<Vec<u8>> {
    let io = |what: &str, e: std::io::Error| CrossDeviceError::new(ErrorCode::InvalidArgument, format!("{what} {}: {e}", path.display()));
    if rank == 0 {
        let bytes = make()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| io("cannot write", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("cannot rename into", e))?;
        return Ok(bytes);
    }
    let until = Instant::now() + timeout;
    loop {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == len => return Ok(bytes),
            Ok(bytes) => {
                return Err(CrossDeviceError::new(ErrorCode::RankMismatch, format!("{} holds {} bytes, {len} expected: is it another job's file?", path.display(), bytes.len())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot read", e)),
        }
        if Instant::now() >= until {
            return Err(CrossDeviceError::new(
                ErrorCode::Timeout,
                format!("rank {rank} waited {} s for rank 0 to write {}: rank 0 did not arrive", timeout.as_secs_f64(), path.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
