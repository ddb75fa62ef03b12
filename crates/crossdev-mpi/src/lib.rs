//! crossdev's process group over MPI: rank `r` of `MPI_COMM_WORLD` is worker `r`
//! (`/job:worker/replica:0/task:<r>`), and the cross-worker ops of crossdev-core run across the
//! ranks: plans as MPI point-to-point messages, flat all-reduces as `MPI_Iallreduce`.
//!
//! Built as an optional part (the `mpi` feature of the Node addon), so the default binary does
//! not need libmpi. Every wait polls non-blocking requests against the op's deadline: a rank
//! that dies, hangs or never arrives makes the others fail with `ERR_TIMEOUT` or
//! `ERR_PEER_LOST` naming it (found by a roll call that every waiting rank answers), never a
//! hang. After such a failure the group is aborted: later ops fail at once with the same error.

use crossdev_core::error::{CrossDeviceError, ErrorCode, Result};
use crossdev_core::group::{list, Incoming, Outgoing, ProcessGroup, Wait};
use crossdev_core::{DType, ReduceOp};
use mpi::ffi;
use std::ffi::{c_int, c_void};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Tag of the plans' data messages.
const TAG_DATA: c_int = 11;
/// Tag of a roll call ("are you there?") and of its answer.
const TAG_ROLL: c_int = 12;
const TAG_HERE: c_int = 13;
/// Longest a roll call waits for answers from ranks that are themselves waiting (ranks answer
/// within microseconds while they wait).
const ROLL_CALL: Duration = Duration::from_secs(2);

/// The roll call's share of an op's timeout: it runs at the end of the timeout, not after it.
fn roll_call_window(wait: &Wait) -> Duration {
    ROLL_CALL.min(wait.timeout / 10)
}
/// Largest message or all-reduce piece, in bytes (MPI counts are C ints).
const PIECE: usize = 1 << 30;

/// The MPI process group of this process (there is one: `MPI_COMM_WORLD`, duplicated so that
/// crossdev's messages never mix with the application's own MPI traffic).
pub struct MpiGroup {
    rank: usize,
    size: usize,
    comm: ffi::MPI_Comm,
    /// Serialises MPI calls (MPI is initialised with `MPI_THREAD_SERIALIZED`; Node calls come from
    /// the main thread and libuv's pool).
    lock: Mutex<()>,
    /// The failure that aborted the group, if one did.
    failure: Mutex<Option<CrossDeviceError>>,
}

// SAFETY: the communicator is a handle used only under `lock`.
unsafe impl Send for MpiGroup {}
unsafe impl Sync for MpiGroup {}

static GROUP: OnceLock<std::result::Result<Arc<MpiGroup>, CrossDeviceError>> = OnceLock::new();

fn mpi_error(rc: c_int) -> String {
    let mut buf = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: the buffer is larger than MPI_MAX_ERROR_STRING (256 in Open MPI).
    unsafe { ffi::MPI_Error_string(rc, buf.as_mut_ptr() as *mut _, &mut len) };
    buf.truncate(len.max(0) as usize);
    String::from_utf8_lossy(&buf).into_owned()
}

fn check(rc: c_int, call: &str) -> Result<()> {
    if rc == ffi::MPI_SUCCESS as c_int {
        return Ok(());
    }
    Err(CrossDeviceError::new(ErrorCode::PeerLost, format!("{call} failed: {}", mpi_error(rc))))
}

/// Initialises MPI (once per process, `MPI_THREAD_SERIALIZED`) and returns the world group.
pub fn init() -> Result<Arc<MpiGroup>> {
    GROUP.get_or_init(|| unsafe { open() }).clone()
}

