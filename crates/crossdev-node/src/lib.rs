//! Node.js bindings of crossdev-core. Two functions, both speaking [`crossdev_core::wire`]:
//! `execute` runs on the calling thread, `executeAsync` on libuv's pool and returns a Promise.
//! Input TypedArrays are read in place (no copy); results are handed to JavaScript as external
//! ArrayBuffers over the Rust allocations (no copy), small ones as copies (see [`OutBuffer`]),
//! and large ones as copies too while dropped results await their finalizers (see [`HELD`]).
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
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use napi_derive::napi;

/// Large result buffers are recycled instead of page-faulted in anew on every call. (Small
/// allocations stay with the system allocator: mimalloc under the pool was a tenth faster per
/// call but crashed the process when the addon ran in one worker thread after another; see
/// test/workers.test.ts.)
#[global_allocator]
static ALLOCATOR: PoolAllocator = PoolAllocator::new();

/// Result buffers on their way to JavaScript, as the `ArrayBuffer`s that hold them (the
/// response's `buffers`; its metadata's `spans` says where each result lies when they are not
/// one per buffer):
/// - a result larger than [`COPY_BYTES`] becomes an external `ArrayBuffer` over its Rust
///   allocation (no copy). V8 counts the bytes of every `ArrayBuffer`'s memory, its own or not,
///   towards its garbage collections, so dropped results are freed promptly (which returns their
///   memory to the pool); reporting them again with `napi_adjust_external_memory` counted them
///   twice, and one report per result ran a full collection every few results of a many-tensor
///   call;
/// - the results of at most [`COPY_BYTES`] are copied together into one plain `ArrayBuffer`:
///   each `ArrayBuffer` costs V8 an allocation on the calling thread and a free on another, more
///   than copying that many bytes, and a small op's results are often all small.
pub enum OutBuffer {
    /// One large result, handed over as it is.
    Own(Buffer<'static>),
    /// Small results, copied into one `ArrayBuffer` of the given length, each at its
    /// ([`ALIGN`]ed) byte offset.
    Packed(usize, Vec<(usize, Buffer<'static>)>),
}

/// Results up to this size are copied: an external `ArrayBuffer` (a finalizer, a global handle
/// and V8's accounting of its memory, each way) costs more than copying this many bytes.
const COPY_BYTES: usize = 4096;

/// Where packed results start: a multiple of every element size, so that each can be viewed as
/// its TypedArray.
const ALIGN: usize = 8;

/// Bytes of the results handed out as external `ArrayBuffer`s whose finalizers have not run.
///
/// Node runs those finalizers only once the event loop turns, so a loop of synchronous calls
/// that never yields would keep every result it dropped. Past [`held_limit`] bytes, results are
/// copied into `ArrayBuffer`s of V8's own instead, which its garbage collector frees without
/// waiting for the event loop: memory stays bounded, at the price of a copy.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// `CROSSDEV_NATIVE_HELD_BYTES` (default 2 GiB): the bound on [`HELD`], read at each large result.
fn held_limit() -> usize {
    std::env::var("CROSSDEV_NATIVE_HELD_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(2 << 30)
}

unsafe extern "C" fn release(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the Box leaked in `into_array_buffer`, released exactly once, here.
    let buffer = unsafe { Box::from_raw(hint as *mut Buffer<'static>) };
    let len = buffer.as_bytes().len();
    drop(buffer);
    HELD.fetch_sub(len, Ordering::Relaxed);
}

/// A new `ArrayBuffer` of `len` bytes holding each of `parts` at its byte offset.
unsafe fn copied<'b>(env: sys::napi_env, len: usize, parts: impl Iterator<Item = (usize, &'b [u8])>) -> Result<sys::napi_value> {
    let (mut out, mut data) = (std::ptr::null_mut(), std::ptr::null_mut());
    check_status!(unsafe { sys::napi_create_arraybuffer(env, len, &mut data, &mut out) }, "cannot create an ArrayBuffer")?;
    for (at, p) in parts {
        // SAFETY: the caller laid the parts out within `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), (data as *mut u8).add(at), p.len()) };
    }
    Ok(out)
}

impl OutBuffer {
    /// The `ArrayBuffer` of `self`.
    unsafe fn into_array_buffer(self, env: sys::napi_env) -> Result<sys::napi_value> {
        let own = match self {
            OutBuffer::Packed(len, parts) => return unsafe { copied(env, len, parts.iter().map(|(at, b)| (*at, b.as_bytes()))) },
            OutBuffer::Own(own) => own,
        };
        let (ptr, len) = (own.as_bytes().as_ptr(), own.as_bytes().len());
        if HELD.load(Ordering::Relaxed) + len > held_limit() {
            return unsafe { copied(env, len, std::iter::once((0, own.as_bytes()))) };
        }
        let mut out = std::ptr::null_mut();
        let hint = Box::into_raw(Box::new(own));
        let status = unsafe {
            sys::napi_create_external_arraybuffer(env, ptr as *mut c_void, len, Some(release), hint as *mut c_void, &mut out)
        };
        if status == sys::Status::napi_ok {
            HELD.fetch_add(len, Ordering::Relaxed);
            return Ok(out);
        }
        // Hosts that forbid external buffers (a V8 sandbox) get a copy.
        let buffer = unsafe { Box::from_raw(hint) };
        unsafe { copied(env, len, std::iter::once((0, buffer.as_bytes()))) }
    }
}

/// The answer to a request, handed to JavaScript as one array `[meta, ...buffers]` (an array
/// costs less to make than an object with two members): JSON metadata (see
/// `crossdev_core::wire::Response::meta`), then the `ArrayBuffer`s holding the result buffers it
/// indexes, large results each in their own and then the small ones together. When results were
/// packed together, the metadata's `spans` member lists `[arrayBuffer, byteOffset, byteLength]` of
/// each result buffer, flattened; without it, result buffer `i` is the `i`th `ArrayBuffer`.
pub struct Response {
    meta: String,
    buffers: Vec<OutBuffer>,
}

impl TypeName for Response {
    fn type_name() -> &'static str {
        "Response"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for Response {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let mut out = std::ptr::null_mut();
        check_status!(unsafe { sys::napi_create_array_with_length(env, val.buffers.len() + 1, &mut out) }, "cannot create an array")?;
        let mut meta = std::ptr::null_mut();
        // ASCII (the usual metadata) is Latin-1 as it is: V8 takes it without decoding UTF-8.
        let status = if val.meta.is_ascii() {
            unsafe { sys::napi_create_string_latin1(env, val.meta.as_ptr().cast(), val.meta.len() as isize, &mut meta) }
        } else {
            unsafe { sys::napi_create_string_utf8(env, val.meta.as_ptr().cast(), val.meta.len() as isize, &mut meta) }
        };
        check_status!(status, "cannot create a string")?;
        check_status!(unsafe { sys::napi_set_element(env, out, 0, meta) }, "cannot fill an array")?;
        for (i, b) in val.buffers.into_iter().enumerate() {
            let b = unsafe { b.into_array_buffer(env) }?;
            check_status!(unsafe { sys::napi_set_element(env, out, i as u32 + 1, b) }, "cannot fill an array")?;
        }
        Ok(out)
    }
}

/// The bytes of a TypedArray of any element type, read where they are (for a synchronous call).
pub struct Bytes<'a>(&'a [u8]);

impl TypeName for Bytes<'_> {
    fn type_name() -> &'static str {
        "TypedArray"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for Bytes<'_> {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> Result<Self> {
        let (mut kind, mut length, mut data, mut buffer, mut offset) = (0, 0, std::ptr::null_mut(), std::ptr::null_mut(), 0);
        check_status!(
            unsafe { sys::napi_get_typedarray_info(env, value, &mut kind, &mut length, &mut data, &mut buffer, &mut offset) },
            "an input is not a TypedArray"
        )?;
        // Element sizes of napi_typedarray_type: (u)int8 and clamped, (u)int16, (u)int32 and
        // float32, float64 and (u)bigint64.
        let size = match kind {
            0..=2 => 1,
            3 | 4 => 2,
            5..=7 => 4,
            8..=10 => 8,
            _ => return Err(napi::Error::from_reason(format!("unsupported TypedArray type {kind}"))),
        };
        // SAFETY: V8 keeps the TypedArray's memory, `length` elements at `data`, for the call.
        Ok(Bytes(if length == 0 { &[] } else { unsafe { std::slice::from_raw_parts(data as *const u8, length * size) } }))
    }
}

fn respond(r: wire::Response) -> Response {
    let wire::Response { mut meta, buffers } = r;
    let small = buffers.iter().filter(|b| b.as_bytes().len() <= COPY_BYTES).count();
    // Every response with buffers is a JSON object, which takes a `spans` member.
    if small == 0 || !meta.ends_with('}') {
        return Response { meta, buffers: buffers.into_iter().map(OutBuffer::Own).collect() };
    }
    // Large results keep their order and come first; the small ones share the last buffer.
    let shared = buffers.len() - small;
    let (mut spans, mut end) = (String::with_capacity(buffers.len() * 12), 0usize);
    let mut out = Vec::with_capacity(shared + 1);
    let mut packed = Vec::with_capacity(small);
    for b in buffers {
        let len = b.as_bytes().len();
        let (buffer, at) = if len <= COPY_BYTES {
            let at = end.next_multiple_of(ALIGN);
            end = at + len;
            packed.push((at, b));
            (shared, at)
        } else {
            out.push(OutBuffer::Own(b));
            (out.len() - 1, 0)
        };
        let sep = if spans.is_empty() { "" } else { "," };
        write!(spans, "{sep}{buffer},{at},{len}").expect("writing to a String");
    }
    out.push(OutBuffer::Packed(end, packed));
    meta.pop();
    write!(meta, ",\"spans\":[{spans}]}}").expect("writing to a String");
    Response { meta, buffers: out }
}

fn run(request: &str, inputs: &[&[u8]]) -> wire::Response {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| crossdev_core::resident::install(Arc::new(GpuStore::new())));
    wire::execute(request, inputs)
}

/// Runs a request on the calling thread. The inputs are read where they are, for the call only
/// (JavaScript does not run meanwhile), so they need no references of their own.
#[napi(ts_return_type = "[string, ...ArrayBuffer[]]")]
pub fn execute(request: String, #[napi(ts_arg_type = "ArrayBufferView[]")] inputs: Vec<Bytes>) -> Response {
    let inputs: Vec<&[u8]> = inputs.iter().map(|b| b.0).collect();
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
#[napi(ts_return_type = "Promise<[string, ...ArrayBuffer[]]>")]
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
