//! Node.js bindings of crossdev-core. Two functions, both speaking [`crossdev_core::wire`]:
//! `execute` runs on the calling thread, `executeAsync` on libuv's pool and returns a Promise.
//! Input TypedArrays are read in place (no copy); results are handed to JavaScript as external
//! ArrayBuffers over the Rust allocations (no copy), small ones as copies (see [`OutBuffer`]).
//! Panics never cross into Node: the core catches them and answers with an `ERR_INTERNAL` error.
//! GPU tensors live in crossdev-cuda's [`GpuStore`], installed as the core's resident store
//! before the first request (it touches CUDA only when a GPU tensor is made, after probing for
//! the libraries).

use crossdev_core::pool::PoolAllocator;
use crossdev_core::tensor::Buffer;
use crossdev_core::wire;
use crossdev_cuda::resident::GpuStore;
use napi::bindgen_prelude::*;
use napi::check_status;
use std::ffi::c_void;
use std::sync::{Arc, Once};
use napi_derive::napi;

/// Large result buffers are recycled instead of page-faulted in anew on every call. (Small
/// allocations stay with the system allocator: mimalloc under the pool was a tenth faster per
/// call but crashed the process when the addon ran in one worker thread after another; see
/// test/workers.test.ts.)
#[global_allocator]
static ALLOCATOR: PoolAllocator = PoolAllocator::new();

/// A result buffer on its way to JavaScript: an external `ArrayBuffer` over the Rust allocation
/// (no copy), whose size is reported to V8 so that its garbage collector knows what it holds and
/// frees dropped results promptly (which returns their memory to the pool for the next call).
/// Buffers of at most [`COPY_BYTES`] are copied into a plain `ArrayBuffer` instead.
pub struct OutBuffer(Buffer<'static>);

/// Results up to this size are copied: an external `ArrayBuffer` (a finalizer, a global handle
/// and the external-memory accounting, each way) costs more than copying this many bytes.
const COPY_BYTES: usize = 4096;

impl TypeName for OutBuffer {
    fn type_name() -> &'static str {
        "ArrayBuffer"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

unsafe extern "C" fn release(env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the Box leaked in `to_napi_value`, released exactly once, here.
    let buffer = unsafe { Box::from_raw(hint as *mut Buffer<'static>) };
    let len = buffer.as_bytes().len() as i64;
    drop(buffer);
    let mut adjusted = 0;
    unsafe { sys::napi_adjust_external_memory(env, -len, &mut adjusted) };
}

/// A new `ArrayBuffer` holding a copy of `buffer`'s bytes.
unsafe fn copied(env: sys::napi_env, buffer: &Buffer) -> Result<sys::napi_value> {
    let bytes = buffer.as_bytes();
    let (mut out, mut data) = (std::ptr::null_mut(), std::ptr::null_mut());
    check_status!(unsafe { sys::napi_create_arraybuffer(env, bytes.len(), &mut data, &mut out) }, "cannot create an ArrayBuffer")?;
    if !bytes.is_empty() {
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data as *mut u8, bytes.len()) };
    }
    Ok(out)
}

impl ToNapiValue for OutBuffer {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let (ptr, len) = (val.0.as_bytes().as_ptr(), val.0.as_bytes().len());
        if len <= COPY_BYTES {
            return unsafe { copied(env, &val.0) };
        }
        let mut out = std::ptr::null_mut();
        let hint = Box::into_raw(Box::new(val.0));
        let status = unsafe {
            sys::napi_create_external_arraybuffer(env, ptr as *mut c_void, len, Some(release), hint as *mut c_void, &mut out)
        };
        if status == sys::Status::napi_ok {
            let mut adjusted = 0;
            unsafe { sys::napi_adjust_external_memory(env, len as i64, &mut adjusted) };
            return Ok(out);
        }
        // Hosts that forbid external buffers (a V8 sandbox) get a copy.
        let buffer = unsafe { Box::from_raw(hint) };
        unsafe { copied(env, &buffer) }
    }
}

/// The answer to a request: JSON metadata and the result buffers it indexes.
#[napi(object, object_from_js = false)]
pub struct Response {
    /// JSON metadata (see `crossdev_core::wire::Response::meta`).
    pub meta: String,
    /// Result buffers.
    pub buffers: Vec<OutBuffer>,
}

fn respond(r: wire::Response) -> Response {
    Response { meta: r.meta, buffers: r.buffers.into_iter().map(OutBuffer).collect() }
}

fn run(request: &str, inputs: &[&[u8]]) -> wire::Response {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| crossdev_core::resident::install(Arc::new(GpuStore::new())));
    wire::execute(request, inputs)
}

