//! Node.js bindings of crossdev-core. Two functions, both speaking [`crossdev_core::wire`]:
//! `execute` runs on the calling thread, `executeAsync` on libuv's pool and returns a Promise.
//! Input TypedArrays are read in place (no copy); results are handed to JavaScript as external
//! ArrayBuffers over the Rust allocations (no copy). Panics never cross into Node: the core
//! catches them and answers with an `ERR_INTERNAL` error.

use crossdev_core::tensor::Buffer;
use crossdev_core::wire;
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// A result buffer on its way to JavaScript, as the TypedArray of its dtype.
pub struct OutBuffer(Buffer<'static>);

impl TypeName for OutBuffer {
    fn type_name() -> &'static str {
        "TypedArray"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for OutBuffer {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        match val.0 {
            Buffer::F32(v) => Float32Array::to_napi_value(env, Float32Array::new(v.into_owned())),
            Buffer::F64(v) => Float64Array::to_napi_value(env, Float64Array::new(v.into_owned())),
            Buffer::F16(v) => Uint16Array::to_napi_value(env, Uint16Array::new(half_bits(v.into_owned()))),
            Buffer::BF16(v) => Uint16Array::to_napi_value(env, Uint16Array::new(half_bits(v.into_owned()))),
            Buffer::I32(v) => Int32Array::to_napi_value(env, Int32Array::new(v.into_owned())),
            Buffer::I64(v) => BigInt64Array::to_napi_value(env, BigInt64Array::new(v.into_owned())),
        }
    }
}

/// Reinterprets a vector of 16-bit floats as their bits, reusing the allocation.
fn half_bits<T: crossdev_core::tensor::Scalar>(v: Vec<T>) -> Vec<u16> {
    assert_eq!(std::mem::size_of::<T>(), 2);
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: T is a 2-byte, 2-aligned plain-old-data type (f16/bf16), so the allocation's layout
    // is identical to a Vec<u16> of the same length and capacity.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut u16, v.len(), v.capacity()) }
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

fn run(request: &str, inputs: &[Uint8Array]) -> wire::Response {
    let slices: Vec<&[u8]> = inputs.iter().map(|a| a.as_ref()).collect();
    wire::execute(request, &slices)
}

/// Runs a request on the calling thread.
#[napi]
pub fn execute(request: String, inputs: Vec<Uint8Array>) -> Response {
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
        Ok(run(&self.request, &self.inputs))
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