unsafe fn open() -> Result<Arc<MpiGroup>> {
    // Open MPI's plugins resolve symbols of libmpi globally; a Node addon is loaded with
    // RTLD_LOCAL, so make the already-loaded libmpi global first.
    for name in [c"libmpi.so.40", c"libmpi.so"] {
        if !libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL | libc::RTLD_NOLOAD).is_null() {
            break;
        }
    }
    let mut initialized: c_int = 0;
    ffi::MPI_Initialized(&mut initialized);
    if initialized == 0 {
        let mut provided: c_int = 0;
        let required = ffi::MPI_THREAD_SERIALIZED as c_int;
        check(ffi::MPI_Init_thread(std::ptr::null_mut(), std::ptr::null_mut(), required, &mut provided), "MPI_Init_thread")?;
        if provided < required {
            return Err(CrossDeviceError::new(ErrorCode::InvalidArgument, format!("this MPI provides thread level {provided}; crossdev needs MPI_THREAD_SERIALIZED ({required})")));
        }
    }
    let mut comm: ffi::MPI_Comm = std::mem::zeroed();
    check(ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, &mut comm), "MPI_Comm_dup")?;
    check(ffi::MPI_Comm_set_errhandler(comm, ffi::RSMPI_ERRORS_RETURN), "MPI_Comm_set_errhandler")?;
    let (mut rank, mut size) = (0, 0);
    ffi::MPI_Comm_rank(comm, &mut rank);
    ffi::MPI_Comm_size(comm, &mut size);
    Ok(Arc::new(MpiGroup { rank: rank as usize, size: size as usize, comm, lock: Mutex::new(()), failure: Mutex::new(None) }))
}

/// Ends MPI for this process (`MPI_Finalize`), unless a failure aborted the group: finalising
/// with a lost peer can hang, so an aborted process just exits.
pub fn finalize() {
    if let Some(Ok(group)) = GROUP.get() {
        let _guard = group.lock.lock().unwrap_or_else(|e| e.into_inner());
        if group.failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return;
        }
        let mut finalized: c_int = 0;
        unsafe {
            ffi::MPI_Finalized(&mut finalized);
            if finalized == 0 {
                ffi::MPI_Finalize();
            }
        }
    }
}

/// A posted request and what it waits for.
struct Pending {
    request: ffi::MPI_Request,
    peer: Option<usize>,
    receive: Option<usize>,
}

impl MpiGroup {
    /// The job's name for this rank's worker: `/job:worker/replica:0/task:<rank>`.
    pub fn worker(&self) -> String {
        format!("/job:worker/replica:0/task:{}", self.rank)
    }

