//! Process groups: the processes of one job (MPI ranks), each owning its local devices.
//!
//! The cross-worker ops (`MultiWorkerAllReduce`, `CollectiveAllReduce`) run across processes
//! when a group is installed: each rank passes the values of its own devices, the ranks agree on
//! what they reduce ([`agree`](crate::ops::processes)), and the plan's steps that cross ranks
//! become messages of the group's transport. The transport (MPI in `crossdev-mpi`, threads in
//! [`threads`] for tests) lives outside the algorithms, which stay written once.

pub mod bootstrap;
pub mod threads;

use crate::dtype::DType;
use crate::error::{CrossDeviceError, ErrorCode, Result};
use crate::reduce_op::ReduceOp;
use std::cell::RefCell;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// What a blocking group operation is waiting for and until when: its errors name the op.
#[derive(Clone, Debug)]
pub struct Wait {
    /// The op being run, as users know it (e.g. `CollectiveAllReduce.batch_reduce`).
    pub what: String,
    /// When the op gives up.
    pub deadline: Instant,
    /// The op's whole timeout (for messages).
    pub timeout: Duration,
}

impl Wait {
    /// A wait for `what` of at most `timeout` from now.
    pub fn new(what: impl Into<String>, timeout: Duration) -> Wait {
        Wait { what: what.into(), deadline: Instant::now() + timeout, timeout }
    }

    /// The `ERR_TIMEOUT` error of this wait: `missing` are the ranks that never answered.
    pub fn timed_out(&self, stage: &str, missing: &[usize]) -> CrossDeviceError {
        CrossDeviceError::new(
            ErrorCode::Timeout,
            format!(
                "{} timed out after {} s {stage}: rank{} {} did not arrive (a process died, hangs, or runs a different op)",
                self.what,
                self.timeout.as_secs_f64(),
                if missing.len() == 1 { "" } else { "s" },
                list(missing)
            ),
        )
    }
}

/// `0, 2` for `[0, 2]`, `?` when nothing is known.
pub fn list(ranks: &[usize]) -> String {
    if ranks.is_empty() {
        return "?".into();
    }
    ranks.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

/// A message to send: `data` to rank `peer`.
pub struct Outgoing<'a> {
    /// Destination rank.
    pub peer: usize,
    /// Bytes sent.
    pub data: &'a [u8],
}

/// A message to receive: exactly `data.len()` bytes from rank `peer`.
pub struct Incoming<'a> {
    /// Source rank.
    pub peer: usize,
    /// Where the bytes land.
    pub data: &'a mut [u8],
}

/// The processes of a job. Messages between two ranks arrive in the order they were posted,
/// so sender and receiver that walk the same plan in the same order pair them up without tags.
pub trait ProcessGroup: Send + Sync {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;

    /// Number of processes.
    fn size(&self) -> usize;

    /// Posts every send and receive at once and returns when all are done, or fails with
    /// `ERR_TIMEOUT` / `ERR_PEER_LOST` naming the ranks that did not answer before `wait`'s
    /// deadline.
    fn exchange(&self, sends: &[Outgoing], recvs: &mut [Incoming], wait: &Wait) -> Result<()>;

    /// Whether [`Self::all_reduce`] can reduce `dtype` with `op` (SUM, PRODUCT, MAX or MIN) with
    /// exactly crossdev's semantics (NaN wins MAX and MIN; half types are not MPI types).
    fn has_all_reduce(&self, dtype: DType, op: ReduceOp) -> bool;

    /// Reduces `input` (elements of `dtype`) element-wise across all ranks into `output` with
    /// the transport's own collective (MPI_Allreduce); only called where
    /// [`Self::has_all_reduce`].
    fn all_reduce(&self, dtype: DType, op: ReduceOp, input: &[u8], output: &mut [u8], wait: &Wait) -> Result<()>;

    /// The ranks that do not answer a roll call now (dead, hung, or not in a crossdev op),
    /// within a small share of `wait`'s timeout; empty when the transport cannot tell.
    fn roll_call(&self, _wait: &Wait) -> Vec<usize> {
        Vec::new()
    }

    /// Every rank's `mine`, in rank order (all ranks call it).
    fn all_gather(&self, mine: &[u8], wait: &Wait) -> Result<Vec<Vec<u8>>> {
        let (me, n) = (self.rank(), self.size());
        let peers: Vec<usize> = (0..n).filter(|&p| p != me).collect();
        let len = (mine.len() as u64).to_le_bytes();
        let mut lens = vec![[0u8; 8]; n];
        let sends: Vec<Outgoing> = peers.iter().map(|&peer| Outgoing { peer, data: &len }).collect();
        let mut recvs: Vec<Incoming> = lens.iter_mut().enumerate().filter(|(p, _)| *p != me).map(|(peer, data)| Incoming { peer, data }).collect();
        self.exchange(&sends, &mut recvs, wait)?;
        let mut all: Vec<Vec<u8>> = lens.iter().map(|l| vec![0u8; u64::from_le_bytes(*l) as usize]).collect();
        all[me] = mine.to_vec();
        let sends: Vec<Outgoing> = peers.iter().map(|&peer| Outgoing { peer, data: mine }).collect();
        let mut recvs: Vec<Incoming> = all.iter_mut().enumerate().filter(|(p, _)| *p != me).map(|(peer, data)| Incoming { peer, data }).collect();
        self.exchange(&sends, &mut recvs, wait)?;
        Ok(all)
    }
}

static INSTALLED: RwLock<Option<Arc<dyn ProcessGroup>>> = RwLock::new(None);

thread_local! {
    static SCOPED: RefCell<Option<Arc<dyn ProcessGroup>>> = const { RefCell::new(None) };
}

/// Makes `group` the process group of every later cross-worker op (the bindings call this once,
/// at `init`).
pub fn install(group: Arc<dyn ProcessGroup>) {
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(group);
}

/// Removes the installed group (at `finalize`): later ops run in one process again.
pub fn uninstall() {
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Runs `f` with `group` as this thread's process group (several ranks as threads of one
/// process, as the tests do).
pub fn scoped<R>(group: Arc<dyn ProcessGroup>, f: impl FnOnce() -> R) -> R {
    let previous = SCOPED.with(|s| s.replace(Some(group)));
    let out = f();
    SCOPED.with(|s| *s.borrow_mut() = previous);
    out
}

/// The group cross-worker ops run over on this thread: a scoped one, else the installed one.
pub fn current() -> Option<Arc<dyn ProcessGroup>> {
    SCOPED.with(|s| s.borrow().clone()).or_else(|| INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone())
}
