//! A process group whose ranks are threads of one process, linked by channels: the transport
//! the tests run the cross-process code paths on (plans, agreement, timeouts, lost peers)
//! without MPI. It has no native all-reduce, so every op runs its plan.

use super::{Incoming, Outgoing, ProcessGroup, Wait};
use crate::dtype::DType;
use crate::error::{CrossDeviceError, ErrorCode, Result};
use crate::reduce_op::ReduceOp;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Instant;

/// One rank of a [`ThreadGroup`]; dropping it is how a rank "dies" (its peers see
/// `ERR_PEER_LOST`).
pub struct ThreadGroup {
    rank: usize,
    to: Vec<Sender<Vec<u8>>>,
    from: Vec<Mutex<Receiver<Vec<u8>>>>,
}

impl ThreadGroup {
    /// The `n` ranks of a new group, to be moved one per thread.
    pub fn new(n: usize) -> Vec<ThreadGroup> {
        // links[src][dst]
        let mut senders: Vec<Vec<Option<Sender<Vec<u8>>>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut receivers: Vec<Vec<Option<Receiver<Vec<u8>>>>> = (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for src in 0..n {
            for dst in 0..n {
                let (s, r) = channel();
                senders[src][dst] = Some(s);
                receivers[dst][src] = Some(r);
            }
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| ThreadGroup {
                rank,
                to: to.into_iter().map(|s| s.expect("linked")).collect(),
                from: from.into_iter().map(|r| Mutex::new(r.expect("linked"))).collect(),
            })
            .collect()
    }
}

impl ProcessGroup for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.to.len()
    }

    fn exchange(&self, sends: &[Outgoing], recvs: &mut [Incoming], wait: &Wait) -> Result<()> {
        for s in sends {
            // A peer that is gone shows up on the receiving side; a send never blocks.
            let _ = self.to[s.peer].send(s.data.to_vec());
        }
        for r in recvs.iter_mut() {
            let left = wait.deadline.saturating_duration_since(Instant::now());
            let got = self.from[r.peer].lock().unwrap_or_else(|e| e.into_inner()).recv_timeout(left);
            match got {
                Ok(bytes) if bytes.len() == r.data.len() => r.data.copy_from_slice(&bytes),
                Ok(bytes) => {
                    return Err(CrossDeviceError::new(
                        ErrorCode::RankMismatch,
                        format!("{}: rank {} sent {} bytes where {} were expected: the ranks run different ops", wait.what, r.peer, bytes.len(), r.data.len()),
                    ))
                }
                Err(RecvTimeoutError::Timeout) => return Err(wait.timed_out("waiting for a message", &[r.peer])),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(CrossDeviceError::new(ErrorCode::PeerLost, format!("{}: rank {} is gone (its process ended)", wait.what, r.peer)))
                }
            }
        }
        Ok(())
    }

    fn has_all_reduce(&self, _dtype: DType, _op: ReduceOp) -> bool {
        false
    }

    fn all_reduce(&self, dtype: DType, op: ReduceOp, _input: &[u8], _output: &mut [u8], wait: &Wait) -> Result<()> {
        Err(CrossDeviceError::new(ErrorCode::Internal, format!("{}: a thread group has no all-reduce of {} {}", wait.what, op.name(), dtype.name())))
    }
}
