//! Host tensors: a shape and a typed buffer that either borrows the caller's memory or owns its own.
//!
//! Inputs borrow (a JavaScript TypedArray is read in place, never copied); results own.

use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use half::{bf16, f16};
use std::borrow::Cow;

/// Typed elements of a tensor, borrowed or owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer<'a> {
    /// `float32` elements.
    F32(Cow<'a, [f32]>),
    /// `float64` elements.
    F64(Cow<'a, [f64]>),
    /// `float16` elements.
    F16(Cow<'a, [f16]>),
    /// `bfloat16` elements.
    BF16(Cow<'a, [bf16]>),
    /// `int32` elements.
    I32(Cow<'a, [i32]>),
    /// `int64` elements.
    I64(Cow<'a, [i64]>),
}

/// Runs `$body` with `$v` bound to the typed slice inside a [`Buffer`] (`&Cow<[T]>`), whatever `T`.
#[macro_export]
macro_rules! with_buffer {
    ($buf:expr, $v:ident => $body:expr) => {
        match $buf {
            $crate::tensor::Buffer::F32($v) => $body,
            $crate::tensor::Buffer::F64($v) => $body,
            $crate::tensor::Buffer::F16($v) => $body,
            $crate::tensor::Buffer::BF16($v) => $body,
            $crate::tensor::Buffer::I32($v) => $body,
            $crate::tensor::Buffer::I64($v) => $body,
        }
    };
}

/// Runs `$body` with `$v` bound to the typed slice inside a [`Buffer`] and wraps the `Vec` it
/// returns in a new owned buffer of the same dtype.
#[macro_export]
macro_rules! map_buffer {
    ($buf:expr, $v:ident => $body:expr) => {{
        use std::borrow::Cow;
        match $buf {
            $crate::tensor::Buffer::F32($v) => $crate::tensor::Buffer::F32(Cow::Owned($body)),
            $crate::tensor::Buffer::F64($v) => $crate::tensor::Buffer::F64(Cow::Owned($body)),
            $crate::tensor::Buffer::F16($v) => $crate::tensor::Buffer::F16(Cow::Owned($body)),
            $crate::tensor::Buffer::BF16($v) => $crate::tensor::Buffer::BF16(Cow::Owned($body)),
            $crate::tensor::Buffer::I32($v) => $crate::tensor::Buffer::I32(Cow::Owned($body)),
            $crate::tensor::Buffer::I64($v) => $crate::tensor::Buffer::I64(Cow::Owned($body)),
        }
    }};
}

/// An element type that a [`Buffer`] can hold.
pub trait Scalar: bytemuck::Pod + Send + Sync {
    /// The elements of `b` if it holds this type.
    fn slice<'b>(b: &'b Buffer) -> Option<&'b [Self]>;
    /// The elements of `b`, writable, if it holds this type (a borrowed buffer is copied first).
    fn slice_mut<'b>(b: &'b mut Buffer<'_>) -> Option<&'b mut [Self]>;
    /// An owned buffer holding `v`.
    fn owned(v: Vec<Self>) -> Buffer<'static>;
}

/// Runs `$body` with the type alias `$t` set to the element type of the [`DType`] `$dtype`.
#[macro_export]
macro_rules! for_dtype {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            $crate::dtype::DType::Float32 => { type $t = f32; $body }
            $crate::dtype::DType::Float64 => { type $t = f64; $body }
            $crate::dtype::DType::Float16 => { type $t = half::f16; $body }
            $crate::dtype::DType::BFloat16 => { type $t = half::bf16; $body }
            $crate::dtype::DType::Int32 => { type $t = i32; $body }
            $crate::dtype::DType::Int64 => { type $t = i64; $body }
        }
    };
}

macro_rules! scalar {
    ($t:ty, $variant:ident) => {
        impl Scalar for $t {
            fn slice<'b>(b: &'b Buffer) -> Option<&'b [Self]> {
                match b {
                    Buffer::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut<'b>(b: &'b mut Buffer<'_>) -> Option<&'b mut [Self]> {
                match b {
                    Buffer::$variant(v) => Some(v.to_mut()),
                    _ => None,
                }
            }
            fn owned(v: Vec<Self>) -> Buffer<'static> {
                Buffer::$variant(Cow::Owned(v))
            }
        }
    };
}
scalar!(f32, F32);
scalar!(f64, F64);
scalar!(f16, F16);
scalar!(bf16, BF16);
scalar!(i32, I32);
scalar!(i64, I64);

/// Views `bytes` as `T` without copying when aligned; copies otherwise.
fn cast<T: bytemuck::Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

impl<'a> Buffer<'a> {
    /// Typed view of raw little-endian bytes (a TypedArray's memory).
    pub fn from_bytes(dtype: DType, bytes: &'a [u8]) -> Buffer<'a> {
        match dtype {
            DType::Float32 => Buffer::F32(cast(bytes)),
            DType::Float64 => Buffer::F64(cast(bytes)),
            DType::Float16 => Buffer::F16(cast(bytes)),
            DType::BFloat16 => Buffer::BF16(cast(bytes)),
            DType::Int32 => Buffer::I32(cast(bytes)),
            DType::Int64 => Buffer::I64(cast(bytes)),
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Buffer::F32(_) => DType::Float32,
            Buffer::F64(_) => DType::Float64,
            Buffer::F16(_) => DType::Float16,
            Buffer::BF16(_) => DType::BFloat16,
            Buffer::I32(_) => DType::Int32,
            Buffer::I64(_) => DType::Int64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_buffer!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as bytes (what a binding hands back to JavaScript).
    pub fn as_bytes(&self) -> &[u8] {
        with_buffer!(self, v => bytemuck::cast_slice(v.as_ref()))
    }

    /// An owned buffer of `len` zeros.
    pub fn zeros(dtype: DType, len: usize) -> Buffer<'static> {
        match dtype {
            DType::Float32 => Buffer::F32(Cow::Owned(vec![0.0; len])),
            DType::Float64 => Buffer::F64(Cow::Owned(vec![0.0; len])),
            DType::Float16 => Buffer::F16(Cow::Owned(vec![f16::ZERO; len])),
            DType::BFloat16 => Buffer::BF16(Cow::Owned(vec![bf16::ZERO; len])),
            DType::Int32 => Buffer::I32(Cow::Owned(vec![0; len])),
            DType::Int64 => Buffer::I64(Cow::Owned(vec![0; len])),
        }
    }

    /// A buffer that owns its elements, copying only if borrowed.
    pub fn into_owned(self) -> Buffer<'static> {
        match self {
            Buffer::F32(v) => Buffer::F32(Cow::Owned(v.into_owned())),
            Buffer::F64(v) => Buffer::F64(Cow::Owned(v.into_owned())),
            Buffer::F16(v) => Buffer::F16(Cow::Owned(v.into_owned())),
            Buffer::BF16(v) => Buffer::BF16(Cow::Owned(v.into_owned())),
            Buffer::I32(v) => Buffer::I32(Cow::Owned(v.into_owned())),
            Buffer::I64(v) => Buffer::I64(Cow::Owned(v.into_owned())),
        }
    }

    /// A borrowed view of the same elements.
    pub fn view(&self) -> Buffer<'_> {
        match self {
            Buffer::F32(v) => Buffer::F32(Cow::Borrowed(v)),
            Buffer::F64(v) => Buffer::F64(Cow::Borrowed(v)),
            Buffer::F16(v) => Buffer::F16(Cow::Borrowed(v)),
            Buffer::BF16(v) => Buffer::BF16(Cow::Borrowed(v)),
            Buffer::I32(v) => Buffer::I32(Cow::Borrowed(v)),
            Buffer::I64(v) => Buffer::I64(Cow::Borrowed(v)),
        }
    }
}

/// A dense host tensor. Scalars have shape `[]`; zero-size tensors are allowed.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<'a> {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in row-major order.
    pub data: Buffer<'a>,
}