/// Runs a request on the calling thread. The inputs are read where they are, for the call only
/// (JavaScript does not run meanwhile), so they need no references of their own.
#[napi]
pub fn execute(request: String, inputs: Vec<&[u8]>) -> Response {
    respond(run(&request, &inputs))
}

/// A request run on libuv's thread pool.
pub struct ExecuteTask {
    request: String,
    inputs: Vec<Uint8Array>,
}

impl Task for ExecuteTask {
    type Output = wire::Response;
    type JsValue = Response;

    fn compute(&mut self) -> Result<wire::Response> {
        let slices: Vec<&[u8]> = self.inputs.iter().map(|a| a.as_ref()).collect();
        Ok(run(&self.request, &slices))
    }

    fn resolve(&mut self, _env: Env, output: wire::Response) -> Result<Response> {
        Ok(respond(output))
    }
}

/// Runs a request off the JavaScript thread; the Promise resolves with its response.
#[napi(ts_return_type = "Promise<Response>")]
pub fn execute_async(request: String, inputs: Vec<Uint8Array>) -> AsyncTask<ExecuteTask> {
    AsyncTask::new(ExecuteTask { request, inputs })
}

/// This process's place in an MPI job, from `mpiInit`.
#[cfg(feature = "mpi")]
#[napi(object)]
pub struct MpiWorld {
    /// This process's rank.
    pub rank: u32,
    /// Number of processes.
    pub size: u32,
    /// The worker this rank is: `/job:worker/replica:0/task:<rank>`.
    pub worker: String,
}

/// What `mpiInit` joins with.
#[cfg(feature = "mpi")]
#[napi(object)]
pub struct MpiOptions {
    /// Run the flat all-reduces on the GPUs with NCCL (one GPU per rank).
    pub nccl: Option<bool>,
    /// This rank's GPU for NCCL (default: its local rank modulo the machine's GPUs).
    pub gpu: Option<u32>,
    /// How long joining NCCL waits for rank 0's id, in seconds (default 600).
    pub timeout_seconds: Option<f64>,
}

/// A `CrossDeviceError` as the JSON reason of a napi error (the facade turns it back).
#[cfg(feature = "mpi")]
fn reason(e: crossdev_core::CrossDeviceError) -> napi::Error {
    napi::Error::from_reason(format!(r#"{{"code":"{}","message":{:?}}}"#, e.code.as_str(), e.message))
}

/// Initialises MPI and installs its process group (NCCL's, over MPI, when asked): from now on
/// the cross-worker ops run across the job's processes. Errors come back as a JSON reason
/// `{ code, message }`, so the facade raises one `CrossDeviceError`.
#[cfg(feature = "mpi")]
#[napi]
pub fn mpi_init(options: Option<MpiOptions>) -> std::result::Result<MpiWorld, napi::Error> {
    use crossdev_core::group::ProcessGroup;
    let options = options.unwrap_or(MpiOptions { nccl: None, gpu: None, timeout_seconds: None });
    let joined = std::panic::catch_unwind(|| -> crossdev_core::Result<(std::sync::Arc<dyn ProcessGroup>, String)> {
        let mpi = crossdev_mpi::init()?;
        let worker = mpi.worker();
        if !options.nccl.unwrap_or(false) {
            return Ok((mpi, worker));
        }
        let timeout = std::time::Duration::from_secs_f64(options.timeout_seconds.filter(|s| s.is_finite() && *s > 0.0).unwrap_or(600.0));
        let group = crossdev_cuda::nccl_group::NcclGroup::join(mpi, options.gpu.map(|g| g as usize), timeout)?;
        Ok((std::sync::Arc::new(group), worker))
    })
    .map_err(|_| reason(crossdev_core::CrossDeviceError::new(crossdev_core::ErrorCode::Internal, "joining the MPI job panicked")))?
    .map_err(reason)?;
    let (group, worker) = joined;
    crossdev_core::group::install(group.clone());
    Ok(MpiWorld { rank: group.rank() as u32, size: group.size() as u32, worker })
}

/// Ends MPI for this process (once, at exit); the cross-worker ops run in one process again.
#[cfg(feature = "mpi")]
#[napi]
pub fn mpi_finalize() {
    crossdev_core::group::uninstall();
    crossdev_mpi::finalize();
}