    fn aborted(&self) -> Result<()> {
        match &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(CrossDeviceError::new(e.code, format!("the process group was aborted by an earlier failure: {}", e.message))),
            None => Ok(()),
        }
    }

    fn abort(&self, e: CrossDeviceError) -> CrossDeviceError {
        *self.failure.lock().unwrap_or_else(|x| x.into_inner()) = Some(e.clone());
        e
    }

    /// Answers the roll calls of other ranks (called while waiting, so that waiting ranks count
    /// as present).
    unsafe fn answer_roll_calls(&self) {
        loop {
            let (mut flag, mut status): (c_int, ffi::MPI_Status) = (0, std::mem::zeroed());
            if ffi::MPI_Iprobe(ffi::RSMPI_ANY_SOURCE, TAG_ROLL, self.comm, &mut flag, &mut status) != 0 || flag == 0 {
                return;
            }
            let mut nonce = [0u8; 8];
            let from = status.MPI_SOURCE;
            ffi::MPI_Recv(nonce.as_mut_ptr() as *mut c_void, 8, ffi::RSMPI_UINT8_T, from, TAG_ROLL, self.comm, ffi::RSMPI_STATUS_IGNORE);
            ffi::MPI_Send(nonce.as_ptr() as *const c_void, 8, ffi::RSMPI_UINT8_T, from, TAG_HERE, self.comm);
        }
    }

    /// The ranks that do not answer a roll call within `window`: dead, hung, or busy outside
    /// crossdev.
    unsafe fn absent_ranks(&self, window: Duration) -> Vec<usize> {
        let nonce = Instant::now().elapsed().as_nanos() as u64 ^ ((self.rank as u64) << 48) ^ std::process::id() as u64;
        let ping = nonce.to_le_bytes();
        let mut here = vec![false; self.size];
        here[self.rank] = true;
        for peer in (0..self.size).filter(|&p| p != self.rank) {
            let mut request: ffi::MPI_Request = std::mem::zeroed();
            if ffi::MPI_Isend(ping.as_ptr() as *const c_void, 8, ffi::RSMPI_UINT8_T, peer as c_int, TAG_ROLL, self.comm, &mut request) == 0 {
                ffi::MPI_Request_free(&mut request);
            }
        }
        let until = Instant::now() + window;
        while Instant::now() < until && here.iter().any(|h| !h) {
            self.answer_roll_calls();
            let (mut flag, mut status): (c_int, ffi::MPI_Status) = (0, std::mem::zeroed());
            if ffi::MPI_Iprobe(ffi::RSMPI_ANY_SOURCE, TAG_HERE, self.comm, &mut flag, &mut status) == 0 && flag != 0 {
                let mut answer = [0u8; 8];
                ffi::MPI_Recv(answer.as_mut_ptr() as *mut c_void, 8, ffi::RSMPI_UINT8_T, status.MPI_SOURCE, TAG_HERE, self.comm, ffi::RSMPI_STATUS_IGNORE);
                if answer == ping {
                    here[status.MPI_SOURCE as usize] = true;
                }
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        (0..self.size).filter(|&p| !here[p]).collect()
    }

    /// Waits for every request, answering roll calls meanwhile; on a deadline or an error,
    /// cancels what is left, finds the missing ranks and aborts the group.
    unsafe fn wait_all(&self, pending: &mut [Pending], expected: &[usize], wait: &Wait, doing: &str) -> Result<()> {
        let mut spins = 0u32;
        let mut left = pending.len();
        while left > 0 {
            for p in pending.iter_mut().filter(|p| p.request != ffi::RSMPI_REQUEST_NULL) {
                let (mut flag, mut status): (c_int, ffi::MPI_Status) = (0, std::mem::zeroed());
                let rc = ffi::MPI_Test(&mut p.request, &mut flag, &mut status);
                if rc != 0 {
                    let truncated = status.MPI_ERROR == ffi::MPI_ERR_TRUNCATE as c_int || {
                        let mut class = 0;
                        ffi::MPI_Error_class(rc, &mut class);
                        class == ffi::MPI_ERR_TRUNCATE as c_int
                    };
                    let e = if truncated {
                        CrossDeviceError::new(ErrorCode::RankMismatch, format!("{}: rank {} sent more bytes than expected while {doing}: the ranks run different ops", wait.what, list(&p.peer.into_iter().collect::<Vec<_>>())))
                    } else {
                        let peers: Vec<usize> = p.peer.into_iter().collect();
                        CrossDeviceError::new(ErrorCode::PeerLost, format!("{}: {doing} failed ({}); rank {} is gone", wait.what, mpi_error(rc), list(&peers)))
                    };
                    return Err(self.give_up(pending, e));
                }
                if flag != 0 {
                    left -= 1;
                    if let Some(i) = p.receive {
                        let mut count: c_int = 0;
                        ffi::MPI_Get_count(&status, ffi::RSMPI_UINT8_T, &mut count);
                        if count as usize != expected[i] {
                            let e = CrossDeviceError::new(ErrorCode::RankMismatch, format!("{}: rank {} sent {count} bytes where {} were expected while {doing}: the ranks run different ops", wait.what, list(&p.peer.into_iter().collect::<Vec<_>>()), expected[i]));
                            return Err(self.give_up(pending, e));
                        }
                    }
                }
            }
            if left == 0 {
                break;
            }
            let window = roll_call_window(wait);
            if Instant::now() + window >= wait.deadline {
                let missing = self.absent_ranks(window);
                let e = wait.timed_out(&format!("while {doing}"), &missing);
                return Err(self.give_up(pending, e));
            }
            spins += 1;
            if spins % 64 == 0 {
                self.answer_roll_calls();
            }
            if spins > 4096 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }

    unsafe fn give_up(&self, pending: &mut [Pending], e: CrossDeviceError) -> CrossDeviceError {
        for p in pending.iter_mut().filter(|p| p.request != ffi::RSMPI_REQUEST_NULL) {
            if p.receive.is_some() {
                ffi::MPI_Cancel(&mut p.request);
            }
            ffi::MPI_Request_free(&mut p.request);
        }
        self.abort(e)
    }
}

fn datatype(dtype: DType) -> Option<ffi::MPI_Datatype> {
    // SAFETY: reading rsmpi's constant handles.
    unsafe {
        match dtype {
            DType::Float32 => Some(ffi::RSMPI_FLOAT),
            DType::Float64 => Some(ffi::RSMPI_DOUBLE),
            DType::Int32 => Some(ffi::RSMPI_INT32_T),
            DType::Int64 => Some(ffi::RSMPI_INT64_T),
            DType::Float16 | DType::BFloat16 => None,
        }
    }
}

impl ProcessGroup for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn exchange(&self, sends: &[Outgoing], recvs: &mut [Incoming], wait: &Wait) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.aborted()?;
        let mut pending = Vec::new();
        let mut expected = Vec::new();
        unsafe {
            for s in sends {
                for piece in s.data.chunks(PIECE) {
                    let mut request = std::mem::zeroed();
                    check(ffi::MPI_Isend(piece.as_ptr() as *const c_void, piece.len() as c_int, ffi::RSMPI_UINT8_T, s.peer as c_int, TAG_DATA, self.comm, &mut request), "MPI_Isend")?;
                    pending.push(Pending { request, peer: Some(s.peer), receive: None });
                }
            }
            for r in recvs.iter_mut() {
                for piece in r.data.chunks_mut(PIECE) {
                    let mut request = std::mem::zeroed();
                    check(ffi::MPI_Irecv(piece.as_mut_ptr() as *mut c_void, piece.len() as c_int, ffi::RSMPI_UINT8_T, r.peer as c_int, TAG_DATA, self.comm, &mut request), "MPI_Irecv")?;
                    pending.push(Pending { request, peer: Some(r.peer), receive: Some(expected.len()) });
                    expected.push(piece.len());
                }
            }
            self.wait_all(&mut pending, &expected, wait, "exchanging messages")
        }
    }

    fn roll_call(&self, wait: &Wait) -> Vec<usize> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: MPI calls under the group's lock.
        unsafe { self.absent_ranks(roll_call_window(wait)) }
    }

    fn has_all_reduce(&self, dtype: DType, op: ReduceOp) -> bool {
        let float = matches!(dtype, DType::Float32 | DType::Float64);
        datatype(dtype).is_some() && match op {
            ReduceOp::Sum | ReduceOp::Product => true,
            // MPI's MAX and MIN do not let NaN win.
            ReduceOp::Max | ReduceOp::Min => !float,
            ReduceOp::Mean => false,
        }
    }

    fn all_reduce(&self, dtype: DType, op: ReduceOp, input: &[u8], output: &mut [u8], wait: &Wait) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.aborted()?;
        let (Some(ty), true) = (datatype(dtype), self.has_all_reduce(dtype, op)) else {
            return Err(CrossDeviceError::new(ErrorCode::Internal, format!("MPI has no all-reduce of {} {}", op.name(), dtype.name())));
        };
        let mpi_op = unsafe {
            match op {
                ReduceOp::Sum => ffi::RSMPI_SUM,
                ReduceOp::Product => ffi::RSMPI_PROD,
                ReduceOp::Max => ffi::RSMPI_MAX,
                ReduceOp::Min => ffi::RSMPI_MIN,
                ReduceOp::Mean => unreachable!("checked by has_all_reduce"),
            }
        };
        let piece = PIECE - PIECE % dtype.size();
        let mut pending = Vec::new();
        unsafe {
            for (i, o) in input.chunks(piece).zip(output.chunks_mut(piece)) {
                let mut request = std::mem::zeroed();
                let count = (i.len() / dtype.size()) as c_int;
                check(ffi::MPI_Iallreduce(i.as_ptr() as *const c_void, o.as_mut_ptr() as *mut c_void, count, ty, mpi_op, self.comm, &mut request), "MPI_Iallreduce")?;
                pending.push(Pending { request, peer: None, receive: None });
            }
            self.wait_all(&mut pending, &[], wait, "in MPI_Allreduce")
        }
    }
}