/// Number of elements of a shape.
pub fn num_elements(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Number of elements of a shape, or `None` if it does not fit in `usize` (a shape with a zero
/// dimension has zero elements, whatever its other dimensions).
pub fn checked_num_elements(shape: &[usize]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

impl<'a> Tensor<'a> {
    /// A tensor over `data`, checking that its length matches `shape`.
    pub fn new(shape: Vec<usize>, data: Buffer<'a>) -> Result<Tensor<'a>> {
        let Some(want) = checked_num_elements(&shape) else {
            return fail(
                ErrorCode::InvalidTensor,
                format!("A tensor of shape {shape:?} has more elements than can be addressed"),
            );
        };
        if data.len() != want {
            return fail(
                ErrorCode::InvalidTensor,
                format!(
                    "A tensor of shape {shape:?} needs {want} elements, but its {} data has {}",
                    data.dtype().name(),
                    data.len()
                ),
            );
        }
        Ok(Tensor { shape, data })
    }

    /// A tensor over the raw bytes of a TypedArray (no copy when aligned).
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: &'a [u8]) -> Result<Tensor<'a>> {
        if bytes.len() % dtype.size() != 0 {
            return fail(
                ErrorCode::InvalidTensor,
                format!("{} bytes are not a whole number of {} elements", bytes.len(), dtype.name()),
            );
        }
        Tensor::new(shape, Buffer::from_bytes(dtype, bytes))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Number of elements.
    pub fn num_elements(&self) -> usize {
        self.data.len()
    }

    /// A tensor that owns its elements.
    pub fn into_owned(self) -> Tensor<'static> {
        Tensor { shape: self.shape, data: self.data.into_owned() }
    }

    /// A borrowed view of this tensor.
    pub fn view(&self) -> Tensor<'_> {
        Tensor { shape: self.shape.clone(), data: self.data.view() }
    }
}
